import { Metadata } from '@grpc/grpc-js';
import type { IdempotencyCodec } from '../core/codec.js';

/**
 * A gRPC response as the handler sent it, in the form the store keeps: response headers (`null` for a
 * trailers-only response), each message as the protobuf bytes the method's `responseSerialize` produced, and
 * the final status with its trailers.
 *
 * @example
 * ```ts
 * const response: IdempotencyGrpcRecordedResponse = {
 *   headers: null, // trailers-only
 *   messages: [],
 *   status: { code: status.INVALID_ARGUMENT, details: 'amount must be positive', trailers: new Metadata() },
 * };
 * ```
 */
export interface IdempotencyGrpcRecordedResponse {
  /** The handler's response headers; `null` when the call ended trailers-only (an error before any send). */
  readonly headers: Metadata | null;
  /** Response messages in order, as serialized protobuf. One for unary, zero or more for server streams. */
  readonly messages: readonly Buffer[];
  /** The final status and its trailers. */
  readonly status: {
    readonly code: number;
    readonly details: string;
    readonly trailers: Metadata;
  };
}

// Binary envelope, version 1. All integers are unsigned big-endian; `str` and `bytes` are a u32 length
// followed by that many bytes (strings UTF-8).
//
//   u8 'g', u8 'r', u8 version (1), u8 flags (bit 0: headers present)
//   u32 status code, str details
//   [metadata headers]                  only when flag bit 0 is set
//   u32 message count, then bytes per message
//   metadata trailers
//
//   metadata := u32 entry count, then per entry: str key, u8 kind (0 text, 1 binary), bytes value
//
// Binary rather than JSON with base64: messages are already bytes, and base64 would add a third to every
// stored stream. Repeated keys keep their order, and `-bin` values come back as Buffers.
const MAGIC_0 = 0x67; // 'g'
const MAGIC_1 = 0x72; // 'r'
const VERSION = 1;
const FLAG_HEADERS = 1;
const KIND_TEXT = 0;
const KIND_BINARY = 1;

class Writer {
  readonly #chunks: Buffer[] = [];
  #length = 0;

  u8(value: number): void {
    this.#push(Buffer.of(value));
  }

  u32(value: number): void {
    const buffer = Buffer.allocUnsafe(4);
    buffer.writeUInt32BE(value, 0);
    this.#push(buffer);
  }

  bytes(value: Uint8Array): void {
    this.u32(value.byteLength);
    this.#push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }

  str(value: string): void {
    this.bytes(Buffer.from(value, 'utf8'));
  }

  metadata(metadata: Metadata): void {
    const entries: [string, string | Buffer][] = [];
    for (const [key, values] of Object.entries(metadata.toJSON())) {
      for (const value of values) entries.push([key, value]);
    }
    this.u32(entries.length);
    for (const [key, value] of entries) {
      this.str(key);
      if (typeof value === 'string') {
        this.u8(KIND_TEXT);
        this.str(value);
      } else {
        this.u8(KIND_BINARY);
        this.bytes(value);
      }
    }
  }

  finish(): Uint8Array {
    return Buffer.concat(this.#chunks, this.#length);
  }

  #push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#length += chunk.byteLength;
  }
}

class Reader {
  #offset = 0;
  readonly #buffer: Buffer;

  constructor(bytes: Uint8Array) {
    this.#buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  u8(): number {
    this.#need(1, 'a byte');
    return this.#buffer.readUInt8(this.#offset++);
  }

