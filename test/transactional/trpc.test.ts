// Transactional mode through tRPC, end to end: a real HTTP server (standalone adapter) and a real tRPC client,
// on PostgreSQL and SQLite. Resolvers write a demo ledger through ctx.idempotency.tx.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import { initTRPC, TRPCError } from '@trpc/server';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { PrismaClient as PostgresPrismaClient } from '../../prisma/generated/postgresql/client.js';
import { createMemoryStore, type IdempotencyStore } from '../../src/index.js';
import {
  createPrismaStore,
  type IdempotencyPrismaQueryable,
  type IdempotencyPrismaTransactionClientOf,
} from '../../src/stores/prisma/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { idempotencyHeaders, idempotencyLink } from '../../src/trpc/client.js';
import {
  type IdempotencyTrpcContext,
  type IdempotencyTrpcMeta,
  idempotencyErrorData,
  idempotencyMiddleware,
  requireTransaction,
} from '../../src/trpc/index.js';
import { deferred } from '../core/helpers.js';
import {
  createTestDatabase,
  describeWithDatabase,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';
import type { TestContext } from '../trpc/support/app.js';
import { type RunningServer, startServer } from '../trpc/support/http.js';
import { createLedger, readLedger, writeLedger } from './support/ledger.js';

interface ChargeInput {
  order: string;
  amount: number;
  /** `fail-once`: a retryable error on the first attempt; `decline`: a final error; `slow-once`: sleeps past the timeout. */
  behaviour?: 'fail-once' | 'decline' | 'slow-once';
  holdMs?: number;
}

const asCharge = (value: unknown) => value as ChargeInput;

function createLedgerApp(store: IdempotencyStore, provider: TestProvider) {
  const attempts = new Map<string, number>();
  const t = initTRPC
    .context<TestContext>()
    .meta<IdempotencyTrpcMeta>()
    .create({
      transformer: superjson,
      errorFormatter: ({ shape, error }) => ({
        ...shape,
        data: { ...shape.data, idempotency: idempotencyErrorData(error) },
      }),
    });
  const idempotent = t.procedure.use(
    idempotencyMiddleware({
      store,
      transformer: superjson,
      scope: (ctx: TestContext) => ctx.tenant,
      inFlight: { wait: true, timeoutMs: 20_000 },
    }),
  );
  const charge = async (ctx: { idempotency: IdempotencyTrpcContext<unknown> }, input: ChargeInput) => {
    const tx = requireTransaction(ctx) as IdempotencyPrismaQueryable;
    const attempt = (attempts.get(input.order) ?? 0) + 1;
    attempts.set(input.order, attempt);
    await writeLedger(tx, provider, {
      idempotencyKey: ctx.idempotency.key ?? `no key: ${input.order}`,
      entry: `charge ${input.amount}`,
      writtenBy: `attempt ${attempt}`,
    });
    if (input.holdMs) await sleep(input.holdMs);
    if (input.behaviour === 'fail-once' && attempt === 1) {
      throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'payment provider timed out' });
    }
    if (input.behaviour === 'decline') throw new TRPCError({ code: 'PRECONDITION_FAILED', message: 'card declined' });
    if (input.behaviour === 'slow-once' && attempt === 1) await sleep(700);
    return { order: input.order, attempt, chargedAt: new Date(1_764_763_200_000 + attempt) };
  };
  const router = t.router({
    charge: idempotent
      .meta({ idempotency: { transaction: true } })
      .input(asCharge)
      .mutation(({ ctx, input }) => charge(ctx, input)),
    quickCharge: idempotent
      .meta({ idempotency: { transaction: { timeoutMs: 250 } } })
      .input(asCharge)
      .mutation(({ ctx, input }) => charge(ctx, input)),
    forgotToOptIn: idempotent.input(asCharge).mutation(({ ctx, input }) => charge(ctx, input)),
    plain: idempotent.mutation(({ ctx }) => ({ hasTx: ctx.idempotency.tx !== undefined, key: ctx.idempotency.key })),
    lookup: idempotent.query(({ ctx }) => {
      requireTransaction(ctx);
      return 'unreachable';
    }),
  });
  return { router, attempts };
}

type LedgerRouter = ReturnType<typeof createLedgerApp>['router'];

