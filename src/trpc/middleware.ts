import { type TRPC_ERROR_CODE_KEY, TRPCError, type TRPCMiddlewareFunction, type TRPCProcedureType } from '@trpc/server';
import type { IdempotencyClock } from '../core/clock.js';
import type { IdempotencyCodec, IdempotencyErrorPolicy } from '../core/codec.js';
import { describeValue, isIdempotencyError } from '../core/errors.js';
import type { IdempotencyEventListener } from '../core/events.js';
import { computeFingerprint } from '../core/fingerprint.js';
import { validateKey } from '../core/key.js';
import {
  createIdempotencyService,
  type IdempotencyInFlightPolicy,
  type IdempotencyOutcome,
  type IdempotencyService,
} from '../core/service.js';
import { describeTransactionFailure, validateTransactionOption } from '../core/transaction.js';
import {
  type IdempotencyStore,
  type IdempotencyTransactionalStore,
  type IdempotencyTransactionOptions,
  isTransactionalStore,
} from '../stores/contract.js';
import { createTrpcResultCodec, type IdempotencyTrpcTransformer } from './codec.js';
import {
  defaultResponseHeaders,
  type IdempotencyTrpcResponseHeaders,
  isBatchRequest,
  readKeyFromContext,
} from './context.js';
import {
  createTrpcErrorPolicy,
  type IdempotencyTrpcFinalErrors,
  isFinalByDefault,
  toTRPCError,
  trpcErrorFinality,
} from './errors.js';
import { replayedResult, type TrpcMiddlewareResult } from './internal.js';
import { DEFAULT_BATCH_KEYS_HEADER, DEFAULT_KEY_HEADER, REPLAYED_HEADER, REPLAYED_INDEXES_HEADER } from './protocol.js';
import { callState, type IdempotencyTrpcContextOverrides, NO_TRANSACTION } from './transaction.js';

/**
 * What the middleware's callbacks (`getKey`, `scope`, `fingerprint`) learn about the call.
 *
 * @example
 * ```ts
 * scope: (ctx: Context, info: IdempotencyTrpcCallInfo) => `${ctx.tenantId}`,
 * ```
 */
export interface IdempotencyTrpcCallInfo {
  /** The procedure's path, e.g. `payments.create`: the procedure identity in records and fingerprints. */
  readonly path: string;
  readonly type: TRPCProcedureType;
  /**
   * The call's position in a batched request; `0` when not batched. `undefined` on @trpc/server versions that do
   * not pass it to middlewares yet (it arrived in a recent @trpc/server 11 release; 11.25 has it).
   */
  readonly batchIndex: number | undefined;
  /** The procedure's `meta`, as declared with `.meta()`. */
  readonly meta: unknown;
}

/**
 * Returns the data that identifies a request for the fingerprint, from the raw input (after the transformer,
 * before validation). It is hashed together with the procedure path, so a key reused on another procedure is
 * always a mismatch. Use it to leave out fields that differ between retries of one request (a client timestamp).
 *
 * @default the raw input itself (canonical JSON: object key order never matters)
 * @example
 * ```ts
 * fingerprint: (input) => ({ ...(input as object), sentAt: undefined }),
 * ```
 */
export type IdempotencyTrpcFingerprint = (input: unknown, info: IdempotencyTrpcCallInfo) => unknown;

/**
 * Settings one procedure can override through its meta (`.meta({ idempotency: { ... } })`), and the router-wide
 * defaults of the same names on {@link idempotencyMiddleware}. Durations are milliseconds.
 *
 * @example
 * ```ts
 * t.procedure.meta({ idempotency: { required: true, ttlMs: 3_600_000 } }).mutation(...)
 * ```
 */
