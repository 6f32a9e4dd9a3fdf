import { describeValue, IdempotencyError } from '../core/errors.js';
import { parseBatchKeys } from './protocol.js';

// Reading requests and writing responses through the context shapes of tRPC's HTTP adapters:
//   standalone / node-http / express: ctx.req is an IncomingMessage (headers: lower-cased object), ctx.res a
//                                     ServerResponse;
//   fetch (and Next.js app dir, Cloudflare, ...): ctx.req is a Request (headers.get), ctx.resHeaders a Headers.
// The adapters pass `{ req, res, info }` / `{ req, resHeaders, info }` to createContext; the middleware can only
// see what createContext returned, so these helpers look for those names.

/**
 * A response's headers as the middleware needs them: read one, set one. A fetch `Headers` object fits.
 * `set` may be called after the response started streaming; it must then do nothing (or throw: the middleware
 * ignores errors from it, since a marker header must never fail a call).
 *
 * @example
 * ```ts
 * idempotencyMiddleware({ store, responseHeaders: (ctx: Context) => ctx.resHeaders });
 * ```
 */
export interface IdempotencyTrpcResponseHeaders {
  get(name: string): string | null | undefined;
  set(name: string, value: string): void;
}

type HeaderReader = (name: string) => string | readonly string[] | undefined;

interface NodeResponseLike {
  readonly headersSent: boolean;
  readonly writableEnded?: boolean;
  getHeader(name: string): unknown;
  setHeader(name: string, value: string): unknown;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
}

function headerReader(headers: unknown): HeaderReader | undefined {
  const object = record(headers);
  if (!object) return undefined;
  if (typeof object.get === 'function') {
    const fetchHeaders = object as { get(name: string): string | null };
    return (name) => fetchHeaders.get(name) ?? undefined;
  }
  return (name) => {
    const value = object[name.toLowerCase()];
    if (typeof value === 'string') return value;
    if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value as string[];
    return undefined;
  };
}

/**
 * The request headers of the usual context shapes (`ctx.req.headers`, or `ctx.headers`), if any.
 *
 * @example
 * ```ts
 * requestHeaderReader({ req: new Request(url, { headers }) })?.('Idempotency-Key');
 * ```
 */
export function requestHeaderReader(ctx: unknown): HeaderReader | undefined {
  const context = record(ctx);
  const req = record(context?.req);
  // Node's IncomingMessage joins a repeated header into one value ("k1, k2"), which would pass as a third,
  // merged key; `headersDistinct` (Node >= 16.17) keeps every value, so a repeated key header is refused as
  // KEY_INVALID instead. Fetch `Headers` join too and cannot tell; they are read as they are.
  return headerReader(req?.headersDistinct) ?? headerReader(req?.headers) ?? headerReader(context?.headers);
}

/**
 * What the context shows of the request's batch: whether it is one, and how many calls it has.
 *
 * @example
 * ```ts
 * const shape: BatchShape = { batch: true, size: 3 };
 * ```
 */
export interface BatchShape {
  /** `undefined` when the context shows neither `info` nor a request URL. */
  readonly batch: boolean | undefined;
  /** The number of calls in the batch, when known. */
  readonly size: number | undefined;
}

/**
 * Whether the request is a batch (`?batch=1` in tRPC's HTTP wire format) and its size, from `ctx.info` when
 * createContext passed it on, else from the request URL (the calls' paths, joined by commas, end the path).
 *
 * @example
 * ```ts
 * batchShape({ req: { url: '/payments.create,payments.refund?batch=1' } }); // { batch: true, size: 2 }
 * ```
 */