function clients(url: string) {
  const responses: Headers[] = [];
  const fetchAndKeep = async (input: string | URL, init?: { headers?: unknown }) => {
    const response = await fetch(input, init as RequestInit);
    responses.push(response.headers);
    return response;
  };
  const link = () => httpLink({ url, transformer: superjson, headers: idempotencyHeaders, fetch: fetchAndKeep });
  return {
    keyed: createTRPCClient<LedgerRouter>({ links: [idempotencyLink(), link()] }),
    keyless: createTRPCClient<LedgerRouter>({ links: [link()] }),
    lastHeaders: () => responses.at(-1),
  };
}

async function rejection(promise: Promise<unknown>): Promise<TRPCClientError<LedgerRouter>> {
  const error = await promise.then(
    () => new Error('expected the call to fail, but it succeeded'),
    (reason: unknown) => reason,
  );
  if (error instanceof TRPCClientError) return error as TRPCClientError<LedgerRouter>;
  throw error;
}

for (const provider of ['postgresql', 'sqlite'] as const) {
  describeWithDatabase(provider, 'transactional mode through tRPC (HTTP, real client)', () => {
    let db: TestDatabase;
    let server: RunningServer;
    let app: ReturnType<typeof createLedgerApp>;
    let trpc: ReturnType<typeof clients>;

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      await createLedger(db.prisma, provider);
      app = createLedgerApp(createPrismaStore(db.prisma), provider);
      server = await startServer(app.router, 'standalone');
      trpc = clients(`${server.url}`);
    });
    afterAll(async () => {
      await server?.close();
      await db?.drop();
    });

    const ledger = (key: string) => readLedger(db.prisma, provider, key);
    const order = () => randomUUID();

    it('commits the resolver’s ledger row with the record; a retry replays it without writing again', async () => {
      const key = randomUUID();
      const input = { order: order(), amount: 100 };

      const first = await trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } });
      const second = await trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } });

      expect(first).toEqual({ order: input.order, attempt: 1, chargedAt: new Date(1_764_763_200_001) });
      expect(second).toEqual(first);
      expect(trpc.lastHeaders()?.get('idempotent-replayed')).toBe('true');
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 1']);
    });

    it('a retryable error rolls the resolver’s writes back; the retry with the same key runs cleanly', async () => {
      const key = randomUUID();
      const input = { order: order(), amount: 100, behaviour: 'fail-once' as const };

      const error = await rejection(trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } }));
      const afterFailure = await ledger(key);
      const retried = await trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } });

      expect(error.data?.code).toBe('INTERNAL_SERVER_ERROR');
      expect(error.message).toBe('payment provider timed out');
      expect(afterFailure).toEqual([]);
      expect(retried.attempt).toBe(2);
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 2']);
    });

    it('a final error rolls the writes back and is replayed, marked, without running again', async () => {
      const key = randomUUID();
      const input = { order: order(), amount: 100, behaviour: 'decline' as const };

      const first = await rejection(trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } }));
      const replay = await rejection(trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } }));

      expect(first.data?.code).toBe('PRECONDITION_FAILED');
      expect(replay.data?.code).toBe('PRECONDITION_FAILED');
      expect(replay.message).toBe('card declined');
      expect(trpc.lastHeaders()?.get('idempotent-replayed')).toBe('true');
      expect(app.attempts.get(input.order)).toBe(1);
      expect(await ledger(key)).toEqual([]);
    });

    it('10 concurrent duplicates over HTTP write one ledger row and all receive its result', async () => {
      const key = randomUUID();
      const input = { order: order(), amount: 100, holdMs: 150 };

      const results = await Promise.all(
        Array.from({ length: 10 }, () => trpc.keyed.charge.mutate(input, { context: { idempotencyKey: key } })),
      );

      expect(new Set(results.map((result) => JSON.stringify(superjson.serialize(result))))).toHaveProperty('size', 1);
      expect(app.attempts.get(input.order)).toBe(1);
      expect(await ledger(key)).toHaveLength(1);
    });

    it('a transaction that times out under a slow resolver is rolled back and reported; the retry runs', async () => {
      const key = randomUUID();
      const input = { order: order(), amount: 100, behaviour: 'slow-once' as const };

      const error = await rejection(trpc.keyed.quickCharge.mutate(input, { context: { idempotencyKey: key } }));
      const afterTimeout = await ledger(key);
      const retried = await trpc.keyed.quickCharge.mutate(input, { context: { idempotencyKey: key } });

      expect(error.data?.code).toBe('INTERNAL_SERVER_ERROR');
      expect(error.message).toMatch(
        new RegExp(
          `^The transaction of quickCharge \\(idempotency key "${key}"\\) failed after the procedure returned, so everything it wrote through the transaction was rolled back and no result was stored \\(.+\\)\\. Retry the request with the same key\\. If the procedure needs more time, raise transaction\\.timeoutMs`,
        ),
      );
      expect(afterTimeout).toEqual([]);
      expect(retried.attempt).toBe(2);
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 2']);
    });

    it('a stale owner whose lease was taken over gets 409 CONFLICT instead of its result; its writes vanish', async () => {
      // Prepare: two servers, as two processes, on one clock we move; the second has its own client. The
      // middleware-wide transaction option makes every mutation transactional.
      const clock = createManualClock(Date.now());
      const other = await db.createClient();
      const started = deferred();
      const resume = deferred();
      const key = randomUUID();
      let calls = 0;
      const build = (store: IdempotencyStore) => {
        const t = initTRPC.context<TestContext>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
        const idempotent = t.procedure.use(
          idempotencyMiddleware({ store, clock, transformer: superjson, transaction: true }),
        );
        return t.router({
          charge: idempotent.input(asCharge).mutation(async ({ ctx }) => {
            const tx = requireTransaction(ctx) as IdempotencyPrismaQueryable;
            const writtenBy = ++calls === 1 ? 'stale owner' : 'new owner';
            const write = () => writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy });
            // SQLite has one writer at a time: there the stale owner writes after the new owner's commit.
            if (writtenBy === 'new owner' || provider !== 'sqlite') await write();
            if (writtenBy === 'stale owner') {
              started.resolve();
              await resume.promise;
              if (provider === 'sqlite') await write();
            }
            return { by: writtenBy };
          }),
        });
      };
      const staleRouter = build(createPrismaStore(db.prisma));
      const servers = [
        await startServer(staleRouter, 'standalone'),
        await startServer(build(createPrismaStore(other)), 'standalone'),
      ];
      const [stale, thief] = servers.map((running) =>
        createTRPCClient<typeof staleRouter>({
          links: [
            idempotencyLink(),
            httpLink({ url: running.url, transformer: superjson, headers: idempotencyHeaders }),
          ],
        }),
      );
      const input = { order: randomUUID(), amount: 100 };

      try {
        // Act
        const staleCall = rejection(stale!.charge.mutate(input, { context: { idempotencyKey: key } }));
        await started.promise;
        await clock.advance(60_000);
        const taken = await thief!.charge.mutate(input, { context: { idempotencyKey: key } });
        resume.resolve();
        const staleError = await staleCall;

        // Assess
        expect(taken).toEqual({ by: 'new owner' });
        expect(staleError.data?.code).toBe('CONFLICT');
        expect(staleError.message).toMatch(/lapsed and another caller took it over, so this run was rolled back/);
        expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['new owner']);
      } finally {
        await Promise.all(servers.map((running) => running.close()));
      }
    });

    it('runs a call without a key in a transaction too: its writes roll back with its error', async () => {
      const ok = { order: order(), amount: 5 };
      const failing = { order: order(), amount: 5, behaviour: 'decline' as const };

      await trpc.keyless.charge.mutate(ok);
      await rejection(trpc.keyless.charge.mutate(failing));

      expect(await ledger(`no key: ${ok.order}`)).toHaveLength(1);
      expect(await ledger(`no key: ${failing.order}`)).toEqual([]);
    });

    it('gives procedures that did not opt in tx: undefined, and requireTransaction says what to change', async () => {
      const key = randomUUID();

      const plain = await trpc.keyed.plain.mutate(undefined, { context: { idempotencyKey: key } });
      const forgot = await rejection(trpc.keyed.forgotToOptIn.mutate({ order: order(), amount: 1 }));
      const query = await rejection(trpc.keyed.lookup.query());

      expect(plain).toEqual({ hasTx: false, key });
      expect(forgot.message).toBe(
        'requireTransaction: forgotToOptIn has no idempotency transaction: expected it to run in transactional mode, but transactional mode is not enabled for it. Add .meta({ idempotency: { transaction: true } }) to the procedure, or transaction: true to idempotencyMiddleware for every mutation.',
      );
      expect(query.message).toMatch(/lookup has no idempotency transaction.*it is a query or subscription/);
    });
  });
}