export interface IdempotencyTrpcProcedureOptions {
  /** Refuse calls without a key with `KEY_MISSING` (400). @default false: a call without a key just runs */
  readonly required?: boolean;
  /** How long a record counts after its creation. @default the service's ttlMs (24 h) */
  readonly ttlMs?: number;
  /** How long a claim holds the key without renewal (renewed while the procedure runs). @default the service's leaseMs (30 s) */
  readonly leaseMs?: number;
  /** What a call does when its key is running elsewhere: `'reject'` (409 + `Retry-After`) or `{ wait: true }`. @default the service's inFlight ('reject') */
  readonly inFlight?: IdempotencyInFlightPolicy;
  /** Results larger than this, encoded, are not stored; retries get `RESULT_NOT_STORABLE`. @default the service's maxResultBytes (1_048_576) */
  readonly maxResultBytes?: number;
  /** Which procedure errors are stored and replayed. @default {@link trpcErrorFinality} */
  readonly isFinalError?: IdempotencyTrpcFinalErrors;
  /** What identifies a request besides its path. @default the raw input */
  readonly fingerprint?: IdempotencyTrpcFingerprint;
  /**
   * Transactional mode (mutations only): run the procedure inside one store transaction and commit the
   * idempotency record with it, so the procedure's writes through `ctx.idempotency.tx` (see
   * {@link requireTransaction}) and the record commit together or not at all. `true` uses the database's
   * defaults; an object passes `isolationLevel`, `timeoutMs` and `maxWaitMs` to the transaction. Calls without a
   * key run in a transaction too, so the procedure can always rely on `tx`.
   *
   * A final error rolls the procedure's writes back and is stored outside the transaction, so retries replay
   * the error and nothing of that attempt persists. Requires a transactional store (`createPrismaStore`); any
   * other store is refused when the middleware is created (router-wide) or at the procedure's first call
   * (meta). The lease is then at least `maxWaitMs + timeoutMs + 1_000` and is not renewed.
   * @default false
   * @example { transaction: { isolationLevel: 'Serializable', timeoutMs: 10_000 } }
   */
  readonly transaction?: boolean | IdempotencyTransactionOptions;
}

/**
 * The meta key the middleware reads. Declare it on your meta type so `.meta({ idempotency })` type-checks:
 * `initTRPC.meta<IdempotencyTrpcMeta>()`, or extend it with your own meta fields. `idempotency: false` opts a
 * mutation out (no key is read, nothing is stored).
 *
 * @example
 * ```ts
 * const t = initTRPC.context<Context>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
 * const createPayment = idempotentProcedure.meta({ idempotency: { required: true } }).mutation(...);
 * const logEvent = idempotentProcedure.meta({ idempotency: false }).mutation(...);
 * ```
 */
export interface IdempotencyTrpcMeta {
  /** Per-procedure settings, `false` to opt out, `true` (or absent) for the router-wide defaults. */
  readonly idempotency?: boolean | IdempotencyTrpcProcedureOptions;
}

/**
 * Options of {@link idempotencyMiddleware}: where records live (`store` or `service`), how to find the key and
 * scope, and the router-wide defaults of {@link IdempotencyTrpcProcedureOptions}.
 *
 * @example
 * ```ts
 * idempotencyMiddleware<Context>({
 *   store: createPrismaStore(prisma),
 *   transformer: superjson,
 *   scope: (ctx) => ctx.tenantId,
 * });
 * ```
 */