export function batchShape(ctx: unknown): BatchShape {
  const context = record(ctx);
  const info = record(context?.info);
  if (typeof info?.isBatchCall === 'boolean') {
    return { batch: info.isBatchCall, size: Array.isArray(info.calls) ? info.calls.length : undefined };
  }
  const req = record(context?.req);
  const url = typeof req?.originalUrl === 'string' ? req.originalUrl : req?.url;
  if (typeof url !== 'string') return { batch: undefined, size: undefined };
  try {
    const parsed = new URL(url, 'http://localhost');
    const batch = parsed.searchParams.get('batch') === '1';
    return { batch, size: batch ? parsed.pathname.split(',').length : 1 };
  } catch {
    return { batch: undefined, size: undefined };
  }
}

/**
 * Whether the request is a batch; `undefined` when the context does not show it.
 *
 * @example
 * ```ts
 * isBatchRequest({ req: { url: '/payments.create' } }); // false
 * ```
 */
export function isBatchRequest(ctx: unknown): boolean | undefined {
  return batchShape(ctx).batch;
}

/**
 * The response headers of the usual context shapes (`ctx.resHeaders`, or `ctx.res`), if any. Setting a header on
 * a node response whose headers were sent is skipped.
 *
 * @example
 * ```ts
 * defaultResponseHeaders({ req, res })?.set('Idempotent-Replayed', 'true');
 * ```
 */
export function defaultResponseHeaders(ctx: unknown): IdempotencyTrpcResponseHeaders | undefined {
  const context = record(ctx);
  const resHeaders = record(context?.resHeaders);
  if (resHeaders && typeof resHeaders.get === 'function' && typeof resHeaders.set === 'function') {
    return resHeaders as unknown as IdempotencyTrpcResponseHeaders;
  }
  const res = record(context?.res) as NodeResponseLike | undefined;
  if (res && typeof res.setHeader === 'function' && typeof res.getHeader === 'function') {
    return {
      get: (name) => {
        const value = res.getHeader(name);
        return value === undefined ? undefined : String(value);
      },
      set: (name, value) => {
        // Streaming responses (httpBatchStreamLink) have sent their headers before most calls finish:
        // setHeader would throw ERR_HTTP_HEADERS_SENT, so the marker is skipped.
        if (res.headersSent || res.writableEnded === true) return;
        res.setHeader(name, value);
      },
    };
  }
  return undefined;
}

function contextShape(ctx: unknown): string {
  const object = record(ctx);
  if (!object) return describeValue(ctx);
  const keys = Object.keys(object);
  return keys.length === 0 ? 'an empty context' : `a context with keys ${keys.slice(0, 10).join(', ')}`;
}

function noBatchIndex(procedure: string): TypeError {
  return new TypeError(
    `idempotencyMiddleware: cannot tell which key of this request belongs to ${procedure}: the request may be a batch, and this @trpc/server does not pass batchIndex to middlewares (recent @trpc/server 11 releases do; this package is tested with 11.25). Upgrade @trpc/server, or read the key yourself with getKey.`,
  );
}

/**
 * Options of {@link readKeyFromContext}.
 *
 * @example
 * ```ts
 * const options: ReadKeyOptions = { headerName: 'Idempotency-Key', batchHeaderName: 'Idempotency-Keys', batchIndex: 0, procedure: 'payments.create' };
 * ```
 */
export interface ReadKeyOptions {
  readonly headerName: string;
  readonly batchHeaderName: string;
  /** The call's batch index; `undefined` when tRPC does not pass it (before @trpc/server added `batchIndex`). */
  readonly batchIndex: number | undefined;
  readonly procedure: string;
}

function single(value: string | readonly string[] | undefined, name: string, procedure: string): string | undefined {
  if (value === undefined || typeof value === 'string') return value;
  if (value.length === 1) return value[0];
  throw new IdempotencyError(
    'KEY_INVALID',
    `The request to ${procedure} carries the ${name} header ${value.length} times; expected it once. The call did not run: send the header once (check proxies that add it again).`,
    { procedure },
  );
}

