// Transactional mode with tRPC: the mutation's own writes and the idempotency record commit in one Prisma
// transaction, so a payment row exists exactly when the stored result says it does.
//
//   node --import tsx examples/transactional-trpc.ts
//
// SQLite here so it runs anywhere; PostgreSQL and MySQL/MariaDB work the same. In your app, import from
// 'rpc-idempotency/...' instead of the relative paths. Exits 0 when its checks hold.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import { initTRPC, TRPCError } from '@trpc/server';
import { createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { PrismaClient } from '../prisma/generated/sqlite/client.js';
import { applyIdempotencyMigrations, configureSqlite, createPrismaStore } from '../src/stores/prisma/index.js';
import { idempotencyHeaders, idempotencyLink } from '../src/trpc/client.js';
import { type IdempotencyTrpcMeta, idempotencyMiddleware, requireTransaction } from '../src/trpc/index.js';

const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-example-'));
const prisma = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${join(dir, 'app.db')}`, timeout: 5_000 }),
});
await configureSqlite(prisma);
await applyIdempotencyMigrations(prisma);
// Your own table (normally a model in your schema); no unique key, so a double charge would show as two rows.
await prisma.$executeRaw`CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, amount INTEGER NOT NULL)`;

interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  tenantId: string;
}
const t = initTRPC.context<Context>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
// The store's type flows into ctx.idempotency.tx: here Prisma's transaction client of this PrismaClient.
const idempotent = t.procedure.use(
  idempotencyMiddleware({
    store: createPrismaStore(prisma),
    transformer: superjson,
    scope: (ctx: Context) => ctx.tenantId,
  }),
);

const router = t.router({
  pay: idempotent
    .meta({ idempotency: { transaction: { timeoutMs: 10_000 } } }) // or `transaction: true` for the defaults
    .input((raw) => raw as { orderId: string; amount: number })
    .mutation(async ({ ctx, input }) => {
      const tx = requireTransaction(ctx); // throws, saying why, if the procedure did not opt in
      await tx.$executeRaw`INSERT INTO payments (order_id, amount) VALUES (${input.orderId}, ${input.amount})`;
      if (input.amount > 1_000) {
        // A final error: the INSERT above is rolled back, the error is stored, and retries replay it.
        throw new TRPCError({ code: 'PRECONDITION_FAILED', message: 'amount above the card limit' });
      }
      return { orderId: input.orderId, paidAt: new Date() };
    }),
});

const server = createHTTPServer({
  router,
  createContext: ({ req, res }): Context => ({ req, res, tenantId: 'tenant-1' }),
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const client = createTRPCClient<typeof router>({
  links: [idempotencyLink(), httpLink({ url, transformer: superjson, headers: idempotencyHeaders })],
});
const rows = async () => Number((await prisma.$queryRaw<[{ n: bigint }]>`SELECT COUNT(*) AS n FROM payments`)[0].n);

try {
  // A retry with the same key replays the committed result: one payment row.
  const first = await client.pay.mutate({ orderId: 'o-1', amount: 100 }, { context: { idempotencyKey: 'pay-o-1' } });
  const retry = await client.pay.mutate({ orderId: 'o-1', amount: 100 }, { context: { idempotencyKey: 'pay-o-1' } });
  assert.deepEqual(retry, first);
  assert.equal(await rows(), 1);

  // A declined payment: its INSERT was rolled back; the retry replays the error without running again.
  for (let attempt = 0; attempt < 2; attempt++) {
    const error = await client.pay
      .mutate({ orderId: 'o-2', amount: 5_000 }, { context: { idempotencyKey: 'pay-o-2' } })
      .catch((reason: unknown) => reason);
    assert.ok(error instanceof TRPCClientError && error.message === 'amount above the card limit');
  }
  assert.equal(await rows(), 1);

  console.log(`ok: ${await rows()} payment row for 2 calls of o-1; o-2 declined twice and left no row`);
} finally {
  server.close();
  await prisma.$disconnect();
  rmSync(dir, { recursive: true, force: true });
}
