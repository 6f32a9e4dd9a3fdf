/**
 * Turns a procedure's result into bytes for the store and back. The adapter chooses it (tRPC: the router's
 * transformer; gRPC: protobuf bytes); the core never assumes JSON.
 *
 * `name` is stored with the record so a replay can tell which codec wrote it.
 *
 * @example
 * ```ts
 * const textCodec: IdempotencyCodec<string> = {
 *   name: 'utf8',
 *   encode: (value) => new TextEncoder().encode(value),
 *   decode: (bytes) => new TextDecoder().decode(bytes),
 * };
 * ```
 */
export interface IdempotencyCodec<T> {
  /** Stored with each record; a record written by another codec is not decoded by this one. */
  readonly name: string;
  /** Serialize a result. Throwing here stores the record as `RESULT_NOT_STORABLE`. */
  encode(value: T): Uint8Array;
  /** Deserialize a stored result. */
  decode(bytes: Uint8Array): T;
}

/**
 * How a transport treats the errors its procedures throw: which are final (stored and replayed) and how a
 * final error is stored and rebuilt. Retryable errors release the record so a retry runs again.
 *
 * @example
 * ```ts
 * const errors: IdempotencyErrorPolicy = {
 *   isFinal: (error) => error instanceof ValidationError,
 *   encode: (error) => ({ code: 'VALIDATION', bytes: new TextEncoder().encode(String(error)) }),
 *   decode: (code, bytes) => new ValidationError(new TextDecoder().decode(bytes)),
 * };
 * ```
 */
export interface IdempotencyErrorPolicy {
  /** `true`: the error is the caller's fault and deterministic; store it. `false`: release the record. */
  isFinal(error: unknown): boolean;
  /** Serialize a final error; `code` is stored in `resultCode`. */
  encode(error: unknown): { code: string; bytes: Uint8Array };
  /** Rebuild a stored final error for a replay. */
  decode(code: string, bytes: Uint8Array): unknown;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * A codec for JSON-compatible results (`JSON.stringify` / `JSON.parse`). Values JSON would silently change
 * (`undefined` at the top level, `bigint`, functions, `Date`, `Map`, `Set`, non-finite numbers) are rejected,
 * so they end as `RESULT_NOT_STORABLE` instead of replaying as something else.
 *
 * @example
 * ```ts
 * jsonCodec.decode(jsonCodec.encode({ id: 1 })); // { id: 1 }
 * ```
 */
export const jsonCodec: IdempotencyCodec<unknown> = Object.freeze({
  name: 'json',
  encode(value: unknown): Uint8Array {
    assertPlainJson(value, '$');
    // JSON text is never empty, so zero bytes can stand for `undefined` without colliding with any value.
    return value === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(value));
  },
  decode(bytes: Uint8Array): unknown {
    return bytes.byteLength === 0 ? undefined : JSON.parse(decoder.decode(bytes));
  },
});

function assertPlainJson(value: unknown, path: string): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (value === undefined && path === '$') return;
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return;
    throw new TypeError(`jsonCodec: expected a finite number at ${path}, received ${value}. JSON would store null.`);
  }
  if (typeof value !== 'object' || value === undefined) {
    throw new TypeError(
      `jsonCodec: expected JSON-compatible data at ${path}, received ${typeof value}. Return plain data or use a transformer such as superjson.`,
    );
  }
  if (Array.isArray(value)) {
    value.forEach((item, index) => {
      assertPlainJson(item, `${path}[${index}]`);
    });
    return;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(
      `jsonCodec: expected a plain object at ${path}, received ${Object.prototype.toString.call(value)}. JSON would not replay it as the same type; use a transformer such as superjson.`,
    );
  }
  for (const [key, member] of Object.entries(value)) {
    if (member === undefined) continue;
    assertPlainJson(member, `${path}.${key}`);
  }
}
