import { randomUUID } from 'node:crypto';
import {
  type IdempotencyStore,
  type IdempotencyTransactionalStore,
  type IdempotencyTransactionOptions,
  isTransactionalStore,
} from '../stores/contract.js';
import { type IdempotencyClock, sleep, systemClock } from './clock.js';
import type { IdempotencyCodec, IdempotencyErrorPolicy } from './codec.js';
import { describeValue, IdempotencyError } from './errors.js';
import type { IdempotencyEvent, IdempotencyEventListener, IdempotencyEventType } from './events.js';
import { validateKey, validateScope } from './key.js';
import { type IdempotencyRecord, IdempotencyStatus, isRecordClaimable } from './record.js';
import { RecordCache } from './record-cache.js';
import { transactionLeaseMs } from './transaction.js';

/**
 * What to do when a call finds its key `IN_PROGRESS` under a live lease.
 *
 * - `'reject'` (default): fail at once with `IN_PROGRESS` (retryable; the client retries later).
 * - `{ wait: true }`: wait up to `timeoutMs` (default 10 000) for the record to finish, checking every
 *   `pollIntervalMs` (default 100; calls in the same process are woken at once), then replay it. On timeout,
 *   `IN_PROGRESS`. If the running call fails with a retryable error meanwhile, the waiter claims and runs.
 *
 * @example
 * ```ts
 * createIdempotencyService({ store, inFlight: { wait: true, timeoutMs: 5_000 } });
 * ```
 */
export type IdempotencyInFlightPolicy =
  | 'reject'
  | { readonly wait: true; readonly timeoutMs?: number; readonly pollIntervalMs?: number };

/**
 * Options of {@link createIdempotencyService}. All durations are milliseconds.
 *
 * @example
 * ```ts
 * const service = createIdempotencyService({ store: createMemoryStore(), ttlMs: 3_600_000 });
 * ```
 */
export interface IdempotencyServiceOptions<TStore extends IdempotencyStore = IdempotencyStore> {
  /** Where records live. */
  readonly store: TStore;
  /** The source of time. @default systemClock */
  readonly clock?: IdempotencyClock;
  /** How long a record counts after it was created. @default 86_400_000 (24 h) */
  readonly ttlMs?: number;
  /**
   * How long a claim holds the key without renewal. The lease is renewed while the procedure runs, so this only
   * bounds how long a crashed owner blocks the key. @default 30_000
   */
  readonly leaseMs?: number;
  /** How often a running call renews its lease. Must be shorter than `leaseMs`. @default leaseMs / 3 */
  readonly renewIntervalMs?: number;
  /**
   * How long a call may keep renewing its lease. A procedure that hangs in a healthy process would otherwise hold
   * its key until the TTL ends; after `maxRunMs` the renewals stop, the call's `signal` is aborted, and once the
   * lease lapses a retry may take the key over. Set it above your slowest healthy procedure.
   * @default 900_000 (15 minutes)
   */
  readonly maxRunMs?: number;
  /** What to do when the key is running elsewhere. @default 'reject' */
  readonly inFlight?: IdempotencyInFlightPolicy;
  /** The `retryAfterMs` hint on `IN_PROGRESS` errors, capped by the lease's remaining time. @default 1_000 */
  readonly retryAfterMs?: number;
  /** Results larger than this (after encoding) are not stored: `RESULT_NOT_STORABLE`. @default 1_048_576 */
  readonly maxResultBytes?: number;
  /**
   * An in-process LRU cache of finished records so hot replays skip the store. Finished records never change
   * before they expire, so the cache is safe across processes; it honours `expiresAt`.
   * @default false
   */
  readonly cache?: false | { readonly maxEntries?: number };
  /** Receives one event per decision. @default none */
  readonly onEvent?: IdempotencyEventListener;
  /**
   * How often a failed completion or release write is tried before giving up (the caller still gets the real
   * result; a `store-error` event reports it). @default { attempts: 3, delayMs: 50 } (delay doubles each time)
   */
  readonly writeRetry?: { readonly attempts?: number; readonly delayMs?: number };
  /** Makes lease owner tokens. @default crypto.randomUUID */
  readonly generateToken?: () => string;
}

