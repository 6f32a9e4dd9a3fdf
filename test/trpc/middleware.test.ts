import { randomUUID } from 'node:crypto';
import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import { initTRPC, TRPCError } from '@trpc/server';
import { createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyEvent,
  type IdempotencyStore,
  isIdempotencyError,
} from '../../src/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { idempotencyHeaders, idempotencyLink } from '../../src/trpc/client.js';
import {
  type IdempotencyTrpcMeta,
  type IdempotencyTrpcMiddlewareOptions,
  idempotencyMiddleware,
} from '../../src/trpc/index.js';
import { deferred } from '../support/deferred.js';

interface Ctx {
  headers: Record<string, string>;
  tenant?: string;
}

const headers = (key?: string): Ctx => ({ headers: key === undefined ? {} : { 'idempotency-key': key } });

async function failure(promise: Promise<unknown>): Promise<TRPCError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(TRPCError);
    return error as TRPCError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** A router with one counted mutation behind the middleware, called through createCaller (ctx.headers). */
function setup(options: Partial<IdempotencyTrpcMiddlewareOptions<Ctx>> = {}, meta: IdempotencyTrpcMeta = {}) {
  const store = createMemoryStore();
  const t = initTRPC.context<Ctx>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
  let runs = 0;
  let behaviour: () => unknown = () => ({ ok: true });
  const router = t.router({
    act: t.procedure
      .use(
        idempotencyMiddleware<Ctx>({
          store,
          transformer: superjson,
          ...options,
        } as IdempotencyTrpcMiddlewareOptions<Ctx>),
      )
      .meta(meta)
      .input((v) => v as { amount: number; sentAt?: number })
      .mutation(() => {
        runs++;
        return behaviour();
      }),
  });
  const caller = (ctx: Ctx) => t.createCallerFactory(router)(ctx);
  return {
    store,
    caller,
    runs: () => runs,
    behave(fn: () => unknown) {
      behaviour = fn;
    },
  };
}

