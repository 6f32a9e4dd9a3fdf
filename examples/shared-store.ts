// tRPC and gRPC sharing one store (Prisma on SQLite) and, for one procedure, one key space.
//
//   node --import tsx examples/shared-store.ts
//
// Both transports use one idempotency service. createPayment is exposed on both; because the gRPC method is
// told the tRPC procedure's identity, fingerprint shape and result codec, a key first used over gRPC replays
// over tRPC (and the reverse), and each payment runs once. In your app, import from 'rpc-idempotency/...'.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { createTRPCClient, httpLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { type CreateHTTPContextOptions, createHTTPServer } from '@trpc/server/adapters/standalone';
import { PrismaClient } from '../prisma/generated/sqlite/client.js';
import { idempotencyInterceptor, replayableService } from '../src/grpc/index.js';
import { createIdempotencyService, jsonCodec } from '../src/index.js';
import { applyIdempotencyMigrations, configureSqlite, createPrismaStore } from '../src/stores/prisma/index.js';
import { idempotencyHeaders, idempotencyLink } from '../src/trpc/client.js';
import { idempotencyMiddleware } from '../src/trpc/index.js';

interface Payment {
  id: string;
  amount: number;
  currency: string;
}

// One SQLite file, one PrismaClient, one store, one service for both transports.
const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-shared-'));
const prisma = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${join(dir, 'app.db')}`, timeout: 5_000 }),
});
await configureSqlite(prisma);
await applyIdempotencyMigrations(prisma);
const service = createIdempotencyService({ store: createPrismaStore(prisma) });

const payments: Payment[] = [];
const createPayment = (input: { amount: number; currency: string }): Payment => {
  const payment = { id: `pay_${payments.length + 1}`, ...input };
  payments.push(payment);
  return payment;
};

// tRPC: path `createPayment`, input { amount, currency }, no transformer (results stored as JSON).
const t = initTRPC.context<CreateHTTPContextOptions>().create();
const router = t.router({
  createPayment: t.procedure
    .use(idempotencyMiddleware({ service }))
    .input((raw) => raw as { amount: number; currency: string })
    .mutation(({ input }) => createPayment(input)),
});
const http = createHTTPServer({ router, createContext: (opts) => opts });
await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
const trpc = createTRPCClient<typeof router>({
  links: [
    idempotencyLink(),
    httpLink({ url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`, headers: idempotencyHeaders }),
  ],
});

// gRPC: CreatePayment, stored under the tRPC procedure's identity, fingerprint shape and JSON result.
const definition = protoLoader.loadSync(fileURLToPath(new URL('../proto/payments.proto', import.meta.url)), {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});
const { Payments } = (
  grpc.loadPackageDefinition(definition) as unknown as { payments: { v1: { Payments: grpc.ServiceClientConstructor } } }
).payments.v1;
const toMessage = (payment: Payment) => ({
  ...payment,
  amount: String(payment.amount),
  status: 'PAYMENT_STATUS_SUCCEEDED',
});
const server = new grpc.Server({
  interceptors: [
    idempotencyInterceptor({
      service,
      methods: {
        '/payments.v1.Payments/CreatePayment': {
          procedure: 'createPayment', // the tRPC path: one key space
          fingerprint: (request) => {
            const { amount, currency } = request as { amount: string; currency: string };
            return { amount: Number(amount), currency }; // the tRPC input's shape
          },
          result: {
            codec: jsonCodec, // what the tRPC side stores without a transformer
            fromResponse: (message) => {
              const { id, amount, currency } = message as { id: string; amount: string; currency: string };
              return { id, amount: Number(amount), currency };
            },
            toResponse: (value) => toMessage(value as Payment),
          },
        },
      },
    }),
  ],
});
server.addService(replayableService(Payments.service), {
  createPayment(
    call: grpc.ServerUnaryCall<{ amount: string; currency: string }, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    callback(null, toMessage(createPayment({ amount: Number(call.request.amount), currency: call.request.currency })));
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
    error ? reject(error) : resolve(bound),
  ),
);
const grpcClient = new Payments(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as {
  createPayment(r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v?: { id: string }) => void): void;
  close(): void;
};

try {
  // A mobile app pays over gRPC; its retry goes through the web API (tRPC) with the same key.
  const metadata = new grpc.Metadata();
  metadata.set('idempotency-key', 'checkout-9001');
  const viaGrpc = await new Promise<{ id: string }>((resolve, reject) =>
    grpcClient.createPayment({ amount: '4200', currency: 'EUR' }, metadata, (e, v) =>
      e ? reject(e) : resolve(v as { id: string }),
    ),
  );
  const viaTrpc = await trpc.createPayment.mutate(
    { amount: 4200, currency: 'EUR' },
    { context: { idempotencyKey: 'checkout-9001' } },
  );
  assert.equal(viaTrpc.id, viaGrpc.id);
  assert.equal(payments.length, 1, 'one payment for two calls on two transports');
  const records = await prisma.idempotencyRecord.count();
  console.log(`ok: ${payments.length} payment for 2 calls (gRPC, then tRPC with the same key); ${records} record`);
} finally {
  grpcClient.close();
  server.forceShutdown();
  http.close();
  await prisma.$disconnect();
  rmSync(dir, { recursive: true, force: true });
}