/** Per-call overrides of service options (e.g. from tRPC `meta` or a gRPC method table). */
export interface IdempotencyCallPolicy {
  readonly ttlMs?: number | undefined;
  readonly leaseMs?: number | undefined;
  readonly inFlight?: IdempotencyInFlightPolicy | undefined;
  readonly maxResultBytes?: number | undefined;
  /**
   * Transactional mode: run the procedure inside one store transaction and write the record's completion with
   * the same transaction, so the procedure's writes to that database and the record commit together or not at
   * all. `true` uses the database's defaults. Requires a store with `transaction()` (the Prisma store).
   *
   * The lease is then at least `maxWaitMs + timeoutMs + 1_000` (defaults 2_000 and 5_000) and is not renewed
   * while the transaction runs: the transaction's timeout bounds the run, and a renewal from another
   * connection would make the completion fail under PostgreSQL's `RepeatableRead` / `Serializable`.
   * @default false
   */
  readonly transaction?: boolean | IdempotencyTransactionOptions | undefined;
}

/** What a running procedure is told. */
export interface IdempotencyRunContext {
  /** The validated key, or `undefined` for a call without one. */
  readonly key: string | undefined;
  readonly scope: string;
  /**
   * Aborted when this call loses its lease (the store refused a renewal): another caller may now run the same
   * key, so a procedure that can stop early should. Never aborted in transactional mode, where the lease is not
   * renewed: it covers the whole transaction, whose timeout bounds the run instead.
   */
  readonly signal: AbortSignal;
  /**
   * In transactional mode, the transaction's client (for Prisma: the `tx` of an interactive transaction). Every
   * write that must happen exactly once goes through it. `undefined` outside transactional mode.
   */
  readonly transaction: unknown;
}

/**
 * One call through {@link IdempotencyService.execute}.
 *
 * @example
 * ```ts
 * await service.execute({
 *   procedure: 'payments.create', key: headers['idempotency-key'], scope: tenantId,
 *   fingerprint: computeFingerprint('payments.create', input),
 *   codec: jsonCodec, errors: myErrorPolicy, run: () => createPayment(input),
 * });
 * ```
 */
export interface IdempotencyCall<T> extends IdempotencyCallPolicy {
  /** The procedure's identity (tRPC path, gRPC method path). */
  readonly procedure: string;
  /** The key as received: `undefined`/`null` when absent; anything else is validated. */
  readonly key: unknown;
  /** Who owns the key. @default '' (one global key space: unsafe for multi-tenant apps) */
  readonly scope?: string | undefined;
  /** From {@link computeFingerprint} or the adapter's custom fingerprint. */
  readonly fingerprint: string;
  /** Fail with `KEY_MISSING` when no key was sent. @default false */
  readonly required?: boolean | undefined;
  /** Serializes the procedure's result for the record (the adapter's choice: a transformer, protobuf bytes). */
  readonly codec: IdempotencyCodec<T>;
  /** Which errors are final, and how they are stored. @default every error is retryable */
  readonly errors?: IdempotencyErrorPolicy | undefined;
  /** Run the procedure. */
  run(context: IdempotencyRunContext): Promise<T>;
}

/**
 * What {@link IdempotencyService.execute} returns. Procedure errors (live or replayed) come back as
 * `ok: false`; the service's own refusals (`KEY_*`, `IN_PROGRESS`, `FINGERPRINT_MISMATCH`,
 * `STORE_UNAVAILABLE`) are thrown as {@link IdempotencyError}.
 *
 * - `source: 'executed'`: the procedure ran in this call.
 * - `source: 'replayed'`: the outcome came from a stored record; the procedure did not run.
 * - `source: 'bypassed'`: no key was sent; the procedure ran without idempotency.
 */
export type IdempotencyOutcome<T> =
  | { readonly source: 'executed' | 'replayed' | 'bypassed'; readonly ok: true; readonly value: T }
  | { readonly source: 'executed' | 'replayed' | 'bypassed'; readonly ok: false; readonly error: unknown };

/** Options of {@link IdempotencyService.purgeExpired}. */
export interface IdempotencyPurgeOptions {
  /** Records deleted per store call. @default 1_000 */
  readonly batchSize?: number;
  /** Stop after this many batches (for a bounded scheduled job). @default Infinity */
  readonly maxBatches?: number;
  /** Called after each batch with the running total. */
  readonly onProgress?: (progress: { readonly deleted: number; readonly batches: number }) => void;
}

/**
 * The transport-independent idempotency service. Adapters (`rpc-idempotency/trpc`, `rpc-idempotency/grpc`)
 * call {@link IdempotencyService.execute} once per RPC. `TStore` is the store's own type, so adapters can tell a
 * transactional store's transaction client type (e.g. Prisma's `tx`) from the service.
 *
 * @example
 * ```ts
 * const service: IdempotencyService<typeof store> = createIdempotencyService({ store });
 * ```
 */
