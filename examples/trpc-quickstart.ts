// tRPC quickstart: an idempotent createPayment mutation over HTTP.
//
//   node --import tsx examples/trpc-quickstart.ts
//
// The server charges at most once per idempotency key; the client gives every mutation one key and lets
// retryLink retry it safely. In your app, import from 'rpc-idempotency', 'rpc-idempotency/trpc' and
// 'rpc-idempotency/trpc/client' instead of the relative paths below. Exits 0 when every assertion holds.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createTRPCClient, httpLink, retryLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { type CreateHTTPContextOptions, createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { createMemoryStore } from '../src/index.js';
import { getIdempotencyErrorCode, idempotencyHeaders, idempotencyLink } from '../src/trpc/client.js';
import { type IdempotencyTrpcMeta, idempotencyErrorData, idempotencyMiddleware } from '../src/trpc/index.js';

// 1. The context: return `req` (and `res`, for the Idempotent-Replayed and Retry-After headers). The middleware
//    reads the Idempotency-Key header from `req`.
const createContext = ({ req, res }: CreateHTTPContextOptions) => ({
  req,
  res,
  tenantId: String(req.headers['x-tenant-id'] ?? 'demo-tenant'),
});
type Context = Awaited<ReturnType<typeof createContext>>;

// 2. initTRPC with superjson, the meta type the middleware reads, and the idempotency code in error shapes.
const t = initTRPC
  .context<Context>()
  .meta<IdempotencyTrpcMeta>()
  .create({
    transformer: superjson,
    errorFormatter: ({ shape, error }) => ({
      ...shape,
      data: { ...shape.data, idempotency: idempotencyErrorData(error) },
    }),
  });

// 3. One middleware on a base procedure serves every mutation built on it (queries pass through).
const idempotentProcedure = t.procedure.use(
  idempotencyMiddleware<Context>({
    store: createMemoryStore(), // use createPrismaStore(prisma) from 'rpc-idempotency/prisma' in production
    transformer: superjson, // the same transformer as initTRPC: replays keep Date and bigint
    scope: (ctx) => ctx.tenantId, // who owns a key; the default '' is unsafe for multi-tenant apps
  }),
);

const charges: { id: string; amountCents: number }[] = [];

export const appRouter = t.router({
  createPayment: idempotentProcedure
    .meta({ idempotency: { required: true } }) // a payment without a key is refused with 400
    .input((raw: unknown) => {
      const input = raw as { amountCents?: unknown; currency?: unknown };
      if (typeof input?.amountCents !== 'number' || typeof input.currency !== 'string') {
        throw new Error('expected { amountCents: number, currency: string }');
      }
      return { amountCents: input.amountCents, currency: input.currency };
    })
    .mutation(({ input }) => {
      const payment = { id: `pay_${charges.length + 1}`, amountCents: input.amountCents };
      charges.push(payment);
      return {
        id: payment.id,
        amountCents: BigInt(input.amountCents),
        currency: input.currency,
        createdAt: new Date(),
      };
    }),
});
export type AppRouter = typeof appRouter;

const server = createHTTPServer({ router: appRouter, createContext });
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

// 4. The client. For the demo, its fetch loses the first response after the server has charged: the case
//    retries exist for, and the one where a retry without idempotency would charge twice.
let loseNextResponse = true;
const unreliableFetch = async (input: string | URL, init?: { headers?: unknown }) => {
  const response = await fetch(input, init as RequestInit);
  if (loseNextResponse) {
    loseNextResponse = false;
    throw new TypeError('fetch failed: connection reset by peer');
  }
  return response;
};

const trpc = createTRPCClient<AppRouter>({
  links: [
    // Chooses one key per mutation. It must come BEFORE retryLink, so every attempt carries the same key.
    idempotencyLink(),
    retryLink({
      retry: ({ op, attempts, error }) =>
        op.type === 'mutation' &&
        attempts < 3 &&
        ((error.data?.httpStatus ?? 503) >= 500 || getIdempotencyErrorCode(error) === 'IN_PROGRESS'),
    }),
    // Sends the key: Idempotency-Key for httpLink (httpBatchLink gets Idempotency-Keys, one per call).
    httpLink({ url, transformer: superjson, fetch: unreliableFetch, headers: idempotencyHeaders }),
  ],
});

try {
  // The first response is lost; retryLink retries with the same key; the server replays instead of charging.
  const payment = await trpc.createPayment.mutate({ amountCents: 1_250, currency: 'EUR' });
  assert.equal(charges.length, 1, 'the retry must not charge a second time');
  assert.equal(payment.id, 'pay_1');
  assert.equal(payment.amountCents, 1_250n, 'superjson keeps the bigint on replay');
  assert.ok(payment.createdAt instanceof Date, 'superjson keeps the Date on replay');

  // Your own key (e.g. the order id) makes a double submit harmless: the second call gets the first result.
  const orderKey = `order-${randomUUID()}`;
  const first = await trpc.createPayment.mutate(
    { amountCents: 500, currency: 'EUR' },
    { context: { idempotencyKey: orderKey } },
  );
  const again = await trpc.createPayment.mutate(
    { amountCents: 500, currency: 'EUR' },
    { context: { idempotencyKey: orderKey } },
  );
  assert.deepEqual(again, first);
  assert.equal(charges.length, 2);

  // Reusing a key for a different request is refused (422) and charges nothing.
  await assert.rejects(
    trpc.createPayment.mutate({ amountCents: 999, currency: 'EUR' }, { context: { idempotencyKey: orderKey } }),
    (error: unknown) => getIdempotencyErrorCode(error) === 'FINGERPRINT_MISMATCH',
  );
  assert.equal(charges.length, 2);

  console.log(
    `ok: ${charges.length} charges for 4 createPayment calls (one retried after a lost response, one replayed, one refused)`,
  );
} finally {
  server.closeAllConnections();
  server.close();
}
