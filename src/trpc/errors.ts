import { type TRPC_ERROR_CODE_KEY, TRPCError } from '@trpc/server';
import type { IdempotencyErrorPolicy } from '../core/codec.js';
import { type IdempotencyError, type IdempotencyErrorCode, isIdempotencyError } from '../core/errors.js';
import type { IdempotencyTrpcErrorData } from './protocol.js';

/**
 * How each {@link IdempotencyErrorCode} reaches a tRPC client: the one table of this adapter (the error table in
 * README.md, "Semantics"). The thrown `TRPCError` keeps the `IdempotencyError` as its `cause`, so server code can
 * check `isIdempotencyError(error.cause)`; clients see the idempotency code through
 * {@link idempotencyErrorData} in your error formatter.
 *
 * | code | tRPC code | HTTP |
 * |---|---|---|
 * | `KEY_MISSING` | `BAD_REQUEST` | 400 |
 * | `KEY_INVALID` | `BAD_REQUEST` | 400 |
 * | `IN_PROGRESS` | `CONFLICT` (+ `Retry-After`) | 409 |
 * | `FINGERPRINT_MISMATCH` | `UNPROCESSABLE_CONTENT` | 422 |
 * | `RESULT_NOT_STORABLE` | `INTERNAL_SERVER_ERROR` | 500 |
 * | `STORE_UNAVAILABLE` | `SERVICE_UNAVAILABLE` | 503 |
 *
 * @example
 * ```ts
 * idempotencyTrpcErrorCodes.IN_PROGRESS; // 'CONFLICT'
 * ```
 */
export const idempotencyTrpcErrorCodes = Object.freeze({
  KEY_MISSING: 'BAD_REQUEST',
  KEY_INVALID: 'BAD_REQUEST',
  IN_PROGRESS: 'CONFLICT',
  FINGERPRINT_MISMATCH: 'UNPROCESSABLE_CONTENT',
  RESULT_NOT_STORABLE: 'INTERNAL_SERVER_ERROR',
  STORE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
} as const satisfies Record<IdempotencyErrorCode, TRPC_ERROR_CODE_KEY>);

/**
 * Whether a procedure's `TRPCError` is stored and replayed (`'final'`) or releases the key so a retry runs the
 * procedure again (`'retryable'`), by code. Errors that are not `TRPCError`s reach the middleware as
 * `INTERNAL_SERVER_ERROR` and are retryable.
 *
 * The rule: an error is final when it is determined by what the fingerprint covers (procedure and input) and
 * the server's state at that moment, so the same request would get the same answer; once a client was told
 * "failed", a retry with the same key must not suddenly succeed later. It is retryable when it is transient,
 * the server's fault, or depends on request metadata outside the fingerprint. Authentication and authorization
 * are the deliberate cases: credentials travel in headers, so after a token refresh (`UNAUTHORIZED`) or a
 * step-up to a token with more scope (`FORBIDDEN`, RFC 6750 `insufficient_scope`), the retry with the same key
 * is meant to run. `CONFLICT` is retryable because it is mostly an optimistic-locking race; re-running is safe
 * because a conflict means nothing was written. Override per router or procedure with `isFinalError`.
 *
 * The table covers every tRPC code (a new tRPC code is a compile error here, so it gets decided, not guessed).
 *
 * @example
 * ```ts
 * trpcErrorFinality.NOT_FOUND; // 'final'
 * trpcErrorFinality.UNAUTHORIZED; // 'retryable'
 * ```
 */
export const trpcErrorFinality = Object.freeze({
  // The caller's input is wrong; the same input gives the same answer.
  PARSE_ERROR: 'final',
  BAD_REQUEST: 'final',
  UNPROCESSABLE_CONTENT: 'final',
  PAYLOAD_TOO_LARGE: 'final',
  UNSUPPORTED_MEDIA_TYPE: 'final',
  METHOD_NOT_SUPPORTED: 'final',
  // The server's state at the time decided the answer ("no such account", "insufficient funds").
  NOT_FOUND: 'final',
  PRECONDITION_FAILED: 'final',
  PAYMENT_REQUIRED: 'final',
  // Credentials and conditional headers are outside the fingerprint: a retry may legitimately differ.
  UNAUTHORIZED: 'retryable',
  FORBIDDEN: 'retryable',
  PRECONDITION_REQUIRED: 'retryable',
  // Concurrency conflicts (optimistic locking) are transient.
  CONFLICT: 'retryable',
  // The server's fault or a transient condition.
  INTERNAL_SERVER_ERROR: 'retryable',
  NOT_IMPLEMENTED: 'retryable',
  BAD_GATEWAY: 'retryable',
  SERVICE_UNAVAILABLE: 'retryable',
  GATEWAY_TIMEOUT: 'retryable',
  TIMEOUT: 'retryable',
  TOO_MANY_REQUESTS: 'retryable',
  CLIENT_CLOSED_REQUEST: 'retryable',
} as const satisfies Record<TRPC_ERROR_CODE_KEY, 'final' | 'retryable'>);

