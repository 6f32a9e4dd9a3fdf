import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdempotencyClaimResult, IdempotencyStore } from '../../src/stores/contract.js';
import {
  applyIdempotencyMigrations,
  createPrismaStore,
  type IdempotencyPrismaQueryable,
} from '../../src/stores/prisma/index.js';
import { claimInput, LEASE_MS as LEASE, T0, TTL_MS as TTL } from '../support/claims.js';
import {
  createTestDatabase,
  describeWithDatabase,
  spawnClaimWorker,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestPrismaClient,
  type TestProvider,
} from '../support/databases.js';

const winners = (results: readonly IdempotencyClaimResult[]) => results.filter((result) => result.claimed).length;

/** Count the raw-SQL calls the store makes: each is exactly one statement sent to the database. */
function countingClient<T extends IdempotencyPrismaQueryable>(client: T): { client: T; calls: string[] } {
  const calls: string[] = [];
  const proxy = new Proxy(client, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if ((property === '$queryRawUnsafe' || property === '$executeRawUnsafe') && typeof value === 'function') {
        return (sql: string, ...values: unknown[]) => {
          calls.push(sql);
          return value.call(target, sql, ...values);
        };
      }
      return value;
    },
  });
  return { client: proxy, calls };
}

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'Prisma store', () => {
    let db: TestDatabase<TestProvider>;
    let store: IdempotencyStore;
    const queries: string[] = [];

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      store = createPrismaStore(db.prisma);
    });
    afterAll(() => db?.drop());

    describe('statements per operation', () => {
      it('a fresh claim plus its completion is exactly 2 statements, and a get is 1', async () => {
        // Prepare: a client that reports what Prisma sends, wrapped in a proxy that counts what the store asks.
        const logged = await db.createClient({ onQuery: (sql) => queries.push(sql) });
        const { client, calls } = countingClient(logged);
        const counted = createPrismaStore(client);
        const input = claimInput();

        // Act
        await counted.claim(input);
        await counted.complete({
          scope: input.scope,
          key: input.key,
          ownerToken: input.ownerToken,
          status: 'SUCCEEDED',
          result: new Uint8Array([1]),
          resultCode: null,
          codec: 'json',
        });
        const afterPair = { calls: calls.length, queries: queries.length };
        await counted.get(input.scope, input.key);

        // Assess
        expect(afterPair).toEqual({ calls: 2, queries: 2 });
        expect(calls).toHaveLength(3);
        expect(queries).toHaveLength(3);
      });

      it('a lost claim is 1 statement on PostgreSQL and 2 elsewhere; a takeover 2 and 3', async () => {
        const { client, calls } = countingClient(db.prisma);
        const counted = createPrismaStore(client);
        const first = claimInput();
        await counted.claim(first);

        calls.length = 0;
        const lost = await counted.claim(claimInput({ key: first.key }));
        expect(lost.claimed).toBe(false);
        expect(calls).toHaveLength(provider === 'postgresql' ? 1 : 2);

        calls.length = 0;
        const later = T0 + LEASE;
        const takeover = await counted.claim(
          claimInput({ key: first.key, now: later, lockedUntil: later + LEASE, expiresAt: later + TTL }),
        );
        expect(takeover).toMatchObject({ claimed: true, takenOver: true, previous: { ownerToken: first.ownerToken } });
        expect(calls).toHaveLength(provider === 'postgresql' ? 2 : 3);
      });

      it.runIf(provider === 'postgresql')(
        'a lost claim on PostgreSQL takes no row lock and writes nothing (no transaction id is assigned)',
        async () => {
          const finished = claimInput();
          await store.claim(finished);
          await store.complete({ ...finished, status: 'SUCCEEDED', result: null, resultCode: null, codec: 'json' });
          const running = claimInput();
          await store.claim(running);

          // Run the claims inside a transaction only to ask PostgreSQL whether they made it assign an xid: a row
          // lock or any write would. (The store's claims normally run as autocommit statements.)
          const pg = db.prisma as TestPrismaClient<'postgresql'>;
          const xids = await pg.$transaction(async (tx) => {
            const inTx = createPrismaStore(tx as unknown as IdempotencyPrismaQueryable, { provider: 'postgresql' });
            const replay = await inTx.claim(claimInput({ key: finished.key }));
            const duplicate = await inTx.claim(claimInput({ key: running.key }));
            expect(replay).toMatchObject({ claimed: false, existing: { status: 'SUCCEEDED' } });
            expect(duplicate).toMatchObject({ claimed: false, existing: { ownerToken: running.ownerToken } });
            return tx.$queryRawUnsafe<Array<{ xid: unknown }>>('SELECT txid_current_if_assigned() AS xid');
          });

          expect(xids).toEqual([{ xid: null }]);
        },
      );

      it.runIf(provider === 'postgresql')(
        'reads again when the conflicting row was committed after the claim statement started (2 statements)',
        async () => {
          // Prepare: another connection inserts the key and keeps its transaction open, so our claim's INSERT
          // waits on it with a snapshot that predates the row.
          const other = (await db.createClient({ poolSize: 1 })) as TestPrismaClient<'postgresql'>;
          const { client, calls } = countingClient(db.prisma);
          const counted = createPrismaStore(client);
          const holder = claimInput();
          let claiming: Promise<IdempotencyClaimResult> | undefined;
          try {
            await other.$transaction(async (tx) => {
              const [row] = await tx.$queryRawUnsafe<Array<{ xid: string }>>(
                'SELECT xid(pg_current_xact_id())::text AS xid',
              );
              await createPrismaStore(tx as unknown as IdempotencyPrismaQueryable, { provider: 'postgresql' }).claim(
                holder,
              );
              claiming = counted.claim(claimInput({ key: holder.key }));
              // Act: commit only once our claim is blocked on that transaction.
              for (let waited = 0; ; waited += 10) {
                const [waiting] = await db.prisma.$queryRawUnsafe<Array<{ count: number }>>(
                  "SELECT count(*)::int AS count FROM pg_locks WHERE locktype = 'transactionid' " +
                    'AND transactionid::text = $1 AND NOT granted',
                  row?.xid,
                );
                if ((waiting?.count ?? 0) > 0) break;
                if (waited > 10_000) throw new Error('the claim never waited for the open transaction');
                await new Promise((resolve) => setTimeout(resolve, 10));
              }
            });
            const result = await claiming;

            // Assess: the claim lost to the committed row and returned it, after one re-read.
            expect(result).toMatchObject({ claimed: false, existing: { ownerToken: holder.ownerToken } });
            expect(calls).toHaveLength(2);
          } finally {
            await claiming?.catch(() => undefined);
            await other.$disconnect();
          }
        },
        30_000,
      );
    });

    describe('keys are byte-exact (binary, NO PAD collation on MySQL)', () => {
      it("keeps 'abc', 'abc ', 'ABC', ' abc' and 'ábc' apart in keys and scopes", async () => {
        const variants = ['abc', 'abc ', 'ABC', ' abc', 'ábc', 'abc\t'];
        const scope = `collation-${randomUUID()}`;
        for (const key of variants) {
          expect((await store.claim(claimInput({ scope, key }))).claimed, `key ${JSON.stringify(key)}`).toBe(true);
        }
        for (const variant of variants) {
          const result = await store.claim(claimInput({ scope: `${scope}:${variant}`, key: 'same-key' }));
          expect(result.claimed, `scope suffix ${JSON.stringify(variant)}`).toBe(true);
        }
        for (const key of variants) {
          expect((await store.get(scope, key))?.key).toBe(key);
        }
      });
    });

    describe('concurrency', () => {
      it('lets exactly one of 50 concurrent claims from 3 PrismaClients win', async () => {
        const clients = [db.prisma, await db.createClient(), await db.createClient()];
        const stores = clients.map((client) => createPrismaStore(client));
        const key = randomUUID();
        const inputs = Array.from({ length: 50 }, () => claimInput({ key }));

        const results = await Promise.all(inputs.map((input, i) => (stores[i % 3] as IdempotencyStore).claim(input)));

        expect(winners(results)).toBe(1);
        const winner = inputs[results.findIndex((result) => result.claimed)];
        expect((await store.get('tenant-1', key))?.ownerToken).toBe(winner?.ownerToken);
        for (const result of results) {
          if (!result.claimed) expect(result.existing.ownerToken).toBe(winner?.ownerToken);
        }
      });

      it('lets exactly one of 50 concurrent takeovers of a lapsed lease from 3 PrismaClients win', async () => {
        const clients = [db.prisma, await db.createClient(), await db.createClient()];
        const stores = clients.map((client) => createPrismaStore(client));
        const crashed = claimInput();
        await store.claim(crashed);
        const later = T0 + LEASE + 1;
        const inputs = Array.from({ length: 50 }, () =>
          claimInput({ key: crashed.key, now: later, lockedUntil: later + LEASE, expiresAt: later + TTL }),
        );

        const results = await Promise.all(inputs.map((input, i) => (stores[i % 3] as IdempotencyStore).claim(input)));

        expect(winners(results)).toBe(1);
        const winning = results.find((result) => result.claimed);
        expect(winning).toMatchObject({ claimed: true, takenOver: true });
        const record = await store.get('tenant-1', crashed.key);
        expect(record?.ownerToken).toBe(inputs[results.indexOf(winning as IdempotencyClaimResult)]?.ownerToken);
        expect(record?.lockedUntil).toBe(later + LEASE);
      });

      it('lets exactly one of 50 claims from two OS processes win', async () => {
        const key = randomUUID();
        const ours = Array.from({ length: 25 }, () => claimInput({ key }));
        const theirs = Array.from({ length: 25 }, () => claimInput({ key }));
        const worker = spawnClaimWorker(db.namespace, theirs);
        try {
          await Promise.all(Array.from({ length: 4 }, () => db.prisma.$queryRawUnsafe('SELECT 1')));
          await worker.ready;

          worker.go();
          const [childResults, parentResults] = await Promise.all([
            worker.results,
            Promise.all(ours.map((input) => store.claim(input))),
          ]);

          expect(childResults).toHaveLength(25);
          expect(winners([...childResults, ...parentResults])).toBe(1);
          const record = await store.get('tenant-1', key);
          expect([...ours, ...theirs].map((input) => input.ownerToken)).toContain(record?.ownerToken);
        } finally {
          worker.kill();
        }
      }, 60_000);
    });

    describe('results', () => {
      it('round-trips a 1 MiB binary result byte for byte, as a plain Uint8Array', async () => {
        const input = claimInput();
        await store.claim(input);
        const bytes = new Uint8Array(randomBytes(1_048_576));
        bytes[0] = 0;
        bytes[bytes.length - 1] = 0xff;
        expect(
          await store.complete({
            scope: input.scope,
            key: input.key,
            ownerToken: input.ownerToken,
            status: 'SUCCEEDED',
            result: bytes,
            resultCode: null,
            codec: 'protobuf',
          }),
        ).toBe(true);

        const record = await store.get(input.scope, input.key);

        expect(record?.result?.constructor).toBe(Uint8Array);
        expect(record?.result?.byteLength).toBe(bytes.byteLength);
        expect(Buffer.compare(Buffer.from(record?.result as Uint8Array), Buffer.from(bytes))).toBe(0);
      });

      it('returns epoch-millisecond numbers exactly as claimed', async () => {
        const input = claimInput({ now: T0 + 7, lockedUntil: T0 + 7 + LEASE, expiresAt: T0 + 7 + TTL });
        await store.claim(input);
        expect(await store.get(input.scope, input.key)).toMatchObject({
          createdAt: T0 + 7,
          lockedUntil: T0 + 7 + LEASE,
          expiresAt: T0 + 7 + TTL,
        });
      });
    });

    describe('custom table name', () => {
      it('migrates and uses a table of another name, side by side with the default one', async () => {
        await applyIdempotencyMigrations(db.prisma, { tableName: 'billing_idempotency' });
        const billing = createPrismaStore(db.prisma, { tableName: 'billing_idempotency' });
        const input = claimInput();

        expect((await billing.claim(input)).claimed).toBe(true);

        expect(await billing.get(input.scope, input.key)).not.toBeNull();
        expect(await store.get(input.scope, input.key)).toBeNull();
        expect((await store.claim(input)).claimed).toBe(true);
      });
    });

    describe('bad input is refused with a message that says what to fix', () => {
      it('refuses a 256-character key before it reaches the database', async () => {
        await expect(store.claim(claimInput({ key: 'k'.repeat(256) }))).rejects.toThrow(
          /expected `key` to have at most 255 characters, got string "k{40}…" \(length 256\)/,
        );
      });

      it('refuses unpaired surrogates, which would collapse distinct scopes', async () => {
        await expect(store.get('tenant-\uD800', 'k')).rejects.toThrow(/unpaired UTF-16 surrogate/);
      });

      it('refuses fractional or negative limits and non-byte results', async () => {
        await expect(store.purgeExpired({ now: T0, limit: 0 })).rejects.toThrow(/`limit` to be a positive integer/);
        const input = claimInput();
        await store.claim(input);
        await expect(
          store.complete({
            scope: input.scope,
            key: input.key,
            ownerToken: input.ownerToken,
            status: 'SUCCEEDED',
            result: 'text' as unknown as Uint8Array,
            resultCode: null,
            codec: null,
          }),
        ).rejects.toThrow(/expected `result` to be a Uint8Array or null, got string "text"/);
      });

      it.runIf(provider === 'postgresql')(
        'refuses a NUL character on PostgreSQL, whose text cannot hold it',
        async () => {
          await expect(store.get('tenant\u0000', 'k')).rejects.toThrow(/NUL character, which PostgreSQL/);
        },
      );

      it.runIf(provider !== 'postgresql')(
        'stores a NUL character as a distinct scope where the database can',
        async () => {
          const input = claimInput({ scope: 'tenant\u0000' });
          expect((await store.claim(input)).claimed).toBe(true);
          expect(await store.get('tenant', input.key)).toBeNull();
          expect((await store.get('tenant\u0000', input.key))?.scope).toBe('tenant\u0000');
        },
      );
    });

    describe('provider detection', () => {
      it(`detects '${provider}' from the client, a transaction client and an extended client`, async () => {
        expect(createPrismaStore(db.prisma).name).toBe(`prisma:${provider}`);
        const extended = (db.prisma as unknown as { $extends(extension: object): IdempotencyPrismaQueryable }).$extends(
          {},
        );
        expect(createPrismaStore(extended).name).toBe(`prisma:${provider}`);
        const name = await (
          db.prisma as unknown as {
            $transaction<R>(fn: (tx: IdempotencyPrismaQueryable) => Promise<R>): Promise<R>;
          }
        ).$transaction(async (tx) => createPrismaStore(tx).name);
        expect(name).toBe(`prisma:${provider}`);
      });

      it('refuses a provider option that contradicts the client', () => {
        const other = provider === 'mysql' ? 'postgresql' : 'mysql';
        expect(() => createPrismaStore(db.prisma, { provider: other })).toThrow(
          new RegExp(`option \`provider\` is '${other}' but the Prisma client was generated for '${provider}'`),
        );
      });
    });
  });
}

