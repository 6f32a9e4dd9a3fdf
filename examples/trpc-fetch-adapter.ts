// tRPC with the fetch adapter (Next.js route handlers, Cloudflare, Deno, Bun, or Node as here), a Prisma store
// on SQLite, and batched mutations.
//
//   node --import tsx examples/trpc-fetch-adapter.ts
//
// With the fetch adapter the middleware reads the key from `ctx.req` (a Request) and sets the replay marker on
// `ctx.resHeaders`. Batched mutations each get their own key (the Idempotency-Keys header, by batch position).
// In your app, import from 'rpc-idempotency/...' instead of the relative paths. Exits 0 when its checks hold.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { createTRPCClient, httpBatchLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { type FetchCreateContextFnOptions, fetchRequestHandler } from '@trpc/server/adapters/fetch';
import { incomingMessageToRequest } from '@trpc/server/adapters/node-http';
import superjson from 'superjson';
import { PrismaClient } from '../prisma/generated/sqlite/client.js';
import { applyIdempotencyMigrations, configureSqlite, createPrismaStore } from '../src/stores/prisma/index.js';
import { idempotencyHeaders, idempotencyLink } from '../src/trpc/client.js';
import { type IdempotencyTrpcMeta, idempotencyMiddleware } from '../src/trpc/index.js';

const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-example-'));
const prisma = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${join(dir, 'app.db')}`, timeout: 5_000 }),
});
await configureSqlite(prisma); // WAL mode + busy timeout: one client per SQLite file per process
await applyIdempotencyMigrations(prisma); // creates idempotency_records (no Prisma engines needed)

// The fetch adapter's context: return `req` and `resHeaders` so the middleware can read and answer headers.
const createContext = ({ req, resHeaders }: FetchCreateContextFnOptions) => ({ req, resHeaders });
const t = initTRPC.context<typeof createContext>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
const idempotent = t.procedure.use(idempotencyMiddleware({ store: createPrismaStore(prisma), transformer: superjson }));

let runs = 0;
const router = t.router({
  addToCart: idempotent
    .input((raw) => raw as { sku: string; quantity: number })
    .mutation(({ input }) => ({ line: ++runs, ...input, addedAt: new Date() })),
});

const server = createServer(async (req, res) => {
  const response = await fetchRequestHandler({
    endpoint: '/trpc',
    req: incomingMessageToRequest(req, res, { maxBodySize: 1_048_576 }),
    router,
    createContext,
  });
  res.writeHead(response.status, [...response.headers].flat());
  res.end(Buffer.from(await response.arrayBuffer()));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/trpc`;

const seen: Headers[] = [];
const client = createTRPCClient<typeof router>({
  links: [
    idempotencyLink(),
    httpBatchLink({
      url,
      transformer: superjson,
      headers: idempotencyHeaders, // a batch sends Idempotency-Keys: ["k0","k1",...]
      fetch: async (input, init) => {
        const response = await fetch(input, init as RequestInit);
        seen.push(response.headers);
        return response;
      },
    }),
  ],
});

try {
  // Two mutations in one HTTP request: two keys, two records, two runs.
  const [a, b] = await Promise.all([
    client.addToCart.mutate({ sku: 'tea', quantity: 1 }),
    client.addToCart.mutate({ sku: 'mug', quantity: 2 }),
  ]);
  assert.equal(runs, 2);
  assert.notEqual(a.line, b.line);

  // The same key again (say, the user pressed "add" twice): the first line is replayed, Date and all.
  const key = 'cart-42-add-tea';
  const first = await client.addToCart.mutate({ sku: 'tea', quantity: 3 }, { context: { idempotencyKey: key } });
  const again = await client.addToCart.mutate({ sku: 'tea', quantity: 3 }, { context: { idempotencyKey: key } });
  assert.deepEqual(again, first);
  assert.ok(again.addedAt instanceof Date);
  assert.equal(runs, 3);
  assert.equal(seen.at(-1)?.get('idempotent-replayed-indexes'), '0', 'the batch marks position 0 as replayed');

  const records = await prisma.idempotencyRecord.count();
  console.log(`ok: ${runs} runs for 4 mutations over the fetch adapter; ${records} records in SQLite`);
} finally {
  server.close();
  await prisma.$disconnect();
  rmSync(dir, { recursive: true, force: true });
}