/**
 * Which procedure errors are final (stored and replayed): a list of tRPC codes, or a predicate. Everything else
 * releases the key so a retry runs again.
 *
 * @default the codes marked `'final'` in {@link trpcErrorFinality}
 * @example
 * ```ts
 * idempotencyMiddleware({ store, isFinalError: ['BAD_REQUEST', 'NOT_FOUND'] });
 * idempotencyMiddleware({ store, isFinalError: (error) => error.code === 'BAD_REQUEST' });
 * ```
 */
export type IdempotencyTrpcFinalErrors = readonly TRPC_ERROR_CODE_KEY[] | ((error: TRPCError) => boolean);

/**
 * The default {@link IdempotencyTrpcFinalErrors}: `true` for the codes {@link trpcErrorFinality} marks final.
 *
 * @example
 * ```ts
 * isFinalByDefault(new TRPCError({ code: 'BAD_REQUEST' })); // true
 * ```
 */
export function isFinalByDefault(error: TRPCError): boolean {
  return (trpcErrorFinality as Record<string, string>)[error.code] === 'final';
}

/**
 * Turn an {@link IdempotencyError} into the `TRPCError` the client receives, per
 * {@link idempotencyTrpcErrorCodes}. The message is kept; the `IdempotencyError` becomes the `cause`.
 *
 * @example
 * ```ts
 * throw toTRPCError(new IdempotencyError('KEY_MISSING', 'payments.create requires an idempotency key'));
 * // TRPCError { code: 'BAD_REQUEST', cause: IdempotencyError { code: 'KEY_MISSING' } }
 * ```
 */
export function toTRPCError(error: IdempotencyError): TRPCError {
  const code: TRPC_ERROR_CODE_KEY = idempotencyTrpcErrorCodes[error.code] ?? 'INTERNAL_SERVER_ERROR';
  return new TRPCError({ code, message: error.message, cause: error });
}

/**
 * For your `errorFormatter`: the idempotency details of an error, or `null` when the error did not come from
 * the idempotency layer. Clients read it with `getIdempotencyErrorCode` from `rpc-idempotency/trpc/client`.
 *
 * @example
 * ```ts
 * const t = initTRPC.context<Context>().meta<IdempotencyTrpcMeta>().create({
 *   transformer: superjson,
 *   errorFormatter: ({ shape, error }) => ({
 *     ...shape,
 *     data: { ...shape.data, idempotency: idempotencyErrorData(error) },
 *   }),
 * });
 * ```
 */
export function idempotencyErrorData(error: unknown): IdempotencyTrpcErrorData | null {
  const source = isIdempotencyError(error)
    ? error
    : isIdempotencyError((error as { cause?: unknown } | null)?.cause)
      ? (error as { cause: IdempotencyError }).cause
      : undefined;
  if (!source) return null;
  return source.retryAfterMs === undefined
    ? { code: source.code }
    : { code: source.code, retryAfterMs: source.retryAfterMs };
}

/**
 * Whether `value` is a `TRPCError`, also from another loaded copy of `@trpc/server` (as tRPC itself checks).
 *
 * @example
 * ```ts
 * isTRPCErrorLike(new TRPCError({ code: 'NOT_FOUND' })); // true
 * ```
 */
export function isTRPCErrorLike(value: unknown): value is TRPCError {
  return (
    value instanceof TRPCError ||
    (value instanceof Error && value.name === 'TRPCError' && typeof (value as { code?: unknown }).code === 'string')
  );
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The error policy the middleware gives the service: final errors are stored as their tRPC code and message
 * (never the cause: it may hold internals, and it cannot be rebuilt faithfully), and replayed as a fresh
 * `TRPCError` with the same code and message.
 *
 * @example
 * ```ts
 * const errors = createTrpcErrorPolicy(isFinalByDefault);
 * const { code, bytes } = errors.encode(new TRPCError({ code: 'NOT_FOUND', message: 'no account 42' }));
 * errors.decode(code, bytes); // TRPCError { code: 'NOT_FOUND', message: 'no account 42' }
 * ```
 */
export function createTrpcErrorPolicy(isFinal: (error: TRPCError) => boolean): IdempotencyErrorPolicy {
  return {
    isFinal: (error) => isTRPCErrorLike(error) && isFinal(error),
    encode(error) {
      const trpcError = error as TRPCError;
      return { code: trpcError.code, bytes: encoder.encode(JSON.stringify({ message: trpcError.message })) };
    },
    decode(code, bytes) {
      let message = code;
      try {
        const parsed = JSON.parse(decoder.decode(bytes)) as { message?: unknown };
        if (typeof parsed.message === 'string') message = parsed.message;
      } catch {
        // A damaged record still replays as an error with the right code rather than crashing the call.
      }
      const known = Object.hasOwn(trpcErrorFinality, code);
      return new TRPCError({
        code: known ? (code as TRPC_ERROR_CODE_KEY) : 'INTERNAL_SERVER_ERROR',
        message: known ? message : `${message} (stored with unknown tRPC code "${code}")`,
      });
    },
  };
}
