/**
 * rpc-idempotency for tRPC v11 clients: a link that gives every mutation one idempotency key for all its
 * attempts, and the headers helper that sends it. Safe for browsers (no Node built-ins).
 *
 * @packageDocumentation
 */
import { type Operation, TRPCClientError, type TRPCLink } from '@trpc/client';
import type { AnyTRPCRouter } from '@trpc/server';
import { observable } from '@trpc/server/observable';
import { describeValue, IdempotencyErrorCode } from '../core/errors.js';
import {
  DEFAULT_BATCH_KEYS_HEADER,
  DEFAULT_KEY_HEADER,
  formatBatchKeys,
  IDEMPOTENCY_KEY_CONTEXT,
  type IdempotencyTrpcErrorData,
} from './protocol.js';

export {
  DEFAULT_BATCH_KEYS_HEADER,
  DEFAULT_KEY_HEADER,
  IDEMPOTENCY_KEY_CONTEXT,
  type IdempotencyTrpcErrorData,
  REPLAYED_HEADER,
  REPLAYED_INDEXES_HEADER,
} from './protocol.js';

/**
 * Options of {@link idempotencyLink}.
 *
 * @example
 * ```ts
 * idempotencyLink({ generateKey: () => ulid() });
 * ```
 */
export interface IdempotencyLinkOptions {
  /**
   * Make a key for an operation that has none in its context. Keys must be unique per logical request and
   * unguessable: 1..255 printable ASCII characters.
   * @default crypto.randomUUID() (a version 4 UUID; from crypto.getRandomValues where randomUUID is missing,
   * e.g. browser pages served over plain HTTP)
   */
  readonly generateKey?: (op: Operation) => string;
  /**
   * Which operations get a key.
   * @default mutations only (`op.type === 'mutation'`)
   */
  readonly filter?: (op: Operation) => boolean;
}

/**
 * A tRPC link that gives each mutation an idempotency key in `op.context.idempotencyKey`: the caller's own
 * (`mutate(input, { context: { idempotencyKey } })`) or a fresh UUID. It only decides the key; the terminating
 * link sends it, through {@link idempotencyHeaders} in its `headers` option.
 *
 * **Link order**: put it **before** `retryLink`. `retryLink` runs the rest of the chain again with the same
 * operation for every attempt, so the key chosen before it is sent on every attempt; that is what lets the
 * server answer a retry with the first attempt's result. (A key chosen after `retryLink`, e.g. inside
 * `headers()`, would be new on each attempt and protect nothing. As a safety net this link also remembers the
 * key of each operation object it has seen, so it keeps working if placed after a retry link that reuses the
 * operation, as tRPC's does.)
 *
 * ```text
 *  links: [ idempotencyLink(), retryLink({ retry }), httpLink({ url, headers: idempotencyHeaders }) ]
 *           └ key chosen once   └ attempt 1, 2, 3 …   └ each attempt sends the same Idempotency-Key
 * ```
 *
 * @example
 * ```ts
 * import { createTRPCClient, httpBatchLink, retryLink } from '@trpc/client';
 * import { idempotencyHeaders, idempotencyLink } from 'rpc-idempotency/trpc/client';
 *
 * const trpc = createTRPCClient<AppRouter>({
 *   links: [
 *     idempotencyLink(),
 *     retryLink({ retry: ({ attempts, error }) => attempts < 3 && (error.data?.httpStatus ?? 500) >= 500 }),
 *     httpBatchLink({ url, transformer: superjson, headers: idempotencyHeaders }),
 *   ],
 * });
 * await trpc.payments.create.mutate({ amount: 100 }); // a fresh key, the same on every retry
 * await trpc.payments.create.mutate({ amount: 100 }, { context: { idempotencyKey: `order-${orderId}` } });
 * ```
 */
export function idempotencyLink<TRouter extends AnyTRPCRouter>(
  options: IdempotencyLinkOptions = {},
): TRPCLink<TRouter> {
  const generateKey = options.generateKey ?? randomKey;
  const filter = options.filter ?? ((op: Operation) => op.type === 'mutation');
  if (typeof generateKey !== 'function' || typeof filter !== 'function') {
    throw new TypeError(
      `idempotencyLink: expected generateKey and filter to be functions when given, received ${describeValue(options.generateKey)} and ${describeValue(options.filter)}.`,
    );
  }
  const remembered = new WeakMap<Operation, string>();
  return () =>
    ({ op, next }) => {
      const fail = (cause: Error) =>
        observable<never, TRPCClientError<TRouter>>((observer) => {
          observer.error(TRPCClientError.from(cause));
        });
      let key: unknown;
      let attach: boolean;
      try {
        attach = filter(op);
      } catch (error) {
        return fail(error instanceof Error ? error : new Error(String(error)));
      }
      if (!attach) return next(op);
      try {
        key = op.context[IDEMPOTENCY_KEY_CONTEXT];
        if (key === undefined || key === null) key = remembered.get(op) ?? generateKey(op);
      } catch (error) {
        return fail(error instanceof Error ? error : new Error(String(error)));
      }
      if (typeof key !== 'string') {
        const source =
          op.context[IDEMPOTENCY_KEY_CONTEXT] == null ? 'generateKey returned' : 'context.idempotencyKey is';
        return fail(
          new TypeError(
            `idempotencyLink: expected the idempotency key of ${op.path} to be a string, but ${source} ${describeValue(key)}. Pass a string such as a UUID.`,
          ),
        );
      }
      remembered.set(op, key);
      return next({ ...op, context: { ...op.context, [IDEMPOTENCY_KEY_CONTEXT]: key } });
    };
}

