/**
 * The Prisma store under the real service, end to end: transactional mode commits the procedure's own write
 * exactly once, however many identical calls race.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { computeFingerprint, createIdempotencyService, jsonCodec } from '../../src/index.js';
import { createPrismaStore, type IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import {
  createTestDatabase,
  describeWithDatabase,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'service + Prisma store, transactional mode', () => {
    let db: TestDatabase<TestProvider>;
    const q = (id: string) => (provider === 'mysql' ? `\`${id}\`` : `"${id}"`);
    const p = (index: number) => (provider === 'postgresql' ? `$${index}` : '?');
    const countOrders = async (key: string) => {
      const [row] = await db.prisma.$queryRawUnsafe<Array<{ n: unknown }>>(
        `SELECT COUNT(*) AS n FROM ${q('orders')} WHERE ${q('idempotency_key')} = ${p(1)}`,
        key,
      );
      return Number(row?.n);
    };

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      await db.prisma.$executeRawUnsafe(`CREATE TABLE ${q('orders')} (${q('idempotency_key')} VARCHAR(255) NOT NULL)`);
    });
    afterAll(() => db?.drop());

    const call = (key: string, run: (tx: IdempotencyPrismaQueryable) => Promise<unknown>) => ({
      procedure: 'orders.create',
      key,
      scope: 'tenant-1',
      fingerprint: computeFingerprint('orders.create', { sku: 'A-1' }),
      codec: jsonCodec,
      transaction: { timeoutMs: 20_000 },
      run: ({ transaction }: { transaction: unknown }) => run(transaction as IdempotencyPrismaQueryable),
    });

    it('runs the procedure once for 20 concurrent identical calls, and commits its write once', async () => {
      const service = createIdempotencyService({
        store: createPrismaStore(db.prisma),
        inFlight: { wait: true, timeoutMs: 20_000, pollIntervalMs: 20 },
      });
      const key = randomUUID();
      let runs = 0;

      const outcomes = await Promise.all(
        Array.from({ length: 20 }, () =>
          service.execute(
            call(key, async (tx) => {
              runs++;
              await tx.$executeRawUnsafe(`INSERT INTO ${q('orders')} (${q('idempotency_key')}) VALUES (${p(1)})`, key);
              return { orderId: `order-${key}` };
            }),
          ),
        ),
      );

      expect(runs).toBe(1);
      expect(await countOrders(key)).toBe(1);
      expect(outcomes.filter((outcome) => outcome.source === 'executed')).toHaveLength(1);
      expect(outcomes.filter((outcome) => outcome.source === 'replayed')).toHaveLength(19);
      for (const outcome of outcomes) expect(outcome).toMatchObject({ ok: true, value: { orderId: `order-${key}` } });
    });

    it('rolls the write back when the procedure fails, so a retry runs it again', async () => {
      const service = createIdempotencyService({ store: createPrismaStore(db.prisma) });
      const key = randomUUID();

      const failed = await service.execute(
        call(key, async (tx) => {
          await tx.$executeRawUnsafe(`INSERT INTO ${q('orders')} (${q('idempotency_key')}) VALUES (${p(1)})`, key);
          throw new Error('payment provider timed out');
        }),
      );
      expect(failed).toMatchObject({ source: 'executed', ok: false });
      expect(await countOrders(key)).toBe(0);

      const retried = await service.execute(
        call(key, async (tx) => {
          await tx.$executeRawUnsafe(`INSERT INTO ${q('orders')} (${q('idempotency_key')}) VALUES (${p(1)})`, key);
          return 'ok';
        }),
      );
      expect(retried).toMatchObject({ source: 'executed', ok: true, value: 'ok' });
      expect(await countOrders(key)).toBe(1);
    });
  });
}