export interface IdempotencyService<TStore extends IdempotencyStore = IdempotencyStore> {
  /** The store the service was created with. */
  readonly store: TStore;
  /** The service's source of time (the injected clock, or `systemClock`). */
  readonly clock: IdempotencyClock;
  /**
   * The resolved {@link IdempotencyServiceOptions.maxResultBytes}. Adapters that buffer a result while it is
   * produced (gRPC server streams) stop buffering past it instead of holding an unbounded stream in memory.
   */
  readonly maxResultBytes: number;
  /** Run one call through the lifecycle in README.md, "Semantics". */
  execute<T>(call: IdempotencyCall<T>): Promise<IdempotencyOutcome<T>>;
  /** Delete expired records in batches; resolves to the number deleted. */
  purgeExpired(options?: IdempotencyPurgeOptions): Promise<number>;
}

const DEFAULTS = {
  ttlMs: 86_400_000,
  leaseMs: 30_000,
  retryAfterMs: 1_000,
  maxRunMs: 900_000,
  maxResultBytes: 1_048_576,
  waitTimeoutMs: 10_000,
  waitPollIntervalMs: 100,
  writeAttempts: 3,
  writeDelayMs: 50,
  cacheEntries: 1_000,
} as const;

const RESULT_NOT_STORABLE = 'RESULT_NOT_STORABLE';

const retryEverything: IdempotencyErrorPolicy = {
  isFinal: () => false,
  encode: () => {
    throw new Error('unreachable: no error is final under the default policy');
  },
  decode: () => new Error('unreachable: no error is final under the default policy'),
};

/**
 * Create the idempotency service. Options are validated and frozen: a bad value throws a `TypeError` that says
 * what was expected.
 *
 * Timeline of one key (times from the claim):
 *
 * ```text
 *   claim ──► IN_PROGRESS (lockedUntil = now + leaseMs) ──renew every renewIntervalMs──► complete
 *     │            │ a duplicate here: IN_PROGRESS error (or wait)                         │
 *     │            └─ owner crashes: no renewal; after lockedUntil the next claim takes over│
 *     │                                                                                     ▼
 *     │                                                     SUCCEEDED / FAILED: every retry replays
 *     └───────────────────────────────── ttlMs ─────────────────────────────────────► expiresAt: absent
 * ```
 *
 * @example
 * ```ts
 * import { createIdempotencyService, createMemoryStore } from 'rpc-idempotency';
 *
 * const service = createIdempotencyService({ store: createMemoryStore(), leaseMs: 10_000 });
 * ```
 */