export interface IdempotencyTrpcMiddlewareOptions<TContext = unknown, TTransaction = unknown>
  extends IdempotencyTrpcProcedureOptions {
  /**
   * Where records live; the middleware creates a service with `clock` and `onEvent`. Give this or `service`.
   * A transactional store (`createPrismaStore(prisma)`) also types `ctx.idempotency.tx` as its transaction
   * client.
   */
  readonly store?: IdempotencyStore | IdempotencyTransactionalStore<TTransaction>;
  /**
   * A service from `createIdempotencyService`, to share one (and its options: cache, write retries, ...) between
   * transports. Give this or `store`. `ttlMs`, `leaseMs`, `inFlight` and `maxResultBytes` given here override
   * the service's per call.
   */
  readonly service?: IdempotencyService<IdempotencyStore | IdempotencyTransactionalStore<TTransaction>>;
  /** With `store`: the source of time. @default systemClock */
  readonly clock?: IdempotencyClock;
  /** With `store`: receives one event per decision (executed, replayed, conflict, ...). @default none */
  readonly onEvent?: IdempotencyEventListener;
  /**
   * The transformer your `initTRPC.create()` got (e.g. `superjson`, or `t._config.transformer`). Results are
   * stored through it, so replays return the same types (`Date`, `bigint`, `Map`, `Set`). A middleware cannot
   * see the router's config, so pass it here.
   * @default none: results are stored as JSON; a result JSON would change (a `Date`, ...) is not stored and
   * retries get `RESULT_NOT_STORABLE`, while the first caller still gets it
   */
  readonly transformer?: IdempotencyTrpcTransformer;
  /** A stable name for a transformer that has no class or function name (a plain object). @default its class or function name */
  readonly transformerName?: string;
  /** The request header of a non-batched call's key. @default 'Idempotency-Key' */
  readonly headerName?: string;
  /** The request header of a batched request's keys (JSON array by batch index). @default 'Idempotency-Keys' */
  readonly batchHeaderName?: string;
  /**
   * Read the key yourself (from another header, a cookie, the input...); return `undefined` for none. It replaces
   * the header lookup, batch handling included, so it must return the key of *this* call (`info.batchIndex`).
   * @default the `Idempotency-Key` / `Idempotency-Keys` headers of `ctx.req` (standalone, express, fetch adapters)
   */
  readonly getKey?: (ctx: TContext, info: IdempotencyTrpcCallInfo) => unknown;
  /**
   * Who owns the key: records are unique per (scope, key), and a key never replays another scope's result.
   * Derive it from the authenticated tenant, user or API client.
   * @default '' (one global key space: **unsafe for multi-tenant apps**: tenant B sending tenant A's key would
   * receive tenant A's stored result)
   */
  readonly scope?: (ctx: TContext, info: IdempotencyTrpcCallInfo) => string | Promise<string>;
  /**
   * Where to set `Idempotent-Replayed` and `Retry-After`. Return `undefined` to skip.
   * @default `ctx.resHeaders` (fetch adapter) or `ctx.res` (standalone, express), when createContext returned them
   */
  readonly responseHeaders?: (ctx: TContext) => IdempotencyTrpcResponseHeaders | undefined;
}

/**
 * The type of the middleware {@link idempotencyMiddleware} returns: it fits `.use()` of any procedure whose
 * context extends `TContext`, keeps the context types of earlier middlewares, and adds one key,
 * `ctx.idempotency` ({@link IdempotencyTrpcContext}: the call's key, and the transaction client `tx` typed as
 * `TTransaction`). It passes that context on every path (`next({ ctx })` with one shape), so later middlewares
 * and resolvers see it typed.
 *
 * @example
 * ```ts
 * const idempotency: IdempotencyTrpcMiddleware<Context, Prisma.TransactionClient> = idempotencyMiddleware({
 *   store: createPrismaStore(prisma),
 *   scope: (ctx: Context) => ctx.tenantId,
 * });
 * const idempotentProcedure = t.procedure.use(idempotency);
 * ```
 */
export type IdempotencyTrpcMiddleware<TContext = unknown, TTransaction = unknown> = TRPCMiddlewareFunction<
  TContext,
  unknown,
  object,
  IdempotencyTrpcContextOverrides<TTransaction>,
  unknown
>;

interface ResolvedPolicy {
  readonly required: boolean;
  readonly ttlMs: number | undefined;
  readonly leaseMs: number | undefined;
  readonly inFlight: IdempotencyInFlightPolicy | undefined;
  readonly maxResultBytes: number | undefined;
  readonly errors: IdempotencyErrorPolicy;
  readonly fingerprint: IdempotencyTrpcFingerprint | undefined;
  /** `undefined` when not transactional; `true` or the options otherwise. */
  readonly transaction: true | IdempotencyTransactionOptions | undefined;
}

