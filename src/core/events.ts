/**
 * The decisions the service reports, one event each:
 *
 * - `executed`: this call ran the procedure (whatever its outcome).
 * - `replayed`: a stored result or final error was returned; the procedure did not run.
 * - `conflict`: the key is still running elsewhere; the call got `IN_PROGRESS`.
 * - `mismatch`: the key was reused with another input or procedure (`FINGERPRINT_MISMATCH`).
 * - `released`: the procedure failed with a retryable error; the record was deleted so a retry runs again.
 * - `taken-over`: this call claimed a record whose TTL or lease had lapsed.
 * - `store-error`: the store failed or refused a fenced write; `error` says which.
 * - `not-storable`: the result could not be stored; retries get `RESULT_NOT_STORABLE`.
 */
export type IdempotencyEventType =
  | 'executed'
  | 'replayed'
  | 'conflict'
  | 'mismatch'
  | 'released'
  | 'taken-over'
  | 'store-error'
  | 'not-storable';

/**
 * One event from {@link IdempotencyServiceOptions.onEvent}.
 *
 * @example
 * ```ts
 * createIdempotencyService({ store, onEvent: (e) => metrics.increment(`idempotency.${e.type}`) });
 * ```
 */
export interface IdempotencyEvent {
  readonly type: IdempotencyEventType;
  readonly scope: string;
  readonly key: string;
  readonly procedure: string;
  /** Milliseconds since the call entered the service. */
  readonly durationMs: number;
  /** For `executed` and `replayed`: whether the outcome was a success. */
  readonly ok?: boolean;
  /** For `replayed`: whether the record came from the in-process cache. */
  readonly cached?: boolean;
  /** For `store-error`: which store operation failed (`claim`, `get`, `complete`, `release`, `renew`). */
  readonly operation?: string;
  /** For `store-error` and `not-storable`: what went wrong. */
  readonly error?: unknown;
}

/** A listener for {@link IdempotencyEvent}s. Errors it throws are swallowed: observability never breaks a call. */
export type IdempotencyEventListener = (event: IdempotencyEvent) => void;
