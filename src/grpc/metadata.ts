/**
 * The metadata names the gRPC adapter reads and writes. One place, so the server interceptor, the client
 * interceptor and users' own code agree.
 *
 * - `KEY`: the request's idempotency key (request metadata, text, one value).
 * - `REPLAYED`: `true` on a replayed response, in its headers (when the original had headers) and trailers.
 * - `ERROR`: the reason the interceptor refused a call, in the trailers (e.g. `IN_PROGRESS`); see
 *   `IdempotencyGrpcErrorStatus` in `rpc-idempotency/grpc`.
 * - `RETRY_PUSHBACK_MS`: gRPC's own retry hint, sent with `IN_PROGRESS`; grpc-js's `retryPolicy` waits this
 *   long before the next attempt.
 *
 * @example
 * ```ts
 * client.createPayment(request, (error, payment) => {});
 * call.on('metadata', (headers) => headers.get(IdempotencyGrpcMetadata.REPLAYED)[0] === 'true');
 * ```
 */
export const IdempotencyGrpcMetadata = {
  KEY: 'idempotency-key',
  REPLAYED: 'idempotent-replayed',
  ERROR: 'idempotency-error',
  RETRY_PUSHBACK_MS: 'grpc-retry-pushback-ms',
} as const;

const METADATA_KEY = /^[0-9a-z_.-]+$/;

/**
 * Validate a configurable metadata key name. Keys ending in `-bin` carry binary values, which cannot be an
 * idempotency key (README, Semantics: printable ASCII), and `grpc-` is reserved by gRPC.
 *
 * @example
 * ```ts
 * validateMetadataKeyName('x-request-id', 'idempotencyInterceptor'); // 'x-request-id'
 * ```
 */
export function validateMetadataKeyName(value: unknown, where: string): string {
  if (
    typeof value === 'string' &&
    METADATA_KEY.test(value) &&
    !value.endsWith('-bin') &&
    !value.startsWith('grpc-') &&
    value.length <= 255
  ) {
    return value;
  }
  throw new TypeError(
    `${where}: expected metadataKey to be a lowercase gRPC metadata name (letters, digits, '-', '_', '.'; not ending in '-bin', not starting with 'grpc-'), received ${JSON.stringify(value)}. Use the default 'idempotency-key' unless your clients send another name.`,
  );
}
