// Pins the one tRPC internal we depend on (see src/trpc/internal.ts). If a tRPC upgrade changes it, this fails
// here, loudly, instead of replays failing in production.
import { initTRPC } from '@trpc/server';
import * as unstable from '@trpc/server/unstable-core-do-not-import';
import { describe, expect, it } from 'vitest';
import { replayedResult } from '../../src/trpc/internal.js';

describe('tRPC internals the middleware relies on', () => {
  it('still exports middlewareMarker from @trpc/server/unstable-core-do-not-import', () => {
    expect(unstable.middlewareMarker).toBe('middlewareMarker');
    expect(replayedResult(1)).toEqual({ marker: unstable.middlewareMarker, ok: true, data: 1 });
  });

  it('still answers a call with the data of a middleware result that never called next()', async () => {
    const t = initTRPC.create();
    let resolverRan = false;
    const router = t.router({
      stored: t.procedure
        .use(async () => replayedResult({ from: 'the record', at: new Date(0) }))
        .mutation(() => {
          resolverRan = true;
          return { from: 'the resolver', at: new Date(1) };
        }),
    });

    const result = await t.createCallerFactory(router)({}).stored();

    expect(result).toEqual({ from: 'the record', at: new Date(0) });
    expect(resolverRan).toBe(false);
  });

  it('passes such a result through outer middlewares like one from next()', async () => {
    const t = initTRPC.create();
    const seen: unknown[] = [];
    const router = t.router({
      stored: t.procedure
        .use(async ({ next }) => {
          const result = await next();
          seen.push(result);
          return result;
        })
        .use(async () => replayedResult('replayed'))
        .mutation(() => 'live'),
    });

    await expect(t.createCallerFactory(router)({}).stored()).resolves.toBe('replayed');
    expect(seen).toEqual([{ marker: unstable.middlewareMarker, ok: true, data: 'replayed' }]);
  });
});
