import { Metadata, status } from '@grpc/grpc-js';
import type { IdempotencyGrpcRecordedResponse } from './envelope.js';
import { statusName } from './status-policy.js';

// Methods with a shared result (IdempotencyGrpcSharedResult) share records with another transport, so their
// final errors are stored in a transport-neutral form: an HTTP-flavoured code name (the names tRPC uses) as
// the record's resultCode, and UTF-8 JSON `{ "message": string }` as its bytes. rpc-idempotency/trpc stores
// its final errors exactly so, and each side maps the names to its own codes. Names only: this file must not
// import @trpc (transports stay in their own folders).

/** gRPC status of a stored final error → the shared code name. */
const TO_SHARED: Readonly<Partial<Record<number, string>>> = Object.freeze({
  [status.INVALID_ARGUMENT]: 'BAD_REQUEST',
  [status.OUT_OF_RANGE]: 'BAD_REQUEST',
  [status.NOT_FOUND]: 'NOT_FOUND',
  [status.ALREADY_EXISTS]: 'CONFLICT',
  [status.FAILED_PRECONDITION]: 'PRECONDITION_FAILED',
  [status.UNIMPLEMENTED]: 'NOT_IMPLEMENTED',
  [status.PERMISSION_DENIED]: 'FORBIDDEN',
  [status.UNAUTHENTICATED]: 'UNAUTHORIZED',
  [status.RESOURCE_EXHAUSTED]: 'TOO_MANY_REQUESTS',
});

/** A shared code name from a stored record → the gRPC status a replay sends. Unknown names: `UNKNOWN`. */
const FROM_SHARED: Readonly<Record<string, status>> = Object.freeze({
  BAD_REQUEST: status.INVALID_ARGUMENT,
  PARSE_ERROR: status.INVALID_ARGUMENT,
  UNPROCESSABLE_CONTENT: status.INVALID_ARGUMENT,
  UNSUPPORTED_MEDIA_TYPE: status.INVALID_ARGUMENT,
  PAYLOAD_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  TOO_MANY_REQUESTS: status.RESOURCE_EXHAUSTED,
  METHOD_NOT_SUPPORTED: status.UNIMPLEMENTED,
  NOT_IMPLEMENTED: status.UNIMPLEMENTED,
  NOT_FOUND: status.NOT_FOUND,
  PRECONDITION_FAILED: status.FAILED_PRECONDITION,
  PAYMENT_REQUIRED: status.FAILED_PRECONDITION,
  CONFLICT: status.ALREADY_EXISTS,
  FORBIDDEN: status.PERMISSION_DENIED,
  UNAUTHORIZED: status.UNAUTHENTICATED,
});

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Encode a final gRPC error of a shared-result method in the shared form.
 *
 * @example
 * ```ts
 * encodeSharedError(response).code; // 'PRECONDITION_FAILED' for status FAILED_PRECONDITION
 * ```
 */
export function encodeSharedError(response: IdempotencyGrpcRecordedResponse): { code: string; bytes: Uint8Array } {
  const code = TO_SHARED[response.status.code] ?? statusName(response.status.code);
  return { code, bytes: encoder.encode(JSON.stringify({ message: response.status.details })) };
}

/**
 * Rebuild a stored shared-form error (written by either transport) as a trailers-only gRPC response.
 *
 * @example
 * ```ts
 * decodeSharedError('BAD_REQUEST', bytes).status.code; // status.INVALID_ARGUMENT
 * ```
 */
export function decodeSharedError(code: string, bytes: Uint8Array): IdempotencyGrpcRecordedResponse {
  let message = code;
  try {
    const parsed = JSON.parse(decoder.decode(bytes)) as { message?: unknown };
    if (typeof parsed.message === 'string') message = parsed.message;
  } catch {
    // A damaged record still replays as an error with the right code.
  }
  // Codes without a shared name were stored under their gRPC name (e.g. DATA_LOSS): map those back too.
  const grpcCode = FROM_SHARED[code] ?? statusCodeOfName(code) ?? status.UNKNOWN;
  return { headers: null, messages: [], status: { code: grpcCode, details: message, trailers: new Metadata() } };
}

function statusCodeOfName(name: string): status | undefined {
  const code = (status as unknown as Record<string, unknown>)[name];
  return typeof code === 'number' && code !== status.OK ? (code as status) : undefined;
}