describe('transactional mode configuration (tRPC)', () => {
  it('refuses router-wide transactional mode on a store that cannot do it, when the middleware is created', () => {
    expect(() => idempotencyMiddleware({ store: createMemoryStore(), transaction: true })).toThrow(
      'idempotencyMiddleware: transactional mode needs a store that can run transactions, but store "memory" cannot. Use createPrismaStore(prisma) (SQLite, PostgreSQL, MySQL/MariaDB), or remove transaction.',
    );
  });

  it.each([
    [{ timeoutMs: -1 }, /expected transaction\.timeoutMs to be a positive integer of milliseconds, received number -1/],
    [{ isolation: 'Serializable' }, /received an unknown option "isolation"\. Check for a typo/],
    ['yes', /expected transaction to be true, false or \{ isolationLevel/],
  ])('refuses transaction: %j with a message that says what to write', (transaction, message) => {
    expect(() => idempotencyMiddleware({ store: createMemoryStore(), transaction: transaction as never })).toThrow(
      message,
    );
  });

  it('refuses meta transactional mode on such a store at the procedure’s first call, before it runs', async () => {
    const t = initTRPC.context<{ key: string }>().meta<IdempotencyTrpcMeta>().create();
    let runs = 0;
    const router = t.router({
      pay: t.procedure
        .use(idempotencyMiddleware({ store: createMemoryStore(), getKey: (ctx: { key: string }) => ctx.key }))
        .meta({ idempotency: { transaction: true } })
        .mutation(() => ++runs),
    });

    const error = await t
      .createCallerFactory(router)({ key: 'k-1' })
      .pay()
      .catch((reason: unknown) => reason);

    expect(error).toBeInstanceOf(TRPCError);
    expect((error as TRPCError).code).toBe('INTERNAL_SERVER_ERROR');
    expect((error as TRPCError).message).toMatch(
      /^meta\.idempotency: transactional mode needs a store that can run transactions, but store "memory" cannot/,
    );
    expect(runs).toBe(0);
  });

  it('types ctx.idempotency.tx as the Prisma store’s transaction client, inferred or given', () => {
    type Tx = IdempotencyPrismaTransactionClientOf<PostgresPrismaClient>;
    // Type-level only (checked by tsc): building it would need a connected client.
    const build = (prisma: PostgresPrismaClient) => {
      const t = initTRPC.context<{ tenant: string }>().meta<IdempotencyTrpcMeta>().create();
      const store = createPrismaStore(prisma);
      const inferred = t.procedure.use(
        idempotencyMiddleware({ store, scope: (ctx: { tenant: string }) => ctx.tenant }),
      );
      const explicit = t.procedure.use(idempotencyMiddleware<{ tenant: string }, Tx>({ store }));
      const untyped = t.procedure.use(idempotencyMiddleware<{ tenant: string }>({ store }));
      return [
        inferred.mutation(({ ctx }) => {
          expectTypeOf(ctx.idempotency.tx).toEqualTypeOf<Tx | undefined>();
          expectTypeOf(requireTransaction(ctx)).toEqualTypeOf<Tx>();
          expectTypeOf(requireTransaction(ctx)).toHaveProperty('idempotencyRecord');
          expectTypeOf(requireTransaction(ctx)).not.toHaveProperty('$connect');
          expectTypeOf(ctx.idempotency.key).toEqualTypeOf<string | undefined>();
          expectTypeOf(ctx.tenant).toEqualTypeOf<string>();
        }),
        explicit.mutation(({ ctx }) => expectTypeOf(requireTransaction(ctx)).toEqualTypeOf<Tx>()),
        untyped.mutation(({ ctx }) => expectTypeOf(ctx.idempotency.tx).toBeUnknown()),
      ];
    };
    expectTypeOf(build).returns.not.toBeAny();
  });
});