/** What policy resolution needs to know about the store, to refuse transactional mode where it cannot work. */
interface StoreFacts {
  readonly name: string;
  readonly transactional: boolean;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Make tRPC mutations safe to retry: a mutation that carries an idempotency key runs at most once per
 * (scope, key); retries get the stored result (or stored final error), marked `Idempotent-Replayed: true`.
 * Queries and subscriptions pass through untouched, and so do mutations without a key unless they require one.
 *
 * Put it on a base procedure, after authentication (so `scope` can use the user) and before `.input()` (so a
 * validation error is stored like any final error). Per-procedure settings come from `meta.idempotency`
 * ({@link IdempotencyTrpcMeta}).
 *
 * One call, as the middleware sees it:
 *
 * ```text
 *  request ─► key from Idempotency-Key (or Idempotency-Keys[batchIndex]) ─► none: run normally (or 400 if required)
 *             │
 *             ├─ claim (scope, key) ─ won ──► run the procedure ─► store result / final error, or release
 *             └─ lost ─► other input:       422 UNPROCESSABLE_CONTENT, nothing runs
 *                        finished:          replay it + Idempotent-Replayed: true
 *                        still running:     409 CONFLICT + Retry-After (or wait, then replay)
 *                        store unreachable: 503 SERVICE_UNAVAILABLE, nothing runs
 * ```
 *
 * Every procedure built on it gets `ctx.idempotency` ({@link IdempotencyTrpcContext}): the call's key and, in
 * transactional mode (`transaction: true`, see {@link IdempotencyTrpcProcedureOptions.transaction}), the
 * transaction client `tx` whose writes commit together with the record. `tx` is typed as the store's
 * transaction client when the store's type is known: pass `store` (or `service`) and let TypeScript infer the
 * type parameters (annotate `scope: (ctx: Context) => ...`), or give both explicitly:
 * `idempotencyMiddleware<Context, Prisma.TransactionClient>({ ... })`. With only `<Context>`, `tx` is `unknown`.
 *
 * Errors reach clients per {@link idempotencyTrpcErrorCodes}; add {@link idempotencyErrorData} to your
 * `errorFormatter` to give them the idempotency code too.
 *
 * @example
 * ```ts
 * import { initTRPC } from '@trpc/server';
 * import superjson from 'superjson';
 * import { createMemoryStore } from 'rpc-idempotency';
 * import { idempotencyMiddleware, type IdempotencyTrpcMeta } from 'rpc-idempotency/trpc';
 *
 * const t = initTRPC.context<Context>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
 * const idempotentProcedure = t.procedure.use(
 *   idempotencyMiddleware<Context>({
 *     store: createMemoryStore(),
 *     transformer: superjson,
 *     scope: (ctx) => ctx.tenantId,
 *   }),
 * );
 * export const appRouter = t.router({
 *   createPayment: idempotentProcedure
 *     .meta({ idempotency: { required: true } })
 *     .input(z.object({ amount: z.number() }))
 *     .mutation(({ input }) => payments.create(input)),
 * });
 * ```
 */
export function idempotencyMiddleware<TContext = unknown, TTransaction = unknown>(
  options: IdempotencyTrpcMiddlewareOptions<TContext, TTransaction>,
): IdempotencyTrpcMiddleware<TContext, TTransaction> {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `idempotencyMiddleware: expected an options object with a store or a service, received ${describeValue(options)}.`,
    );
  }
  const service = resolveService(options);
  const codec: IdempotencyCodec<unknown> = createTrpcResultCodec(options.transformer, options.transformerName);
  const headerName = headerOption('headerName', options.headerName, DEFAULT_KEY_HEADER);
  const batchHeaderName = headerOption('batchHeaderName', options.batchHeaderName, DEFAULT_BATCH_KEYS_HEADER);
  if (headerName.toLowerCase() === batchHeaderName.toLowerCase()) {
    throw new TypeError(
      `idempotencyMiddleware: expected headerName and batchHeaderName to differ, both are "${headerName}". A batched request needs its own header so a key is never given to the wrong call.`,
    );
  }
  const getKey = functionOption('getKey', options.getKey);
  const scopeOf = functionOption('scope', options.scope);
  const findResponseHeaders = functionOption('responseHeaders', options.responseHeaders) ?? defaultResponseHeaders;
  const responseHeadersOf = (ctx: TContext): IdempotencyTrpcResponseHeaders | undefined => {
    try {
      return findResponseHeaders(ctx);
    } catch {
      return undefined; // marker headers are best effort; they never fail a call
    }
  };
  const store: StoreFacts = {
    name: service.store.name,
    transactional: isTransactionalStore(service.store),
  };
  const base = resolvePolicy(options, undefined, 'idempotencyMiddleware', store);
  // Meta objects are created once per procedure: resolve (and validate) each once.
  const policies = new WeakMap<object, ResolvedPolicy | false>();
  const policyFor = (meta: unknown): ResolvedPolicy | false => {
    const setting = (meta as IdempotencyTrpcMeta | undefined)?.idempotency;
    if (setting === undefined || setting === true) return base;
    if (setting === false) return false;
    let resolved = policies.get(setting as object);
    if (resolved === undefined) {
      resolved = resolvePolicy(setting, base, 'meta.idempotency', store);
      policies.set(setting as object, resolved);
    }
    return resolved;
  };

  const middleware: IdempotencyTrpcMiddleware<TContext, TTransaction> = async (opts) => {
    // Every path passes the same context shape on: a middleware that mixes next() and next({ ctx }) loses the
    // added keys in the resolver's types.
    const pass = (reason: string) =>
      opts.next({ ctx: { idempotency: callState<TTransaction>(opts.path, undefined, undefined, reason) } });
    if (opts.type !== 'mutation') return pass(NO_TRANSACTION.notMutation);
    const policy = policyFor(opts.meta);
    if (policy === false) return pass(NO_TRANSACTION.optedOut);
    const ctx = opts.ctx as TContext;
    // Typed as a number, but missing at runtime on tRPC versions before it existed: never guess it.
    const reported: unknown = (opts as { batchIndex?: unknown }).batchIndex;
    const batchIndex = typeof reported === 'number' ? reported : undefined;
    const info: IdempotencyTrpcCallInfo = { path: opts.path, type: opts.type, batchIndex, meta: opts.meta };
    let key: string | undefined;
    try {
      const received = getKey
        ? await getKey(ctx, info)
        : readKeyFromContext(ctx, { headerName, batchHeaderName, batchIndex, procedure: opts.path });
      key = validateKey(received, opts.path, policy.required);
    } catch (error) {
      throw isIdempotencyError(error) ? toTRPCError(error) : error;
    }
    // A transactional procedure runs in a transaction even without a key, so it can always rely on its tx.
    if (key === undefined && policy.transaction === undefined) return pass(NO_TRANSACTION.notEnabled);

    let scope = '';
    let fingerprint = '';
    if (key !== undefined) {
      scope = scopeOf ? await scopeOf(ctx, info) : '';
      const rawInput = await opts.getRawInput();
      const identity = policy.fingerprint ? await policy.fingerprint(rawInput, info) : rawInput;
      fingerprint = computeFingerprint(opts.path, identity);
    }

    let live: TrpcMiddlewareResult | undefined;
    let outcome: IdempotencyOutcome<unknown>;
    try {
      outcome = await service.execute({
        procedure: opts.path,
        key,
        scope,
        fingerprint,
        required: policy.required,
        codec,
        errors: policy.errors,
        ttlMs: policy.ttlMs,
        leaseMs: policy.leaseMs,
        inFlight: policy.inFlight,
        maxResultBytes: policy.maxResultBytes,
        transaction: policy.transaction,
        run: async ({ transaction }) => {
          const tx = transaction as TTransaction | undefined;
          const result = await opts.next({
            ctx: { idempotency: callState(opts.path, key, tx, NO_TRANSACTION.notEnabled) },
          });
          live = result;
          if (!result.ok) throw result.error;
          return result.data;
        },
      });
    } catch (error) {
      if (!isIdempotencyError(error)) throw error;
      if (error.code === 'IN_PROGRESS' && error.retryAfterMs !== undefined) {
        setRetryAfter(responseHeadersOf(ctx), error.retryAfterMs);
      }
      throw toTRPCError(error);
    }
    if (outcome.source !== 'replayed') {
      // Transactional mode: the procedure may have returned, yet its transaction failed (timeout, commit error):
      // its writes are gone, so its result must not reach the client as a success.
      if (policy.transaction !== undefined && !outcome.ok && live?.ok !== false) {
        throw new TRPCError({
          code: 'INTERNAL_SERVER_ERROR',
          message: describeTransactionFailure(opts.path, key, outcome.error, live !== undefined),
          cause: outcome.error,
        });
      }
      if (live !== undefined) return live;
    }
    if (outcome.source === 'replayed') markReplayed(responseHeadersOf(ctx), ctx, batchIndex);
    if (outcome.ok) return replayedResult(outcome.value);
    throw isIdempotencyError(outcome.error) ? toTRPCError(outcome.error) : outcome.error;
  };
  return middleware;
}

