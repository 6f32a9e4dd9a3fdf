import type { IdempotencyFinalStatus, IdempotencyRecord } from '../core/record.js';

/**
 * What a claim writes when it wins: a fresh `IN_PROGRESS` record. All times are epoch milliseconds.
 */
export interface IdempotencyClaimInput {
  readonly scope: string;
  readonly key: string;
  readonly fingerprint: string;
  readonly procedure: string;
  /** A fresh, unguessable token that identifies this lease owner. */
  readonly ownerToken: string;
  /** The current time; records with `expiresAt <= now`, or leases with `lockedUntil <= now`, are claimable. */
  readonly now: number;
  /** `now + leaseMs`. */
  readonly lockedUntil: number;
  /** `now + ttlMs`. */
  readonly expiresAt: number;
}

/**
 * The outcome of {@link IdempotencyStore.claim}.
 *
 * - `claimed: true`: this caller owns the record (a new insert, or a takeover of an expired record or lease;
 *   `takenOver` says which, and `previous` is the record it replaced).
 * - `claimed: false`: another record holds the key; `existing` is that record, as the claim found it.
 */
export type IdempotencyClaimResult =
  | { readonly claimed: true; readonly takenOver: false }
  | { readonly claimed: true; readonly takenOver: true; readonly previous?: IdempotencyRecord | undefined }
  | { readonly claimed: false; readonly existing: IdempotencyRecord };

/** What a fenced completion writes. */
export interface IdempotencyCompleteInput {
  readonly scope: string;
  readonly key: string;
  /** Only the holder of this token may complete the record. */
  readonly ownerToken: string;
  readonly status: IdempotencyFinalStatus;
  readonly result: Uint8Array | null;
  readonly resultCode: string | null;
  readonly codec: string | null;
}

/** Options of {@link IdempotencyStore.purgeExpired}. */
export interface IdempotencyPurgeInput {
  /** Records with `expiresAt <= now` are deleted. */
  readonly now: number;
  /** At most this many records are deleted by this call. */
  readonly limit: number;
}

/**
 * The store contract: a few atomic primitives. All policy (validation, fingerprints, leases, replay, retries)
 * lives in the service; a store only has to make each primitive atomic.
 *
 * Every store must pass the conformance suite exported from `rpc-idempotency/testing`.
 *
 * @example
 * ```ts
 * const store: IdempotencyStore = createMemoryStore();
 * const claim = await store.claim({ scope: '', key: 'k', fingerprint: 'f', procedure: 'p',
 *   ownerToken: 't', now, lockedUntil: now + 30_000, expiresAt: now + 86_400_000 });
 * ```
 */
export interface IdempotencyStore {
  /** A short name for messages and events, e.g. `memory` or `prisma:postgresql`. */
  readonly name: string;
  /**
   * Atomically insert an `IN_PROGRESS` record, or take over the existing one when it is claimable
   * (expired, or `IN_PROGRESS` with a lapsed lease). Of any number of concurrent claims for one
   * `(scope, key)`, exactly one wins. A lost claim returns the record it collided with.
   */
  claim(input: IdempotencyClaimInput): Promise<IdempotencyClaimResult>;
  /** Read one record, expired or not; `null` when absent. */
  get(scope: string, key: string): Promise<IdempotencyRecord | null>;
  /**
   * Finish the record: only when it is `IN_PROGRESS` and still owned by `ownerToken`. Returns `false` (and
   * writes nothing) when the caller lost the record.
   */
  complete(input: IdempotencyCompleteInput): Promise<boolean>;
  /** Delete the record, only when it is `IN_PROGRESS` and owned by `ownerToken`. Returns whether it did. */
  release(scope: string, key: string, ownerToken: string): Promise<boolean>;
  /**
   * Extend the lease to `lockedUntil`, only when the record is `IN_PROGRESS` and owned by `ownerToken`.
   * Returns `false` when the caller lost the record.
   */
  renew(scope: string, key: string, ownerToken: string, lockedUntil: number): Promise<boolean>;
  /** Delete up to `limit` records with `expiresAt <= now`; returns how many it deleted. */
  purgeExpired(input: IdempotencyPurgeInput): Promise<number>;
}

/**
 * Options of a store transaction, passed through to the database.
 *
 * @example
 * ```ts
 * { isolationLevel: 'Serializable', timeoutMs: 10_000 }
 * ```
 */
export interface IdempotencyTransactionOptions {
  /** The database's isolation level name, e.g. `ReadCommitted`, `RepeatableRead`, `Serializable`. @default the database's default */
  readonly isolationLevel?: string | undefined;
  /** Roll back when the procedure and completion take longer than this. @default 5_000 (Prisma's default) */
  readonly timeoutMs?: number | undefined;
  /** How long to wait for a connection to start the transaction. @default 2_000 (Prisma's default) */
  readonly maxWaitMs?: number | undefined;
}

/** One open store transaction, as {@link IdempotencyTransactionalStore.transaction} hands it to the work. */
export interface IdempotencyTransaction<TClient = unknown> {
  /** The transaction's client: the procedure's own writes go through it to commit with the record. */
  readonly client: TClient;
  /** The fenced completion, inside this transaction: `false` means the caller lost the record. */
  complete(input: IdempotencyCompleteInput): Promise<boolean>;
}

/**
 * A store that can commit the procedure's own writes and the record's completion in one database transaction
 * (transactional mode). The claim stays outside: it is committed first, so duplicates see `IN_PROGRESS`.
 *
 * @example
 * ```ts
 * if (isTransactionalStore(store)) await store.transaction(async (tx) => { ... }, { timeoutMs: 10_000 });
 * ```
 */
export interface IdempotencyTransactionalStore<TClient = unknown> extends IdempotencyStore {
  /** Run `work` in one transaction: commit when it resolves, roll back and rethrow when it throws. */
  transaction<R>(
    work: (transaction: IdempotencyTransaction<TClient>) => Promise<R>,
    options?: IdempotencyTransactionOptions,
  ): Promise<R>;
}

/**
 * Whether `store` supports transactional mode.
 *
 * @example
 * ```ts
 * isTransactionalStore(createMemoryStore()); // false
 * ```
 */
export function isTransactionalStore(store: IdempotencyStore): store is IdempotencyTransactionalStore {
  return typeof (store as Partial<IdempotencyTransactionalStore>).transaction === 'function';
}
