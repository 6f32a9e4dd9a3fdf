import { status } from '@grpc/grpc-js';
import type { IdempotencyErrorCode } from '../core/errors.js';

/**
 * Why the gRPC interceptor refused a call: the core's {@link IdempotencyErrorCode}s plus three that only the
 * gRPC adapter can hit. Sent to the client in the `idempotency-error` trailer.
 *
 * - `STREAMING_NOT_SUPPORTED`: a client-streaming or bidi call carried a key (or its method requires one).
 * - `SERVICE_NOT_REPLAYABLE`: the method's service was registered without `replayableService(...)`, so a
 *   stored response could not be replayed byte for byte; the interceptor refuses before anything runs.
 * - `TRANSACTION_FAILED`: transactional mode; the call's transaction failed (it could not start, timed out, or
 *   did not commit), so the handler's writes were rolled back and the key released: retry with the same key.
 *
 * @example
 * ```ts
 * const code = error.metadata.get('idempotency-error')[0] as IdempotencyGrpcErrorCode | undefined;
 * if (code === 'IN_PROGRESS') retryLater();
 * ```
 */
export type IdempotencyGrpcErrorCode =
  | IdempotencyErrorCode
  | 'STREAMING_NOT_SUPPORTED'
  | 'SERVICE_NOT_REPLAYABLE'
  | 'TRANSACTION_FAILED';

/**
 * The one table from the interceptor's refusals to gRPC status codes (README.md, "Semantics", error table).
 * Every refusal is sent trailers-only (no response headers), so grpc-js's `retryPolicy` may retry the
 * retryable ones, with trailer `idempotency-error: <code>` so a client can tell them from the handler's own
 * statuses.
 *
 * | code | status | retry? |
 * |---|---|---|
 * | `KEY_MISSING`, `KEY_INVALID` | `INVALID_ARGUMENT` | no: fix the client |
 * | `IN_PROGRESS` | `ABORTED` + `grpc-retry-pushback-ms` | yes, after the pushback |
 * | `FINGERPRINT_MISMATCH` | `FAILED_PRECONDITION` | no: use a new key for a new request |
 * | `RESULT_NOT_STORABLE` | `INTERNAL` | no: the request ran, its result cannot be replayed |
 * | `STORE_UNAVAILABLE` | `UNAVAILABLE` | yes: nothing ran |
 * | `STREAMING_NOT_SUPPORTED` | `UNIMPLEMENTED` | no: send the call without a key |
 * | `SERVICE_NOT_REPLAYABLE` | `INTERNAL` | no: a server configuration error |
 * | `TRANSACTION_FAILED` | `ABORTED` | yes: the transaction rolled back and the key was released |
 *
 * Why `UNIMPLEMENTED` for streaming requests: gRPC defines it as "not implemented or not supported/enabled
 * in this service", which is exactly the case, and every client treats it as not retryable.
 * `FAILED_PRECONDITION` would say "fix the system's state, then retry", which no state change can satisfy.
 * Why `ABORTED` for a failed transaction: gRPC defines it as "the operation was aborted, typically due to a
 * concurrency issue such as a sequencer check failure or transaction abort", to be retried at a higher level.
 * It arrives after the handler's response headers when the handler had already answered, so grpc-js's own
 * `retryPolicy` does not retry it; the application retries with the same key.
 *
 * @example
 * ```ts
 * IdempotencyGrpcErrorStatus.IN_PROGRESS === status.ABORTED; // true
 * ```
 */
export const IdempotencyGrpcErrorStatus = Object.freeze({
  KEY_MISSING: status.INVALID_ARGUMENT,
  KEY_INVALID: status.INVALID_ARGUMENT,
  IN_PROGRESS: status.ABORTED,
  FINGERPRINT_MISMATCH: status.FAILED_PRECONDITION,
  RESULT_NOT_STORABLE: status.INTERNAL,
  STORE_UNAVAILABLE: status.UNAVAILABLE,
  STREAMING_NOT_SUPPORTED: status.UNIMPLEMENTED,
  SERVICE_NOT_REPLAYABLE: status.INTERNAL,
  TRANSACTION_FAILED: status.ABORTED,
} as const satisfies Record<IdempotencyGrpcErrorCode, status>);