function resolveService(options: IdempotencyTrpcMiddlewareOptions<never, unknown>): IdempotencyService {
  const { service, store } = options;
  if (service !== undefined && store !== undefined) {
    throw new TypeError(
      'idempotencyMiddleware: expected either store or service, received both. Pass store to let the middleware create its service, or a service you created with createIdempotencyService.',
    );
  }
  if (service !== undefined) {
    if (typeof service !== 'object' || service === null || typeof service.execute !== 'function') {
      throw new TypeError(
        `idempotencyMiddleware: expected service to be an IdempotencyService from createIdempotencyService, received ${describeValue(service)}.`,
      );
    }
    for (const name of ['clock', 'onEvent'] as const) {
      if (options[name] !== undefined) {
        throw new TypeError(
          `idempotencyMiddleware: ${name} is an option of the service, but a ready service was given. Pass ${name} to createIdempotencyService instead.`,
        );
      }
    }
    return service;
  }
  if (store === undefined) {
    throw new TypeError(
      'idempotencyMiddleware: expected a store (e.g. createMemoryStore() or createPrismaStore(prisma)) or a service, received neither.',
    );
  }
  return createIdempotencyService({
    store,
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    ...(options.onEvent === undefined ? {} : { onEvent: options.onEvent }),
  });
}

