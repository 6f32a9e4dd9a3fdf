// The Prisma store on PostgreSQL instead of SQLite.
//
//   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test node --import tsx examples/postgresql.ts
//
// Same code as on SQLite, with the pg driver adapter. This example works in a schema of its own (created and
// dropped here) so it never touches your tables; in your app, run applyIdempotencyMigrations (or the shipped
// Prisma migrations) once at deploy time. In your app, import from 'rpc-idempotency/...'.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../prisma/generated/postgresql/client.js';
import { createIdempotencyService, jsonCodec } from '../src/index.js';
import { applyIdempotencyMigrations, createPrismaStore } from '../src/stores/prisma/index.js';

const connectionString = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const schema = `example_${randomBytes(4).toString('hex')}`;

// The table is found through search_path (the store's raw SQL does not qualify it).
const prisma = new PrismaClient({
  adapter: new PrismaPg({ connectionString, options: `-c search_path=${schema}` }, { schema }),
});
await prisma.$executeRawUnsafe(`CREATE SCHEMA "${schema}"`);
try {
  const migrated = await applyIdempotencyMigrations(prisma); // advisory-locked: concurrent deployers apply once
  const service = createIdempotencyService({ store: createPrismaStore(prisma) }); // provider detected: postgresql

  let charges = 0;
  const call = (amount: number) => ({
    procedure: 'payments.create',
    key: 'order-7-payment',
    scope: 'tenant-acme',
    fingerprint: `payments.create:${amount}`,
    codec: jsonCodec,
    run: async () => ({ paymentId: `pay_${++charges}`, amount }),
  });

  // Ten identical requests at once (ten app servers, one database): one charge, nine IN_PROGRESS or replays.
  const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => service.execute(call(990))));
  assert.equal(charges, 1);
  const replay = await service.execute(call(990));
  assert.equal(replay.source, 'replayed');
  assert.deepEqual(replay.ok && replay.value, { paymentId: 'pay_1', amount: 990 });
  const deleted = await service.purgeExpired(); // schedule this (or the rpc-idempotency-purge command)

  console.log(
    `ok: ${outcomes.length + 1} calls, ${charges} charge, migrations applied: ${migrated.applied.length}, purged ${deleted}`,
  );
} finally {
  await prisma.$executeRawUnsafe(`DROP SCHEMA "${schema}" CASCADE`);
  await prisma.$disconnect();
}
