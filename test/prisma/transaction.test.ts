import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { PrismaClient as PostgresPrismaClient } from '../../prisma/generated/postgresql/client.js';
import type { IdempotencyTransactionalStore } from '../../src/stores/contract.js';
import { isTransactionalStore } from '../../src/stores/contract.js';
import { createPrismaStore, type IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import { claimInput, T0 } from '../support/claims.js';
import {
  createTestDatabase,
  describeWithDatabase,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('createPrismaStore types', () => {
  it('is transactional on a PrismaClient, with Prisma’s own transaction client type', () => {
    type Store = ReturnType<typeof createPrismaStore<PostgresPrismaClient>>;
    type Tx = Parameters<Parameters<Store['transaction']>[0]>[0]['client'];
    expectTypeOf<Tx>().toHaveProperty('idempotencyRecord');
    expectTypeOf<Tx>().not.toHaveProperty('$connect');
    expectTypeOf<ReturnType<typeof createPrismaStore<IdempotencyPrismaQueryable>>>().not.toHaveProperty('transaction');
  });
});

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'Prisma store transactions', () => {
    let db: TestDatabase<TestProvider>;
    let store: IdempotencyTransactionalStore<IdempotencyPrismaQueryable>;
    const q = (id: string) => (provider === 'mysql' ? `\`${id}\`` : `"${id}"`);
    const countOrders = async (key: string) => {
      const [row] = await db.prisma.$queryRawUnsafe<Array<{ n: unknown }>>(
        `SELECT COUNT(*) AS n FROM ${q('orders')} WHERE ${q('idempotency_key')} = ${provider === 'postgresql' ? '$1' : '?'}`,
        key,
      );
      return Number(row?.n);
    };
    const insertOrder = (client: IdempotencyPrismaQueryable, key: string) =>
      client.$executeRawUnsafe(
        `INSERT INTO ${q('orders')} (${q('idempotency_key')}) VALUES (${provider === 'postgresql' ? '$1' : '?'})`,
        key,
      );

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      await db.prisma.$executeRawUnsafe(`CREATE TABLE ${q('orders')} (${q('idempotency_key')} VARCHAR(255) NOT NULL)`);
      store = createPrismaStore(db.prisma) as unknown as IdempotencyTransactionalStore<IdempotencyPrismaQueryable>;
    });
    afterAll(() => db?.drop());

    it('commits the procedure’s write and the completion together', async () => {
      const input = claimInput();
      await store.claim(input);

      const value = await store.transaction(async (tx) => {
        await insertOrder(tx.client, input.key);
        const completed = await tx.complete({
          scope: input.scope,
          key: input.key,
          ownerToken: input.ownerToken,
          status: 'SUCCEEDED',
          result: new Uint8Array([1, 2]),
          resultCode: null,
          codec: 'json',
        });
        expect(completed).toBe(true);
        return 'ok';
      });

      expect(value).toBe('ok');
      expect(await countOrders(input.key)).toBe(1);
      expect(await store.get(input.scope, input.key)).toMatchObject({ status: 'SUCCEEDED', codec: 'json' });
    });

    it('rolls both back when the work throws after completing', async () => {
      const input = claimInput();
      await store.claim(input);

      await expect(
        store.transaction(async (tx) => {
          await insertOrder(tx.client, input.key);
          await tx.complete({
            scope: input.scope,
            key: input.key,
            ownerToken: input.ownerToken,
            status: 'SUCCEEDED',
            result: new Uint8Array([1]),
            resultCode: null,
            codec: 'json',
          });
          throw new Error('boom after the write');
        }),
      ).rejects.toThrow('boom after the write');

      expect(await countOrders(input.key)).toBe(0);
      expect(await store.get(input.scope, input.key)).toMatchObject({
        status: 'IN_PROGRESS',
        ownerToken: input.ownerToken,
      });
    });

    it('refuses a fenced completion inside the transaction after a takeover', async () => {
      const stale = claimInput();
      await store.claim(stale);
      const later = T0 + 30_000;
      await store.claim(claimInput({ key: stale.key, now: later, lockedUntil: later + 30_000 }));

      const completed = await store.transaction((tx) =>
        tx.complete({
          scope: stale.scope,
          key: stale.key,
          ownerToken: stale.ownerToken,
          status: 'SUCCEEDED',
          result: null,
          resultCode: null,
          codec: null,
        }),
      );

      expect(completed).toBe(false);
    });

    it('passes isolation level and timeout to Prisma', async () => {
      await expect(
        store.transaction(async () => 'fine', { isolationLevel: 'Serializable', timeoutMs: 10_000 }),
      ).resolves.toBe('fine');
      await expect(store.transaction(async () => 'x', { timeoutMs: -1 })).rejects.toThrow(
        /expected `timeoutMs` to be a positive number of milliseconds, got number -1/,
      );
    });

    it(
      provider === 'sqlite'
        ? 'keeps other operations of the same client out of an open transaction (they wait)'
        : 'lets other operations run on other connections while a transaction is open',
      async () => {
        const input = claimInput();
        await store.claim(input);
        const inside = deferred();
        const release = deferred();
        const other = claimInput();
        let otherSettled = false;

        const transaction = store.transaction(async (tx) => {
          await insertOrder(tx.client, input.key);
          inside.resolve();
          await release.promise;
          throw new Error('roll back');
        });
        await inside.promise;
        const otherClaim = store.claim(other).then((result) => {
          otherSettled = true;
          return result;
        });
        // Give the other claim every chance to run now (it must not, on SQLite).
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(otherSettled).toBe(provider !== 'sqlite');
        release.resolve();
        await expect(transaction).rejects.toThrow('roll back');

        expect(await otherClaim).toEqual({ claimed: true, takenOver: false });
        expect(await store.get(other.scope, other.key)).not.toBeNull(); // not rolled back with the transaction
        expect(await countOrders(input.key)).toBe(0);
      },
    );

    it('completes through a store built on a transaction client, inside that transaction', async () => {
      const input = claimInput();
      await store.claim(input);
      const prisma = db.prisma as unknown as {
        $transaction<R>(fn: (tx: IdempotencyPrismaQueryable) => Promise<R>): Promise<R>;
      };

      await expect(
        prisma.$transaction(async (tx) => {
          await insertOrder(tx, input.key);
          const inner = createPrismaStore(tx);
          expect(
            await inner.complete({
              scope: input.scope,
              key: input.key,
              ownerToken: input.ownerToken,
              status: 'SUCCEEDED',
              result: null,
              resultCode: null,
              codec: null,
            }),
          ).toBe(true);
          throw new Error('roll back both');
        }),
      ).rejects.toThrow('roll back both');

      expect(await countOrders(input.key)).toBe(0);
      expect((await store.get(input.scope, input.key))?.status).toBe('IN_PROGRESS');
      expect(isTransactionalStore(createPrismaStore(db.prisma))).toBe(true);
    });
  });
}