function resolvePolicy(
  options: IdempotencyTrpcProcedureOptions,
  parent: ResolvedPolicy | undefined,
  where: string,
  store: StoreFacts,
): ResolvedPolicy {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      `${where}: expected true, false or an object of idempotency settings, received ${describeValue(options)}.`,
    );
  }
  if (options.required !== undefined && typeof options.required !== 'boolean') {
    throw new TypeError(`${where}: expected required to be a boolean, received ${describeValue(options.required)}.`);
  }
  const errors =
    options.isFinalError === undefined
      ? (parent?.errors ?? createTrpcErrorPolicy(isFinalByDefault))
      : createTrpcErrorPolicy(finalErrorPredicate(options.isFinalError, where));
  const transactionOption = validateTransactionOption(options.transaction, where);
  const transaction =
    transactionOption === undefined ? parent?.transaction : transactionOption === false ? undefined : transactionOption;
  if (transaction !== undefined && !store.transactional) {
    throw new TypeError(
      `${where}: transactional mode needs a store that can run transactions, but store "${store.name}" cannot. Use createPrismaStore(prisma) (SQLite, PostgreSQL, MySQL/MariaDB), or remove transaction.`,
    );
  }
  return {
    required: options.required ?? parent?.required ?? false,
    ttlMs: positiveInteger(where, 'ttlMs', options.ttlMs) ?? parent?.ttlMs,
    leaseMs: positiveInteger(where, 'leaseMs', options.leaseMs) ?? parent?.leaseMs,
    inFlight: inFlightOption(where, options.inFlight) ?? parent?.inFlight,
    maxResultBytes: positiveInteger(where, 'maxResultBytes', options.maxResultBytes) ?? parent?.maxResultBytes,
    errors,
    fingerprint: functionOption('fingerprint', options.fingerprint, where) ?? parent?.fingerprint,
    transaction,
  };
}