describe('createPrismaStore without a database', () => {
  const rawOnly: IdempotencyPrismaQueryable = {
    $queryRawUnsafe: async <T>() => [] as T,
    $executeRawUnsafe: async () => 0,
  };

  it('explains how to fix an undetectable provider', () => {
    expect(() => createPrismaStore(rawOnly)).toThrow(
      /could not detect the database provider of this Prisma client.*Pass it explicitly: \{ provider: 'sqlite' \| 'postgresql' \| 'mysql' \}/,
    );
  });

  it('accepts an explicit provider for a client it cannot inspect', () => {
    expect(createPrismaStore(rawOnly, { provider: 'mysql' }).name).toBe('prisma:mysql');
  });

  it('refuses something that is not a Prisma client', () => {
    expect(() => createPrismaStore({} as IdempotencyPrismaQueryable)).toThrow(
      /expected a Prisma 7 client \(an object with \$queryRawUnsafe and \$executeRawUnsafe\), got object/,
    );
    expect(() => createPrismaStore(undefined as unknown as IdempotencyPrismaQueryable)).toThrow(/got undefined/);
  });

  it('names unsupported providers', () => {
    const sqlServer = Object.assign(Object.create(rawOnly), { _activeProvider: 'sqlserver' });
    expect(() => createPrismaStore(sqlServer)).toThrow(
      /uses provider 'sqlserver', which the idempotency store does not support/,
    );
    expect(() => createPrismaStore(rawOnly, { provider: 'postgres' as 'postgresql' })).toThrow(
      /option `provider` must be one of 'sqlite', 'postgresql', 'mysql', got string "postgres"/,
    );
  });

  it('refuses a table name that is not a plain identifier', () => {
    for (const tableName of [
      'records; DROP TABLE x',
      'a.b',
      '1abc',
      '',
      'x'.repeat(49),
      'rpc_idempotency_migrations',
    ]) {
      expect(() => createPrismaStore(rawOnly, { provider: 'sqlite', tableName }), tableName).toThrow(/tableName/);
    }
  });
});
