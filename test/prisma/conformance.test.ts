import { afterAll } from 'vitest';
import type { IdempotencyClaimInput } from '../../src/stores/contract.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { runStoreConformanceSuite } from '../../src/testing/index.js';
import {
  createTestDatabase,
  describeWithDatabase,
  spawnClaimWorker,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';

// One migrated namespace per provider for the whole suite, emptied before each test: creating a schema or
// database per test would cost more than the tests themselves.
for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'Prisma store', () => {
    let database: Promise<TestDatabase<TestProvider>> | undefined;
    const open = () => {
      database ??= createTestDatabase(provider);
      return database;
    };
    afterAll(async () => {
      if (database !== undefined) await (await database).drop();
    });

    runStoreConformanceSuite({
      name: `prisma:${provider}`,
      async createBackend() {
        const db = await open();
        await db.prisma.$executeRawUnsafe(
          provider === 'mysql' ? 'DELETE FROM `idempotency_records`' : 'DELETE FROM "idempotency_records"',
        );
        return {
          store: createPrismaStore(db.prisma),
          async connect() {
            const client = await db.createClient();
            return { store: createPrismaStore(client), close: () => client.$disconnect() };
          },
          async claimInChildProcesses(batches: IdempotencyClaimInput[][]) {
            const workers = batches.map((claims) => spawnClaimWorker(db.namespace, claims));
            try {
              await Promise.all(workers.map((worker) => worker.ready));
              for (const worker of workers) worker.go();
              return await Promise.all(workers.map((worker) => worker.results));
            } finally {
              for (const worker of workers) worker.kill();
            }
          },
        };
      },
    });
  });
}