export function createIdempotencyService<TStore extends IdempotencyStore = IdempotencyStore>(
  options: IdempotencyServiceOptions<TStore>,
): IdempotencyService<TStore> {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `createIdempotencyService: expected an options object with a store, received ${describeValue(options)}.`,
    );
  }
  const store = options.store;
  if (
    typeof store !== 'object' ||
    store === null ||
    typeof store.claim !== 'function' ||
    typeof store.complete !== 'function'
  ) {
    throw new TypeError(
      `createIdempotencyService: expected options.store to implement IdempotencyStore (claim, get, complete, release, renew, purgeExpired), received ${describeValue(store)}. Pass createMemoryStore() or createPrismaStore(prisma).`,
    );
  }
  const clock = options.clock ?? systemClock;
  const ttlMs = positiveMs('ttlMs', options.ttlMs, DEFAULTS.ttlMs);
  const leaseMs = positiveMs('leaseMs', options.leaseMs, DEFAULTS.leaseMs);
  const renewIntervalMs = positiveMs('renewIntervalMs', options.renewIntervalMs, Math.max(1, Math.floor(leaseMs / 3)));
  if (renewIntervalMs >= leaseMs) {
    throw new TypeError(
      `createIdempotencyService: expected renewIntervalMs (${renewIntervalMs}) to be shorter than leaseMs (${leaseMs}), or the lease lapses between renewals. Lower renewIntervalMs or raise leaseMs.`,
    );
  }
  const retryAfterMs = positiveMs('retryAfterMs', options.retryAfterMs, DEFAULTS.retryAfterMs);
  const maxRunMs = positiveMs('maxRunMs', options.maxRunMs, DEFAULTS.maxRunMs);
  const maxResultBytes = positiveMs('maxResultBytes', options.maxResultBytes, DEFAULTS.maxResultBytes);
  const defaultInFlight = validateInFlight(options.inFlight ?? 'reject');
  const writeAttempts = positiveMs('writeRetry.attempts', options.writeRetry?.attempts, DEFAULTS.writeAttempts);
  const writeDelayMs = nonNegativeMs('writeRetry.delayMs', options.writeRetry?.delayMs, DEFAULTS.writeDelayMs);
  const generateToken = options.generateToken ?? randomUUID;
  const onEvent = options.onEvent;
  const cache =
    options.cache === undefined || options.cache === false
      ? undefined
      : new RecordCache(positiveMs('cache.maxEntries', options.cache.maxEntries, DEFAULTS.cacheEntries));

  /** Local wake-ups: callers waiting on a key this process is running. */
  const waiters = new Map<string, Set<() => void>>();
  const cacheKey = (scope: string, key: string) => `${scope.length}:${scope}\u0000${key}`;
  const wake = (scope: string, key: string) => {
    const id = cacheKey(scope, key);
    const set = waiters.get(id);
    if (!set) return;
    waiters.delete(id);
    for (const resolve of set) resolve();
  };

  const emit = (
    type: IdempotencyEventType,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    extra: Partial<IdempotencyEvent> = {},
  ) => {
    if (!onEvent) return;
    const event: IdempotencyEvent = {
      type,
      scope: base.scope,
      key: base.key,
      procedure: base.procedure,
      durationMs: Math.max(0, clock.now() - base.startedAt),
      ...extra,
    };
    try {
      onEvent(event);
    } catch {
      // A broken metrics hook must not change the outcome of a payment.
    }
  };

  async function withWriteRetry<R>(write: () => Promise<R>): Promise<R> {
    let delayMs = writeDelayMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await write();
      } catch (error) {
        if (attempt >= writeAttempts) throw error;
        if (delayMs > 0) await sleep(clock, delayMs);
        delayMs *= 2;
      }
    }
  }

  function storeUnavailable(procedure: string, key: string, operation: string, cause: unknown): IdempotencyError {
    return new IdempotencyError(
      'STORE_UNAVAILABLE',
      `Idempotency store "${store.name}" failed during ${operation} for ${procedure} (key "${key}"); the procedure did not run. Retry the request with the same key.`,
      { procedure, key, cause },
    );
  }

  async function execute<T>(call: IdempotencyCall<T>): Promise<IdempotencyOutcome<T>> {
    const startedAt = clock.now();
    const procedure = call.procedure;
    const scope = validateScope(call.scope ?? '', procedure);
    const key = validateKey(call.key, procedure, call.required === true);
    const errors = call.errors ?? retryEverything;
    const txStore = call.transaction ? transactionalStore(procedure) : undefined;
    const txOptions = typeof call.transaction === 'object' ? call.transaction : undefined;
    if (key === undefined) {
      const controller = new AbortController();
      try {
        const value = txStore
          ? await txStore.transaction(
              (tx) => call.run({ key: undefined, scope, signal: controller.signal, transaction: tx.client }),
              txOptions,
            )
          : await call.run({ key: undefined, scope, signal: controller.signal, transaction: undefined });
        return { source: 'bypassed', ok: true, value };
      } catch (error) {
        return { source: 'bypassed', ok: false, error };
      }
    }
    const base = { scope, key, procedure, startedAt };
    const ttl = call.ttlMs === undefined ? ttlMs : positiveMs('ttlMs', call.ttlMs, ttlMs);
    const callLease = call.leaseMs === undefined ? leaseMs : positiveMs('leaseMs', call.leaseMs, leaseMs);
    // Transactional mode: the lease covers the whole transaction and is not renewed (see transactionLeaseMs).
    const lease = txStore ? Math.max(callLease, transactionLeaseMs(txOptions)) : callLease;
    const inFlight = call.inFlight === undefined ? defaultInFlight : validateInFlight(call.inFlight);
    const maxBytes =
      call.maxResultBytes === undefined
        ? maxResultBytes
        : positiveMs('maxResultBytes', call.maxResultBytes, maxResultBytes);

    const cached = cache?.get(cacheKey(scope, key), clock.now());
    if (cached) {
      checkFingerprint(cached, call, base);
      return replay(cached, call, errors, base, true);
    }

    const waitDeadline = inFlight === 'reject' ? 0 : startedAt + (inFlight.timeoutMs ?? DEFAULTS.waitTimeoutMs);
    for (;;) {
      const now = clock.now();
      const ownerToken = generateToken();
      let claim: Awaited<ReturnType<IdempotencyStore['claim']>>;
      try {
        claim = await store.claim({
          scope,
          key,
          fingerprint: call.fingerprint,
          procedure,
          ownerToken,
          now,
          lockedUntil: now + lease,
          expiresAt: now + ttl,
        });
      } catch (error) {
        emit('store-error', base, { operation: 'claim', error });
        throw storeUnavailable(procedure, key, 'claim', error);
      }
      if (claim.claimed) {
        if (claim.takenOver) emit('taken-over', base);
        return runOwned(call, errors, base, ownerToken, lease, maxBytes, txStore, txOptions);
      }
      let existing: IdempotencyRecord | null = claim.existing;
      checkFingerprint(existing, call, base);
      if (existing.status !== IdempotencyStatus.IN_PROGRESS) {
        cache?.set(cacheKey(scope, key), existing);
        return replay(existing, call, errors, base, false);
      }
      if (inFlight === 'reject') throw inProgress(existing, base, now);
      existing = await waitForFinish(existing, base, waitDeadline, inFlight.pollIntervalMs);
      if (existing === null) continue; // released or lapsed meanwhile: claim it ourselves
      checkFingerprint(existing, call, base);
      cache?.set(cacheKey(scope, key), existing);
      return replay(existing, call, errors, base, false);
    }
  }

  function transactionalStore(procedure: string): IdempotencyTransactionalStore {
    if (isTransactionalStore(store)) return store;
    throw new TypeError(
      `rpc-idempotency: ${procedure} asks for transactional mode, but store "${store.name}" cannot run transactions. Use createPrismaStore(prisma) (SQLite, PostgreSQL, MySQL/MariaDB), or turn transaction off for this procedure.`,
    );
  }

  function checkFingerprint(
    record: IdempotencyRecord,
    call: IdempotencyCall<unknown>,
    base: { scope: string; key: string; procedure: string; startedAt: number },
  ): void {
    if (record.fingerprint === call.fingerprint) return;
    emit('mismatch', base);
    const where =
      record.procedure === call.procedure
        ? `with a different input to ${call.procedure}`
        : `for ${record.procedure}, not ${call.procedure}`;
    throw new IdempotencyError(
      'FINGERPRINT_MISMATCH',
      `Idempotency key "${base.key}" was already used ${where}; nothing ran. Use a new key for a new request, and the same key only to retry the same request.`,
      { procedure: call.procedure, key: base.key },
    );
  }

  function inProgress(
    record: IdempotencyRecord,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    now: number,
  ): IdempotencyError {
    emit('conflict', base);
    const hint = Math.max(1, Math.min(retryAfterMs, record.lockedUntil - now));
    return new IdempotencyError(
      'IN_PROGRESS',
      `A request with idempotency key "${base.key}" for ${base.procedure} is still running. Retry after ${hint} ms with the same key to get its result.`,
      { procedure: base.procedure, key: base.key, retryAfterMs: hint },
    );
  }

  async function waitForFinish(
    first: IdempotencyRecord,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    deadline: number,
    pollIntervalMs: number | undefined,
  ): Promise<IdempotencyRecord | null> {
    const poll = positiveMs('inFlight.pollIntervalMs', pollIntervalMs, DEFAULTS.waitPollIntervalMs);
    let record = first;
    for (;;) {
      const now = clock.now();
      const remaining = deadline - now;
      if (remaining <= 0) throw inProgress(record, base, now);
      const id = cacheKey(base.scope, base.key);
      let set = waiters.get(id);
      if (!set) {
        set = new Set();
        waiters.set(id, set);
      }
      const waiterSet = set;
      let resolveWake: () => void = () => {};
      const woken = new Promise<void>((resolve) => {
        resolveWake = resolve;
      });
      waiterSet.add(resolveWake);
      const controller = new AbortController();
      try {
        await Promise.race([sleep(clock, Math.min(poll, remaining), controller.signal).catch(() => {}), woken]);
      } finally {
        controller.abort();
        waiterSet.delete(resolveWake);
        if (waiterSet.size === 0 && waiters.get(id) === waiterSet) waiters.delete(id);
      }
      let fresh: IdempotencyRecord | null;
      try {
        fresh = await store.get(base.scope, base.key);
      } catch (error) {
        emit('store-error', base, { operation: 'get', error });
        throw storeUnavailable(base.procedure, base.key, 'get', error);
      }
      if (fresh === null || isRecordClaimable(fresh, clock.now())) return null;
      if (fresh.status !== IdempotencyStatus.IN_PROGRESS) return fresh;
      record = fresh;
    }
  }

  function replay<T>(
    record: IdempotencyRecord,
    call: IdempotencyCall<T>,
    errors: IdempotencyErrorPolicy,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    fromCache: boolean,
  ): IdempotencyOutcome<T> {
    if (record.status === IdempotencyStatus.FAILED && record.resultCode === RESULT_NOT_STORABLE) {
      emit('replayed', base, { ok: false, cached: fromCache });
      return {
        source: 'replayed',
        ok: false,
        error: new IdempotencyError(
          'RESULT_NOT_STORABLE',
          `The request with idempotency key "${base.key}" for ${base.procedure} already ran, but its result could not be stored, so it cannot be replayed. Do not retry with this key; look the outcome up another way.`,
          { procedure: base.procedure, key: base.key },
        ),
      };
    }
    if (record.codec !== null && record.codec !== call.codec.name) {
      emit('mismatch', base);
      throw new IdempotencyError(
        'FINGERPRINT_MISMATCH',
        `Idempotency key "${base.key}" for ${base.procedure} holds a result written by codec "${record.codec}", but this call reads codec "${call.codec.name}" (the key was used through another transport or transformer, or the transformer was renamed, e.g. by a minifier). Use a new key; give both transports the same codec; or pin the codec name (tRPC: the transformerName option).`,
        { procedure: base.procedure, key: base.key },
      );
    }
    const bytes = record.result ?? new Uint8Array(0);
    if (record.status === IdempotencyStatus.SUCCEEDED) {
      let value: T;
      try {
        value = call.codec.decode(bytes);
      } catch (error) {
        throw new IdempotencyError(
          'RESULT_NOT_STORABLE',
          `The stored result for idempotency key "${base.key}" of ${base.procedure} could not be decoded by codec "${call.codec.name}" (${errorMessage(error)}). Do not retry with this key.`,
          { procedure: base.procedure, key: base.key, cause: error },
        );
      }
      emit('replayed', base, { ok: true, cached: fromCache });
      return { source: 'replayed', ok: true, value };
    }
    let error: unknown;
    try {
      error = errors.decode(record.resultCode ?? '', bytes);
    } catch (decodeError) {
      throw new IdempotencyError(
        'RESULT_NOT_STORABLE',
        `The stored error for idempotency key "${base.key}" of ${base.procedure} could not be decoded (${errorMessage(decodeError)}). Do not retry with this key.`,
        { procedure: base.procedure, key: base.key, cause: decodeError },
      );
    }
    emit('replayed', base, { ok: false, cached: fromCache });
    return { source: 'replayed', ok: false, error };
  }

  async function runOwned<T>(
    call: IdempotencyCall<T>,
    errors: IdempotencyErrorPolicy,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    ownerToken: string,
    lease: number,
    maxBytes: number,
    txStore: IdempotencyTransactionalStore | undefined,
    txOptions: IdempotencyTransactionOptions | undefined,
  ): Promise<IdempotencyOutcome<T>> {
    const { scope, key } = base;
    const controller = new AbortController();
    if (txStore) {
      // No heartbeat: the claim's lease already outlives the transaction (transactionLeaseMs), and a renewal
      // from another connection would break the transaction's own completion under RepeatableRead or
      // Serializable on PostgreSQL (40001), or wait for the transaction on SQLite.
      return runInTransaction(call, errors, base, ownerToken, maxBytes, txStore, txOptions, controller.signal);
    }
    const renewEvery = Math.min(renewIntervalMs, Math.max(1, Math.floor(lease / 3)));
    const renewUntil = clock.now() + maxRunMs;
    let timer: unknown;
    let stopped = false;
    const scheduleRenewal = () => {
      timer = clock.setTimeout(async () => {
        if (stopped) return;
        if (clock.now() >= renewUntil) {
          // A hung procedure must not hold its key until the TTL ends: stop renewing and let the lease lapse.
          controller.abort(
            new IdempotencyError(
              'IN_PROGRESS',
              `${base.procedure} ran longer than maxRunMs (${maxRunMs} ms) under idempotency key "${key}"; its lease is no longer renewed and a retry may take the key over once it lapses. Raise maxRunMs if the procedure is healthy but slow.`,
              { procedure: base.procedure, key },
            ),
          );
          return;
        }
        try {
          const renewed = await store.renew(scope, key, ownerToken, clock.now() + lease);
          // A renewal that waited behind this call's own completion (a transaction holding the row) finds the
          // record finished: that is success, not a lost lease.
          if (stopped) return;
          if (!renewed) {
            emit('store-error', base, {
              operation: 'renew',
              error: new Error('lease lost: the record was taken over or removed'),
            });
            controller.abort(
              new IdempotencyError(
                'IN_PROGRESS',
                `The lease on idempotency key "${key}" for ${base.procedure} was lost; another caller may run it now.`,
                { procedure: base.procedure, key },
              ),
            );
            return;
          }
        } catch (error) {
          emit('store-error', base, { operation: 'renew', error });
        }
        if (!stopped) scheduleRenewal();
      }, renewEvery);
    };
    scheduleRenewal();
    const stop = () => {
      stopped = true;
      clock.clearTimeout(timer);
    };

    let value: T;
    try {
      value = await call.run({ key, scope, signal: controller.signal, transaction: undefined });
    } catch (error) {
      stop();
      return failOwned(call, errors, base, ownerToken, maxBytes, error);
    }
    stop();
    const bytes = encodeResult(call, base, value, maxBytes);
    await finish(base, ownerToken, completion(call, bytes));
    emit('executed', base, { ok: true });
    return { source: 'executed', ok: true, value };
  }

  /**
   * Transactional mode:
   *
   * ```text
   *   claim (committed) ─► BEGIN ─► procedure writes via tx ─► fenced complete via tx ─► COMMIT
   *                          └─ procedure throws / fenced / crash ─► ROLLBACK: no writes, record still claimable
   * ```
   */
  async function runInTransaction<T>(
    call: IdempotencyCall<T>,
    errors: IdempotencyErrorPolicy,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    ownerToken: string,
    maxBytes: number,
    txStore: IdempotencyTransactionalStore,
    txOptions: IdempotencyTransactionOptions | undefined,
    signal: AbortSignal,
  ): Promise<IdempotencyOutcome<T>> {
    const { scope, key } = base;
    let procedureFailure: { error: unknown } | undefined;
    let fenced = false;
    let value: T;
    try {
      value = await txStore.transaction(async (tx) => {
        let result: T;
        try {
          result = await call.run({ key, scope, signal, transaction: tx.client });
        } catch (error) {
          procedureFailure = { error };
          throw error;
        }
        const bytes = encodeResult(call, base, result, maxBytes);
        if (!(await tx.complete({ scope, key, ownerToken, ...completion(call, bytes) }))) {
          fenced = true;
          throw new Error('fenced: the record was taken over; rolling back the procedure');
        }
        return result;
      }, txOptions);
    } catch (error) {
      if (procedureFailure) return failOwned(call, errors, base, ownerToken, maxBytes, procedureFailure.error);
      if (fenced) {
        emit('store-error', base, {
          operation: 'complete',
          error: new Error('fenced: the record was taken over by another caller; the procedure was rolled back'),
        });
        wake(scope, key);
        throw new IdempotencyError(
          'IN_PROGRESS',
          `The lease on idempotency key "${key}" for ${base.procedure} lapsed and another caller took it over, so this run was rolled back. Retry with the same key to get that caller's result.`,
          { procedure: base.procedure, key, retryAfterMs },
        );
      }
      // The transaction itself failed (commit error, timeout, lost connection): everything rolled back, so the
      // key is released for a clean retry.
      return failOwned(call, retryEverything, base, ownerToken, maxBytes, error);
    }
    wake(scope, key);
    emit('executed', base, { ok: true });
    return { source: 'executed', ok: true, value };
  }

  function completion<T>(
    call: IdempotencyCall<T>,
    bytes: Uint8Array | undefined,
  ): Pick<IdempotencyRecord, 'result' | 'resultCode' | 'codec'> & {
    status: typeof IdempotencyStatus.SUCCEEDED | typeof IdempotencyStatus.FAILED;
  } {
    return {
      status: bytes ? IdempotencyStatus.SUCCEEDED : IdempotencyStatus.FAILED,
      result: bytes ?? null,
      resultCode: bytes ? null : RESULT_NOT_STORABLE,
      codec: bytes ? call.codec.name : null,
    };
  }

  /** Encode a result for storage; `undefined` (and a `not-storable` event) when it cannot be stored. */
  function encodeResult<T>(
    call: IdempotencyCall<T>,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    value: T,
    maxBytes: number,
  ): Uint8Array | undefined {
    try {
      const bytes = call.codec.encode(value);
      if (!(bytes instanceof Uint8Array)) {
        throw new TypeError(
          `codec "${call.codec.name}" returned ${describeValue(bytes)} from encode; expected a Uint8Array`,
        );
      }
      if (bytes.byteLength > maxBytes) throw tooLarge(bytes.byteLength, maxBytes, 'result');
      return bytes;
    } catch (error) {
      emit('not-storable', base, { error });
      return undefined;
    }
  }

  /** The procedure failed: store a final error, or release the record for a retry. */
  async function failOwned<T>(
    call: IdempotencyCall<T>,
    errors: IdempotencyErrorPolicy,
    base: { scope: string; key: string; procedure: string; startedAt: number },
    ownerToken: string,
    maxBytes: number,
    error: unknown,
  ): Promise<IdempotencyOutcome<T>> {
    const { scope, key } = base;
    let final = false;
    try {
      final = errors.isFinal(error);
    } catch {
      final = false;
    }
    if (final) {
      let encoded: { code: string; bytes: Uint8Array } | undefined;
      try {
        encoded = errors.encode(error);
      } catch (encodeError) {
        emit('not-storable', base, { error: encodeError });
      }
      if (encoded && encoded.bytes.byteLength > maxBytes) {
        emit('not-storable', base, { error: tooLarge(encoded.bytes.byteLength, maxBytes, 'error') });
        encoded = undefined;
      }
      await finish(base, ownerToken, {
        status: IdempotencyStatus.FAILED,
        result: encoded ? encoded.bytes : null,
        resultCode: encoded ? encoded.code : RESULT_NOT_STORABLE,
        codec: encoded ? call.codec.name : null,
      });
    } else {
      try {
        // `false` means the fence refused us: our lease lapsed and another caller owns the record now. Nothing was
        // released, so reporting `released` would tell metrics a retry can run when in fact the new owner's
        // record stands.
        if (await withWriteRetry(() => store.release(scope, key, ownerToken))) {
          emit('released', base);
        } else {
          emit('store-error', base, {
            operation: 'release',
            error: new Error(
              'fenced: the record was taken over by another caller after this lease lapsed; it was left as it is',
            ),
          });
        }
      } catch (releaseError) {
        emit('store-error', base, { operation: 'release', error: releaseError });
      }
      wake(scope, key);
    }
    emit('executed', base, { ok: false });
    return { source: 'executed', ok: false, error };
  }

  async function finish(
    base: { scope: string; key: string; procedure: string; startedAt: number },
    ownerToken: string,
    outcome: Pick<IdempotencyRecord, 'result' | 'resultCode' | 'codec'> & {
      status: typeof IdempotencyStatus.SUCCEEDED | typeof IdempotencyStatus.FAILED;
    },
  ): Promise<void> {
    const { scope, key } = base;
    try {
      const completed = await withWriteRetry(() => store.complete({ scope, key, ownerToken, ...outcome }));
      if (!completed) {
        emit('store-error', base, {
          operation: 'complete',
          error: new Error(
            'fenced: the record was taken over by another caller after this lease lapsed; the result was not stored',
          ),
        });
      }
    } catch (error) {
      emit('store-error', base, { operation: 'complete', error });
    }
    wake(scope, key);
  }

  async function purgeExpired(purgeOptions: IdempotencyPurgeOptions = {}): Promise<number> {
    const batchSize = positiveMs('batchSize', purgeOptions.batchSize, 1_000);
    const maxBatches = purgeOptions.maxBatches ?? Number.POSITIVE_INFINITY;
    let deleted = 0;
    let batches = 0;
    while (batches < maxBatches) {
      const count = await store.purgeExpired({ now: clock.now(), limit: batchSize });
      deleted += count;
      batches++;
      purgeOptions.onProgress?.({ deleted, batches });
      if (count < batchSize) break;
    }
    return deleted;
  }

  return Object.freeze({ store, clock, maxResultBytes, execute, purgeExpired });
}

function tooLarge(actual: number, limit: number, what: string): RangeError {
  return new RangeError(
    `the ${what} is ${actual} bytes after encoding, more than maxResultBytes (${limit}); raise maxResultBytes or return less`,
  );
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function positiveMs(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(
      `rpc-idempotency: expected option ${name} to be a positive integer, received ${describeValue(value)}.`,
    );
  }
  return value;
}

function nonNegativeMs(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(
      `rpc-idempotency: expected option ${name} to be a non-negative integer, received ${describeValue(value)}.`,
    );
  }
  return value;
}

function validateInFlight(policy: IdempotencyInFlightPolicy): IdempotencyInFlightPolicy {
  if (policy === 'reject') return policy;
  if (typeof policy === 'object' && policy !== null && policy.wait === true) {
    positiveMs('inFlight.timeoutMs', policy.timeoutMs, DEFAULTS.waitTimeoutMs);
    positiveMs('inFlight.pollIntervalMs', policy.pollIntervalMs, DEFAULTS.waitPollIntervalMs);
    return policy;
  }
  throw new TypeError(
    `createIdempotencyService: expected inFlight to be 'reject' or { wait: true, timeoutMs?, pollIntervalMs? }, received ${describeValue(policy)}.`,
  );
}