describe('options are validated when the middleware is created', () => {
  const store = createMemoryStore();
  it.each([
    ['neither store nor service', {}, /expected a store .* or a service, received neither/],
    ['both store and service', { store, service: createIdempotencyService({ store }) }, /received both/],
    [
      'onEvent next to a ready service',
      { service: createIdempotencyService({ store }), onEvent: () => undefined },
      /onEvent is an option of the service.*createIdempotencyService/,
    ],
    ['a zero ttlMs', { store, ttlMs: 0 }, /expected ttlMs to be a positive integer .*received number 0/],
    ['a fractional leaseMs', { store, leaseMs: 1.5 }, /expected leaseMs to be a positive integer/],
    ['an unknown inFlight policy', { store, inFlight: 'queue' }, /expected inFlight to be 'reject' or \{ wait: true/],
    [
      'a header name with a space',
      { store, headerName: 'Idempotency Key' },
      /expected headerName to be an HTTP header name/,
    ],
    [
      'one name for both headers',
      { store, batchHeaderName: 'idempotency-key' },
      /expected headerName and batchHeaderName to differ/,
    ],
    [
      'an unknown final error code',
      { store, isFinalError: ['NOPE'] },
      /expected isFinalError to list tRPC error codes .*received string "NOPE"/,
    ],
    ['a getKey that is not a function', { store, getKey: 'idempotency-key' }, /expected getKey to be a function/],
    [
      'a plain-object transformer without a name',
      { store, transformer: { serialize: String, deserialize: String } },
      /Pass transformerName/,
    ],
  ])('refuses %s', (_, options, message) => {
    expect(() => idempotencyMiddleware(options as never)).toThrow(TypeError);
    expect(() => idempotencyMiddleware(options as never)).toThrow(message);
  });

  it('refuses invalid meta.idempotency at the first call of that procedure, without running it', async () => {
    const app = setup({}, { idempotency: { ttlMs: -5 } });

    const error = await failure(app.caller(headers(randomUUID())).act({ amount: 1 }));

    expect(error.code).toBe('INTERNAL_SERVER_ERROR');
    expect(error.message).toMatch(/meta\.idempotency: expected ttlMs to be a positive integer/);
    expect(app.runs()).toBe(0);
  });
});

describe('types', () => {
  it('keeps the context types of later middlewares and resolvers', () => {
    const t = initTRPC.context<{ req: Request; tenant: string }>().meta<IdempotencyTrpcMeta>().create();
    const authed = t.procedure.use(({ ctx, next }) => next({ ctx: { user: { id: ctx.tenant } } }));
    const procedure = authed
      .use(idempotencyMiddleware({ store: createMemoryStore() }))
      .use(({ next }) => next({ ctx: { requestId: 'r1' } }))
      .meta({ idempotency: { required: true } })
      .mutation(({ ctx }) => {
        expectTypeOf(ctx.user).toEqualTypeOf<{ id: string }>();
        expectTypeOf(ctx.requestId).toEqualTypeOf<string>();
        expectTypeOf(ctx.req).toEqualTypeOf<Request>();
        return ctx.user.id;
      });
    expectTypeOf(procedure).not.toBeAny();
  });

  it('checks a typed middleware against the procedure context', () => {
    const t = initTRPC.context<{ req: Request }>().create();
    const typed = idempotencyMiddleware<{ tenant: string }>({ store: createMemoryStore(), scope: (ctx) => ctx.tenant });
    // @ts-expect-error the procedure context has no tenant, so scope could not read it
    t.procedure.use(typed);
    expect(typeof typed).toBe('function');
  });
});

describe('server-side behaviour (createCaller)', () => {
  it('refuses to guess batch keys when tRPC passes no batchIndex (versions before it existed)', async () => {
    const middleware = idempotencyMiddleware({ store: createMemoryStore() });
    let nextCalls = 0;
    const opts = {
      ctx: { req: { url: '/a,a?batch=1', headers: { 'idempotency-keys': '["k0","k1"]' } } },
      type: 'mutation' as const,
      path: 'a',
      input: undefined,
      getRawInput: async () => ({ amount: 1 }),
      meta: undefined,
      signal: undefined,
      next: async () => {
        nextCalls++;
        return { ok: true as const, data: 1 } as never;
      },
    };

    await expect(middleware(opts as never)).rejects.toThrow(/does not pass batchIndex to middlewares/);
    expect(nextCalls).toBe(0);
  });

  it('keeps the IdempotencyError as the cause of the TRPCError, for server code', async () => {
    const app = setup({}, { idempotency: { required: true } });

    const error = await failure(app.caller(headers()).act({ amount: 1 }));

    expect(error.code).toBe('BAD_REQUEST');
    expect(isIdempotencyError(error.cause)).toBe(true);
    expect(isIdempotencyError(error.cause) && error.cause.code).toBe('KEY_MISSING');
  });

  it('fails with a clear message when the context has no request headers and no getKey', async () => {
    const app = setup();
    const caller = app.caller({} as Ctx);

    const error = await failure(caller.act({ amount: 1 }));

    expect(error.code).toBe('INTERNAL_SERVER_ERROR');
    expect(error.message).toMatch(/no request headers in the context of act.*an empty context.*pass getKey/s);
    expect(app.runs()).toBe(0);
  });

  it('reads the key with getKey when given', async () => {
    const app = setup({ getKey: (ctx) => ctx.tenant });
    const caller = app.caller({ headers: {}, tenant: 'order-7' });

    await caller.act({ amount: 1 });
    await caller.act({ amount: 1 });

    expect(app.runs()).toBe(1);
    expect(await app.store.get('', 'order-7')).toMatchObject({ status: 'SUCCEEDED', procedure: 'act' });
  });

  it('stores the errors isFinalError lists, and releases the others', async () => {
    const app = setup({ isFinalError: ['CONFLICT'] });
    const conflictKey = randomUUID();
    const badRequestKey = randomUUID();
    app.behave(() => {
      throw new TRPCError({ code: 'CONFLICT', message: 'version 3 is stale' });
    });
    await failure(app.caller(headers(conflictKey)).act({ amount: 1 }));
    const replayed = await failure(app.caller(headers(conflictKey)).act({ amount: 1 }));
    app.behave(() => {
      throw new TRPCError({ code: 'BAD_REQUEST', message: 'nope' });
    });
    await failure(app.caller(headers(badRequestKey)).act({ amount: 1 }));
    await failure(app.caller(headers(badRequestKey)).act({ amount: 1 }));

    expect(replayed.code).toBe('CONFLICT');
    expect(replayed.message).toBe('version 3 is stale');
    expect(app.runs()).toBe(3);
  });

  it('lets meta override isFinalError with a predicate for one procedure', async () => {
    const app = setup({}, { idempotency: { isFinalError: (error) => error.message.startsWith('declined') } });
    const key = randomUUID();
    app.behave(() => {
      throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'declined by the bank' });
    });

    await failure(app.caller(headers(key)).act({ amount: 1 }));
    const replayed = await failure(app.caller(headers(key)).act({ amount: 1 }));

    expect(replayed.message).toBe('declined by the bank');
    expect(app.runs()).toBe(1);
  });

  it('fingerprints what the custom fingerprint returns, always together with the path', async () => {
    const app = setup({ fingerprint: (input) => ({ ...(input as object), sentAt: undefined }) });
    const key = randomUUID();

    await app.caller(headers(key)).act({ amount: 1, sentAt: 1 });
    await app.caller(headers(key)).act({ amount: 1, sentAt: 2 });
    const mismatch = await failure(app.caller(headers(key)).act({ amount: 2, sentAt: 3 }));

    expect(app.runs()).toBe(1);
    expect(mismatch.code).toBe('UNPROCESSABLE_CONTENT');
  });

  it('uses a given service, with middleware and meta settings as per-call overrides', async () => {
    const clock = createManualClock();
    const events: IdempotencyEvent[] = [];
    const store = createMemoryStore();
    const service = createIdempotencyService({ store, clock, onEvent: (event) => events.push(event) });
    const app = setup({ service, store: undefined, ttlMs: 60_000 } as never, { idempotency: { ttlMs: 5_000 } });
    const key = randomUUID();

    await app.caller(headers(key)).act({ amount: 1 });

    const record = await store.get('', key);
    expect(record && record.expiresAt - record.createdAt).toBe(5_000);
    expect(events.map((e) => e.type)).toEqual(['executed']);
  });

  it('without a transformer, stores JSON results and refuses what JSON would change', async () => {
    const store: IdempotencyStore = createMemoryStore();
    const t = initTRPC.context<Ctx>().create();
    let runs = 0;
    const router = t.router({
      plain: t.procedure.use(idempotencyMiddleware({ store })).mutation(() => ({ run: ++runs })),
      dated: t.procedure.use(idempotencyMiddleware({ store })).mutation(() => ({ at: new Date(++runs) })),
    });
    const call = (key: string) => t.createCallerFactory(router)(headers(key));
    const plainKey = randomUUID();
    const datedKey = randomUUID();

    const plain = [await call(plainKey).plain(), await call(plainKey).plain()];
    const first = await call(datedKey).dated();
    const retry = await failure(call(datedKey).dated());

    expect(plain).toEqual([{ run: 1 }, { run: 1 }]);
    expect(first.at).toBeInstanceOf(Date);
    expect(retry.code).toBe('INTERNAL_SERVER_ERROR');
    expect(isIdempotencyError(retry.cause) && retry.cause.code).toBe('RESULT_NOT_STORABLE');
    expect(runs).toBe(2);
  });
});

