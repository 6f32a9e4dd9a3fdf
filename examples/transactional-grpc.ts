// Transactional mode with gRPC: the handler's own writes and the idempotency record commit in one Prisma
// transaction, and the response reaches the client only after that commit.
//
//   node --import tsx examples/transactional-grpc.ts
//
// SQLite here so it runs anywhere; PostgreSQL and MySQL/MariaDB work the same. In your app, import from
// 'rpc-idempotency/...' instead of the relative paths. Exits 0 when its checks hold.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { PrismaClient } from '../prisma/generated/sqlite/client.js';
import { idempotencyInterceptor, idempotencyTransaction, replayableService } from '../src/grpc/index.js';
import { createIdempotencyService } from '../src/index.js';
import {
  applyIdempotencyMigrations,
  configureSqlite,
  createPrismaStore,
  type IdempotencyPrismaTransactionClientOf,
} from '../src/stores/prisma/index.js';

type Tx = IdempotencyPrismaTransactionClientOf<PrismaClient>; // what idempotencyTransaction returns here

const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-example-'));
const prisma = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${join(dir, 'app.db')}`, timeout: 5_000 }),
});
await configureSqlite(prisma);
await applyIdempotencyMigrations(prisma);
await prisma.$executeRaw`CREATE TABLE payments (id INTEGER PRIMARY KEY, amount TEXT NOT NULL, currency TEXT NOT NULL)`;

const definition = protoLoader.loadSync(fileURLToPath(new URL('../proto/payments.proto', import.meta.url)), {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});
const { Payments } = (
  grpc.loadPackageDefinition(definition) as unknown as {
    payments: { v1: { Payments: grpc.ServiceClientConstructor } };
  }
).payments.v1;

const server = new grpc.Server({
  interceptors: [
    idempotencyInterceptor({
      service: createIdempotencyService({ store: createPrismaStore(prisma) }),
      // Per method, unary only. `true` for the database's defaults, or { isolationLevel, timeoutMs, maxWaitMs }.
      methods: { '/payments.v1.Payments/CreatePayment': { transaction: { timeoutMs: 10_000 } } },
    }),
  ],
});
server.addService(replayableService(Payments.service), {
  createPayment(
    call: grpc.ServerUnaryCall<{ amount: string; currency: string }, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    // Write through the call's transaction, and answer only after the writes (then the record commits with them).
    const tx = idempotencyTransaction<Tx>(call);
    const { amount, currency } = call.request;
    tx.$queryRaw<[{ id: bigint }]>`INSERT INTO payments (amount, currency) VALUES (${amount}, ${currency}) RETURNING id`
      .then(([row]) => callback(null, { id: `pay_${row.id}`, amount, currency, status: 'PAYMENT_STATUS_SUCCEEDED' }))
      .catch((error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }));
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
    error ? reject(error) : resolve(bound),
  ),
);

type Client = grpc.Client & {
  createPayment(
    request: object,
    metadata: grpc.Metadata,
    callback: (error: grpc.ServiceError | null, payment?: { id: string }) => void,
  ): grpc.ClientUnaryCall;
};
const client = new Payments(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Client;
const pay = (key: string) =>
  new Promise<{ id: string }>((resolve, reject) => {
    const metadata = new grpc.Metadata();
    metadata.set('idempotency-key', key);
    client.createPayment({ amount: '2500', currency: 'EUR' }, metadata, (error, payment) =>
      error ? reject(error) : resolve(payment as { id: string }),
    );
  });

try {
  const first = await pay('order-7');
  const retry = await pay('order-7'); // replayed from the record; the handler does not run again
  assert.equal(retry.id, first.id);
  const [{ n }] = await prisma.$queryRaw<[{ n: bigint }]>`SELECT COUNT(*) AS n FROM payments`;
  assert.equal(n, 1n);
  console.log(`ok: ${n} payment row for 2 calls with key order-7 (${first.id})`);
} finally {
  client.close();
  server.forceShutdown();
  await prisma.$disconnect();
  rmSync(dir, { recursive: true, force: true });
}