function finalErrorPredicate(value: IdempotencyTrpcFinalErrors, where: string): (error: TRPCError) => boolean {
  if (typeof value === 'function') return value;
  if (Array.isArray(value)) {
    for (const code of value as unknown[]) {
      if (typeof code !== 'string' || !Object.hasOwn(trpcErrorFinality, code)) {
        throw new TypeError(
          `${where}: expected isFinalError to list tRPC error codes (${Object.keys(trpcErrorFinality).join(', ')}), received ${describeValue(code)}.`,
        );
      }
    }
    const codes = new Set<string>(value as readonly TRPC_ERROR_CODE_KEY[]);
    return (error) => codes.has(error.code);
  }
  throw new TypeError(
    `${where}: expected isFinalError to be a list of tRPC error codes or a function (error) => boolean, received ${describeValue(value)}.`,
  );
}

function positiveInteger(where: string, name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(
      `${where}: expected ${name} to be a positive integer (milliseconds or bytes), received ${describeValue(value)}.`,
    );
  }
  return value;
}

function inFlightOption(where: string, value: unknown): IdempotencyInFlightPolicy | undefined {
  if (value === undefined || value === 'reject') return value;
  const policy = value as { wait?: unknown; timeoutMs?: unknown; pollIntervalMs?: unknown } | null;
  if (typeof policy === 'object' && policy !== null && policy.wait === true) {
    positiveInteger(where, 'inFlight.timeoutMs', policy.timeoutMs);
    positiveInteger(where, 'inFlight.pollIntervalMs', policy.pollIntervalMs);
    return value as IdempotencyInFlightPolicy;
  }
  throw new TypeError(
    `${where}: expected inFlight to be 'reject' or { wait: true, timeoutMs?, pollIntervalMs? }, received ${describeValue(value)}.`,
  );
}

function functionOption<F>(name: string, value: F | undefined, where = 'idempotencyMiddleware'): F | undefined {
  if (value === undefined || typeof value === 'function') return value;
  throw new TypeError(`${where}: expected ${name} to be a function, received ${describeValue(value)}.`);
}

function headerOption(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value === 'string' && TOKEN.test(value)) return value;
  throw new TypeError(
    `idempotencyMiddleware: expected ${name} to be an HTTP header name (letters, digits and !#$%&'*+-.^_\`|~), received ${describeValue(value)}.`,
  );
}

function safely(action: () => void): void {
  try {
    action();
  } catch {
    // A marker header must never fail a call (e.g. a custom responseHeaders whose response already started).
  }
}

function markReplayed(
  headers: IdempotencyTrpcResponseHeaders | undefined,
  ctx: unknown,
  batchIndex: number | undefined,
): void {
  if (!headers) return;
  const batch = isBatchRequest(ctx) ?? (batchIndex ?? 0) > 0;
  safely(() => {
    if (!batch) {
      headers.set(REPLAYED_HEADER, 'true');
      return;
    }
    if (batchIndex === undefined) return;
    const indexes = new Set(
      (headers.get(REPLAYED_INDEXES_HEADER) ?? '')
        .split(',')
        .map((item) => item.trim())
        .filter((item) => /^\d+$/.test(item))
        .map(Number),
    );
    indexes.add(batchIndex);
    headers.set(REPLAYED_INDEXES_HEADER, [...indexes].sort((a, b) => a - b).join(','));
  });
}

function setRetryAfter(headers: IdempotencyTrpcResponseHeaders | undefined, retryAfterMs: number): void {
  if (!headers) return;
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  safely(() => {
    // In a batch, several calls may ask: the longest wait wins.
    const current = Number(headers.get('Retry-After'));
    headers.set('Retry-After', String(Number.isFinite(current) && current > seconds ? current : seconds));
  });
}