describe('HTTP details', () => {
  it('reads a custom header name (X-Idempotency-Key) and ignores the default one', async () => {
    const t = initTRPC.create({ transformer: superjson });
    let runs = 0;
    const router = t.router({
      act: t.procedure
        .use(
          idempotencyMiddleware({
            store: createMemoryStore(),
            transformer: superjson,
            headerName: 'X-Idempotency-Key',
          }),
        )
        .mutation(() => ++runs),
    });
    const server = createHTTPServer({ router, createContext: ({ req, res }) => ({ req, res }) });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const custom = createTRPCClient<typeof router>({
        links: [
          idempotencyLink(),
          httpLink({
            url,
            transformer: superjson,
            headers: (opts) => idempotencyHeaders(opts, { headerName: 'X-Idempotency-Key' }),
          }),
        ],
      });
      const standard = createTRPCClient<typeof router>({
        links: [idempotencyLink(), httpLink({ url, transformer: superjson, headers: idempotencyHeaders })],
      });
      const key = randomUUID();

      const viaCustom = [await custom.act.mutate(undefined, { context: { idempotencyKey: key } })];
      viaCustom.push(await custom.act.mutate(undefined, { context: { idempotencyKey: key } }));
      const viaStandard = await standard.act.mutate(undefined, { context: { idempotencyKey: key } });

      expect(viaCustom).toEqual([1, 1]);
      expect(viaStandard).toBe(2);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('sends Retry-After in whole seconds, rounded up from the service hint', async () => {
    const store = createMemoryStore();
    const service = createIdempotencyService({ store, retryAfterMs: 2_500 });
    const gate = deferred();
    const started = deferred();
    const t = initTRPC.create();
    const router = t.router({
      slow: t.procedure.use(idempotencyMiddleware({ service })).mutation(async () => {
        started.resolve();
        await gate.promise;
        return 'done';
      }),
    });
    const server = createHTTPServer({ router, createContext: ({ req, res }) => ({ req, res }) });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/slow`;
    const post = () =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'Idempotency-Key': 'k' } });
    try {
      const first = post();
      await started.promise;
      const second = await post();
      gate.resolve();

      expect(second.status).toBe(409);
      expect(second.headers.get('retry-after')).toBe('3');
      expect((await first).status).toBe(200);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('rejects a non-string key given in the operation context on the client, before sending', async () => {
    const t = initTRPC.create();
    const router = t.router({ act: t.procedure.mutation(() => 1) });
    const client = createTRPCClient<typeof router>({
      links: [idempotencyLink(), httpLink({ url: 'http://127.0.0.1:9/never', headers: idempotencyHeaders })],
    });

    const error = await client.act.mutate(undefined, { context: { idempotencyKey: 42 } }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TRPCClientError);
    expect((error as Error).message).toMatch(
      /expected the idempotency key of act to be a string, but context\.idempotencyKey is number 42/,
    );
  });
});
