import type { IdempotencyTransactionOptions } from '../stores/contract.js';
import { describeValue } from './errors.js';

/**
 * How long a store transaction may wait to start when `maxWaitMs` is not set (Prisma's default).
 *
 * @example
 * ```ts
 * transactionLeaseMs({ timeoutMs: 10_000 }) >= DEFAULT_TRANSACTION_MAX_WAIT_MS + 10_000; // true
 * ```
 */
export const DEFAULT_TRANSACTION_MAX_WAIT_MS = 2_000;

/**
 * How long a store transaction may run when `timeoutMs` is not set (Prisma's default).
 *
 * @example
 * ```ts
 * transactionLeaseMs(undefined) >= DEFAULT_TRANSACTION_TIMEOUT_MS; // true
 * ```
 */
export const DEFAULT_TRANSACTION_TIMEOUT_MS = 5_000;

/**
 * Slack for the commit round trip and timer jitter after the transaction's own timeout fired.
 *
 * @example
 * ```ts
 * transactionLeaseMs({ maxWaitMs: 500, timeoutMs: 1_000 }) === 1_500 + TRANSACTION_LEASE_MARGIN_MS; // true
 * ```
 */
export const TRANSACTION_LEASE_MARGIN_MS = 1_000;

/**
 * The shortest lease that outlives any transaction started with `options`: the wait to start it, its timeout,
 * and a margin for the commit. In transactional mode the service claims at least this long and does not renew
 * the lease while the transaction runs, for two reasons:
 *
 * - the database already bounds the run: after `maxWaitMs + timeoutMs` the transaction can no longer commit,
 *   so nobody needs to take the key over earlier;
 * - a renewal is an UPDATE of the record row from another connection. Under PostgreSQL's `RepeatableRead` and
 *   `Serializable`, the transaction's own fenced completion of that row then fails with `40001 could not
 *   serialize access due to concurrent update` on every attempt, and on SQLite the renewal would have to wait
 *   for the transaction anyway (one connection per client).
 *
 * ```text
 * claim ─┬─ maxWaitMs ─┬──────── timeoutMs ────────┬─ margin ─┐
 *        │  BEGIN ...  │  procedure, complete, COMMIT          │ lockedUntil: only now may another caller
 *        └─────────────┴───────────────────────────┴──────────┘ take the key over
 * ```
 *
 * @param options the call's transaction options (`undefined` for `transaction: true`)
 * @returns milliseconds
 * @example
 * ```ts
 * transactionLeaseMs({ timeoutMs: 1_000, maxWaitMs: 500 }); // 2_500
 * ```
 */
export function transactionLeaseMs(options: IdempotencyTransactionOptions | undefined): number {
  const maxWaitMs = options?.maxWaitMs ?? DEFAULT_TRANSACTION_MAX_WAIT_MS;
  const timeoutMs = options?.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS;
  return maxWaitMs + timeoutMs + TRANSACTION_LEASE_MARGIN_MS;
}

const OPTION_KEYS = new Set(['isolationLevel', 'timeoutMs', 'maxWaitMs']);

/**
 * Validate a `transaction` option as the adapters accept it (`true`, `false`, or
 * `{ isolationLevel?, timeoutMs?, maxWaitMs? }`), with an error that says what arrived and what to write.
 *
 * @param value the option as given
 * @param where who asks, for the message (e.g. `meta.idempotency`)
 * @returns the option, or `undefined` when it was not given
 * @example
 * ```ts
 * validateTransactionOption({ isolationLevel: 'Serializable', timeoutMs: 10_000 }, 'idempotencyMiddleware');
 * ```
 */
export function validateTransactionOption(
  value: unknown,
  where: string,
): boolean | IdempotencyTransactionOptions | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  const expected =
    "expected transaction to be true, false or { isolationLevel?: string, timeoutMs?: number, maxWaitMs?: number } (e.g. { isolationLevel: 'Serializable', timeoutMs: 10_000 })";
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`${where}: ${expected}, received ${describeValue(value)}.`);
  }
  for (const key of Object.keys(value)) {
    if (!OPTION_KEYS.has(key)) {
      throw new TypeError(
        `${where}: ${expected}, received an unknown option ${JSON.stringify(key)}. Check for a typo.`,
      );
    }
  }
  const options = value as IdempotencyTransactionOptions;
  if (options.isolationLevel !== undefined && (typeof options.isolationLevel !== 'string' || !options.isolationLevel)) {
    throw new TypeError(
      `${where}: expected transaction.isolationLevel to be an isolation level name such as 'ReadCommitted', 'RepeatableRead' or 'Serializable', received ${describeValue(options.isolationLevel)}.`,
    );
  }
  for (const name of ['timeoutMs', 'maxWaitMs'] as const) {
    const ms = options[name];
    if (ms !== undefined && (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms <= 0)) {
      throw new TypeError(
        `${where}: expected transaction.${name} to be a positive integer of milliseconds, received ${describeValue(ms)}.`,
      );
    }
  }
  return options;
}

/**
 * The message adapters send when a transactional call's *transaction* failed (rather than the procedure): it
 * could not start, timed out, lost its connection or failed to commit. Everything the procedure wrote was
 * rolled back and the key was released, so a retry with the same key runs the procedure again.
 *
 * @param procedure the procedure identity (tRPC path, gRPC method path)
 * @param key the call's key, or `undefined` for a call without one
 * @param cause what the store's transaction threw
 * @param ran whether the procedure had returned before the transaction failed
 * @example
 * ```ts
 * describeTransactionFailure('payments.create', 'k-1', prismaError, true);
 * // 'The transaction of payments.create (idempotency key "k-1") failed after the procedure returned, ...'
 * ```
 */
export function describeTransactionFailure(
  procedure: string,
  key: string | undefined,
  cause: unknown,
  ran: boolean,
): string {
  const which = key === undefined ? 'without an idempotency key' : `idempotency key "${key}"`;
  const what = ran
    ? 'failed after the procedure returned, so everything it wrote through the transaction was rolled back and no result was stored'
    : 'failed before the procedure finished, so nothing it wrote was kept';
  const message = cause instanceof Error ? cause.message.trim().split('\n').filter(Boolean).at(-1) : String(cause);
  const code = (cause as { code?: unknown } | null)?.code;
  const timedOut = code === 'P2028' || /time(d)?[ -]?out|expired/i.test(String(message));
  const hint = timedOut
    ? ' If the procedure needs more time, raise transaction.timeoutMs (Prisma default 5_000) or make it faster.'
    : '';
  return `The transaction of ${procedure} (${which}) ${what} (${message}). Retry the request with the same key.${hint}`;
}
