// The only file of this package that imports tRPC internals.
//
// Why: a middleware that answers from a stored record must not call `next()` (that would run the procedure
// again), but tRPC types a middleware's result as carrying an internal brand, `middlewareMarker`, which the
// public API does not export (there is an open tRPC feature request for a public way to short-circuit). tRPC's
// own `callRecursive` builds results the same way. `@trpc/server/unstable-core-do-not-import` may change in any
// release: test/trpc/internal.test.ts pins what we rely on (the marker exists, and a middleware that returns a
// result built here without calling `next()` answers the call with that data), so an upgrade that breaks it
// fails there, not in production.
import type { TRPCMiddlewareFunction } from '@trpc/server';
import { middlewareMarker } from '@trpc/server/unstable-core-do-not-import';

/**
 * The result type a tRPC middleware returns (what `next()` resolves to).
 *
 * @example
 * ```ts
 * const result: TrpcMiddlewareResult = await opts.next();
 * ```
 */
export type TrpcMiddlewareResult = Awaited<ReturnType<TRPCMiddlewareFunction<object, object, object, object, unknown>>>;

/**
 * A successful middleware result carrying `data`, as if the procedure had returned it.
 *
 * @example
 * ```ts
 * return replayedResult(storedValue); // inside a middleware, instead of `return next()`
 * ```
 */
export function replayedResult(data: unknown): TrpcMiddlewareResult {
  return { marker: middlewareMarker, ok: true, data };
}