/**
 * Options of {@link idempotencyHeaders}: the header names, when the server's middleware uses other ones.
 *
 * @example
 * ```ts
 * headers: (opts) => idempotencyHeaders(opts, { headerName: 'X-Idempotency-Key' }),
 * ```
 */
export interface IdempotencyHeadersOptions {
  /** @default 'Idempotency-Key' */
  readonly headerName?: string;
  /** @default 'Idempotency-Keys' */
  readonly batchHeaderName?: string;
}

/**
 * The request headers that carry the keys {@link idempotencyLink} put into the operations' context. Plug it
 * into the terminating link's `headers` option: `httpLink` passes `{ op }` and gets `Idempotency-Key: <key>`;
 * `httpBatchLink` / `httpBatchStreamLink` pass `{ opList }` and get `Idempotency-Keys: ["k0",null,"k2"]`, one
 * entry per operation in batch order, which the server reads by each call's batch index. Operations without a
 * key add nothing (or `null`).
 *
 * @example
 * ```ts
 * httpLink({ url, headers: idempotencyHeaders });
 * httpBatchLink({ url, headers: async (opts) => ({ ...idempotencyHeaders(opts), authorization: await token() }) });
 * ```
 */
export function idempotencyHeaders(
  opts: { readonly op: Operation } | { readonly opList: readonly Operation[] },
  options: IdempotencyHeadersOptions = {},
): Record<string, string> {
  if ('opList' in opts) {
    const keys = opts.opList.map((op) => getIdempotencyKey(op) ?? null);
    if (keys.every((key) => key === null)) return {};
    return { [options.batchHeaderName ?? DEFAULT_BATCH_KEYS_HEADER]: formatBatchKeys(keys) };
  }
  const key = getIdempotencyKey(opts.op);
  return key === undefined ? {} : { [options.headerName ?? DEFAULT_KEY_HEADER]: key };
}

/**
 * The idempotency key an operation carries in its context, if any.
 *
 * @example
 * ```ts
 * loggerLink({ logger: (entry) => console.log(entry.path, getIdempotencyKey(entry)) });
 * ```
 */
export function getIdempotencyKey(op: Pick<Operation, 'context'>): string | undefined {
  const key = op.context[IDEMPOTENCY_KEY_CONTEXT];
  return typeof key === 'string' ? key : undefined;
}

const CODES = new Set<string>(Object.values(IdempotencyErrorCode));

/**
 * The idempotency details of a client error, when the server's error formatter adds them with
 * `idempotencyErrorData` (as `shape.data.idempotency`); `undefined` otherwise.
 *
 * @example
 * ```ts
 * try { await trpc.payments.create.mutate(input); } catch (error) {
 *   if (getIdempotencyErrorData(error)?.code === 'IN_PROGRESS') scheduleRetry();
 * }
 * ```
 */
export function getIdempotencyErrorData(error: unknown): IdempotencyTrpcErrorData | undefined {
  const shape = (error as { shape?: { data?: { idempotency?: unknown } } } | null)?.shape;
  const data = (error as { data?: { idempotency?: unknown } } | null)?.data ?? shape?.data;
  const idempotency = data?.idempotency as { code?: unknown; retryAfterMs?: unknown } | null | undefined;
  if (typeof idempotency !== 'object' || idempotency === null) return undefined;
  if (typeof idempotency.code !== 'string' || !CODES.has(idempotency.code)) return undefined;
  const code = idempotency.code as IdempotencyErrorCode;
  return typeof idempotency.retryAfterMs === 'number' ? { code, retryAfterMs: idempotency.retryAfterMs } : { code };
}

/**
 * The idempotency error code of a client error (see {@link getIdempotencyErrorData}), or `undefined`.
 *
 * @example
 * ```ts
 * getIdempotencyErrorCode(error) === 'FINGERPRINT_MISMATCH'; // the key was reused for another request
 * ```
 */
export function getIdempotencyErrorCode(error: unknown): IdempotencyErrorCode | undefined {
  return getIdempotencyErrorData(error)?.code;
}

function randomKey(): string {
  const webCrypto = (globalThis as { crypto?: Crypto }).crypto;
  if (typeof webCrypto?.randomUUID === 'function') return webCrypto.randomUUID();
  if (typeof webCrypto?.getRandomValues !== 'function') {
    throw new TypeError(
      'idempotencyLink: this runtime has no Web Crypto API (globalThis.crypto), so it cannot make random keys. Pass generateKey.',
    );
  }
  // RFC 9562 version 4: random bits, with the version and variant bits set.
  const bytes = webCrypto.getRandomValues(new Uint8Array(16));
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

interface Crypto {
  randomUUID?: () => string;
  getRandomValues?: <T extends Uint8Array>(array: T) => T;
}