  u32(): number {
    this.#need(4, 'a length');
    const value = this.#buffer.readUInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }

  bytes(): Buffer {
    const length = this.u32();
    this.#need(length, `${length} bytes`);
    // A copy: the record's bytes may be reused by the store or the cache.
    const value = Buffer.from(this.#buffer.subarray(this.#offset, this.#offset + length));
    this.#offset += length;
    return value;
  }

  str(): string {
    return this.bytes().toString('utf8');
  }

  metadata(): Metadata {
    const metadata = new Metadata();
    const count = this.u32();
    for (let i = 0; i < count; i++) {
      const key = this.str();
      const kind = this.u8();
      if (kind === KIND_TEXT) metadata.add(key, this.str());
      else if (kind === KIND_BINARY) metadata.add(key, this.bytes());
      else throw new RangeError(`unknown metadata value kind ${kind} for key ${JSON.stringify(key)}`);
    }
    return metadata;
  }

  end(): void {
    if (this.#offset !== this.#buffer.byteLength) {
      throw new RangeError(`${this.#buffer.byteLength - this.#offset} unexpected bytes after the envelope`);
    }
  }

  #need(count: number, what: string): void {
    if (this.#offset + count > this.#buffer.byteLength) {
      throw new RangeError(
        `expected ${what} at offset ${this.#offset}, but the envelope ends at ${this.#buffer.byteLength}`,
      );
    }
  }
}

/**
 * Serialize a recorded response into the version-1 envelope (the bytes the store keeps).
 *
 * @example
 * ```ts
 * const bytes = encodeGrpcResponse({ headers: new Metadata(), messages: [payload], status });
 * ```
 */
export function encodeGrpcResponse(response: IdempotencyGrpcRecordedResponse): Uint8Array {
  const writer = new Writer();
  writer.u8(MAGIC_0);
  writer.u8(MAGIC_1);
  writer.u8(VERSION);
  writer.u8(response.headers ? FLAG_HEADERS : 0);
  writer.u32(response.status.code);
  writer.str(response.status.details);
  if (response.headers) writer.metadata(response.headers);
  writer.u32(response.messages.length);
  for (const message of response.messages) writer.bytes(message);
  writer.metadata(response.status.trailers);
  return writer.finish();
}

/**
 * Parse a version-1 envelope; throws a `RangeError` that says what was expected where.
 *
 * @example
 * ```ts
 * const { status, messages } = decodeGrpcResponse(record.result);
 * ```
 */
export function decodeGrpcResponse(bytes: Uint8Array): IdempotencyGrpcRecordedResponse {
  try {
    const reader = new Reader(bytes);
    const magic0 = reader.u8();
    const magic1 = reader.u8();
    if (magic0 !== MAGIC_0 || magic1 !== MAGIC_1) {
      throw new RangeError(`expected the envelope to start with "gr", found bytes ${magic0}, ${magic1}`);
    }
    const version = reader.u8();
    if (version !== VERSION) {
      throw new RangeError(
        `expected envelope version ${VERSION}, found ${version} (written by a newer rpc-idempotency?)`,
      );
    }
    const flags = reader.u8();
    const code = reader.u32();
    const details = reader.str();
    const headers = flags & FLAG_HEADERS ? reader.metadata() : null;
    const count = reader.u32();
    const messages: Buffer[] = [];
    for (let i = 0; i < count; i++) messages.push(reader.bytes());
    const trailers = reader.metadata();
    reader.end();
    return { headers, messages, status: { code, details, trailers } };
  } catch (error) {
    throw new RangeError(
      `rpc-idempotency/grpc: a stored response could not be decoded: ${error instanceof Error ? error.message : String(error)}. The record was not written by this version of the gRPC adapter, or it was damaged.`,
      { cause: error },
    );
  }
}

/**
 * The codec the gRPC interceptor stores responses with (headers, protobuf messages, status, trailers in one
 * binary envelope). Exported for tools that inspect stored records.
 *
 * @example
 * ```ts
 * const record = await store.get('tenant-1', key);
 * if (record?.codec === idempotencyGrpcResponseCodec.name && record.result) {
 *   const response = idempotencyGrpcResponseCodec.decode(record.result);
 *   console.log(response.status.code, response.messages.length);
 * }
 * ```
 */
export const idempotencyGrpcResponseCodec: IdempotencyCodec<IdempotencyGrpcRecordedResponse> = Object.freeze({
  name: 'grpc-response/v1',
  encode: encodeGrpcResponse,
  decode: decodeGrpcResponse,
});