/**
 * The default key lookup: `Idempotency-Key` for a non-batched request, entry `batchIndex` of
 * `Idempotency-Keys` for a batched one. A header of the wrong kind for the request is `KEY_INVALID` (400):
 * a single key on a batch cannot say which call it belongs to, so it is never guessed at.
 *
 * When the context does not show whether the request is a batch (no `req.url`, no `info`), a batch keys header
 * is read by index, and a single key is accepted only for `batchIndex` 0.
 *
 * Throws a `TypeError` (a server misconfiguration, not a client error) when the context has no request headers
 * at all: running every mutation without idempotency because createContext dropped `req` would be silent.
 *
 * @example
 * ```ts
 * readKeyFromContext({ req: { url: '/a,b?batch=1', headers: { 'idempotency-keys': '["k0","k1"]' } } },
 *   { headerName: 'Idempotency-Key', batchHeaderName: 'Idempotency-Keys', batchIndex: 1, procedure: 'b' }); // 'k1'
 * ```
 */
export function readKeyFromContext(ctx: unknown, options: ReadKeyOptions): string | undefined {
  const { headerName, batchHeaderName, batchIndex, procedure } = options;
  const read = requestHeaderReader(ctx);
  if (!read) {
    throw new TypeError(
      `idempotencyMiddleware: no request headers in the context of ${procedure}: expected ctx.req.headers (return { req } from createContext; the standalone, express and fetch adapters all pass req to it) or ctx.headers, received ${contextShape(ctx)}. For other callers (createCaller, tests), pass getKey to read the key from your context.`,
    );
  }
  const key = single(read(headerName), headerName, procedure);
  const list = single(read(batchHeaderName), batchHeaderName, procedure);
  const { batch, size } = batchShape(ctx);

  if (batch === true && key !== undefined) {
    throw new IdempotencyError(
      'KEY_INVALID',
      `This batched request to ${procedure} carries a single ${headerName} header, which cannot say which call of the batch it belongs to. The call did not run. Send one key per call in ${batchHeaderName} (a JSON array indexed by batch position): plug idempotencyHeaders from rpc-idempotency/trpc/client into httpBatchLink's headers option.`,
      { procedure },
    );
  }
  if (batch === false && list !== undefined) {
    throw new IdempotencyError(
      'KEY_INVALID',
      `This non-batched request to ${procedure} carries ${batchHeaderName}, which is only for batched requests. The call did not run. Send its key in ${headerName}.`,
      { procedure },
    );
  }
  if (list !== undefined) {
    if (key !== undefined) {
      throw new IdempotencyError(
        'KEY_INVALID',
        `The request to ${procedure} carries both ${headerName} and ${batchHeaderName}; expected one of them. The call did not run: send ${batchHeaderName} for batched requests and ${headerName} otherwise (idempotencyHeaders() does this).`,
        { procedure },
      );
    }
    const keys = parseBatchKeys(list, batchHeaderName, procedure);
    if (batchIndex === undefined) throw noBatchIndex(procedure);
    // A list of the wrong length means the client lost track of the batch order: refuse every call of the
    // batch, including those whose index the list happens to cover.
    if ((size !== undefined && keys.length !== size) || batchIndex >= keys.length) {
      throw new IdempotencyError(
        'KEY_INVALID',
        `The ${batchHeaderName} header lists ${keys.length} entries, but the batch has ${size ?? `at least ${batchIndex + 1}`} calls (${procedure} is at batch index ${batchIndex}). The call did not run. Send one entry (a key or null) per call of the batch, in batch order.`,
        { procedure },
      );
    }
    return keys[batchIndex] ?? undefined;
  }
  if (key !== undefined && batch === undefined && batchIndex === undefined) throw noBatchIndex(procedure);
  if (key !== undefined && batch === undefined && batchIndex !== undefined && batchIndex > 0) {
    throw new IdempotencyError(
      'KEY_INVALID',
      `${procedure} is at batch index ${batchIndex}, but the request carries a single ${headerName} header, which cannot say which call it belongs to. The call did not run. Send ${batchHeaderName} for batches.`,
      { procedure },
    );
  }
  return key;
}
