// Transactional mode on real databases, through the service: the procedure's writes (a demo ledger written
// through the transaction client) and the idempotency record commit together or not at all. Crash injection
// uses a separate OS process that is SIGKILLed between its write and its commit.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  type IdempotencyCall,
  type IdempotencyErrorPolicy,
  type IdempotencyService,
  isIdempotencyError,
  jsonCodec,
} from '../../src/index.js';
import type { IdempotencyTransactionOptions } from '../../src/stores/contract.js';
import { createPrismaStore, type IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { deferred } from '../core/helpers.js';
import { createTestDatabase, describeWithDatabase, TEST_PROVIDERS, type TestDatabase } from '../support/databases.js';
import { spawnCrashWorker } from './support/crash.js';
import { createLedger, formatLedger, readLedger, writeLedger } from './support/ledger.js';

class DeclinedError extends Error {
  override name = 'DeclinedError';
}

/** Final: DeclinedError (stored and replayed). Everything else is retryable. */
const errors: IdempotencyErrorPolicy = {
  isFinal: (error) => error instanceof DeclinedError,
  encode: (error) => ({ code: 'DECLINED', bytes: new TextEncoder().encode((error as Error).message) }),
  decode: (_code, bytes) => new DeclinedError(new TextDecoder().decode(bytes)),
};

const PROCEDURE = 'ledger.charge';
const FINGERPRINT = computeFingerprint(PROCEDURE, { amount: 100, currency: 'EUR' });

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'transactional mode through the service', () => {
    let db: TestDatabase;
    let service: IdempotencyService;

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      await createLedger(db.prisma, provider);
      service = createIdempotencyService({ store: createPrismaStore(db.prisma) });
    });
    afterAll(() => db?.drop());

    const ledger = (key?: string) => readLedger(db.prisma, provider, key);
    const charge = (
      key: string,
      run: (tx: IdempotencyPrismaQueryable) => Promise<unknown>,
      overrides: Partial<IdempotencyCall<unknown>> = {},
    ): IdempotencyCall<unknown> => ({
      procedure: PROCEDURE,
      key,
      fingerprint: FINGERPRINT,
      codec: jsonCodec,
      errors,
      transaction: true,
      run: ({ transaction }) => run(transaction as IdempotencyPrismaQueryable),
      ...overrides,
    });

    describe('crash injection', () => {
      it('a process killed after its write and before its commit leaves nothing; the retry writes exactly once', async () => {
        // Prepare: a child process claims the key and writes its ledger row inside the transaction.
        const key = `crash-${provider}-${randomUUID()}`;
        const transaction: IdempotencyTransactionOptions = { maxWaitMs: 200, timeoutMs: 2_000 };
        const worker = spawnCrashWorker({
          namespace: db.namespace,
          key,
          procedure: PROCEDURE,
          fingerprint: FINGERPRINT,
          leaseMs: 500,
          transaction,
        });
        const insideChild = await worker.written;

        // Act: SIGKILL it before it commits, then "restart" (a new service) and retry with the same key.
        expect(await worker.kill()).toBe('SIGKILL');
        const before = await ledger(key);
        const orphan = await service.store.get('', key);
        const restarted = createIdempotencyService({ store: createPrismaStore(db.prisma) });
        const retry = charge(
          key,
          async (tx) => {
            await writeLedger(tx, provider, {
              idempotencyKey: key,
              entry: 'charge 100 EUR',
              writtenBy: 'parent retry',
            });
            return { charged: 100, currency: 'EUR', by: 'parent retry' };
          },
          { transaction },
        );
        let inProgressAnswers = 0;
        let outcome: Awaited<ReturnType<IdempotencyService['execute']>> | undefined;
        const deadline = Date.now() + 15_000;
        while (outcome === undefined) {
          try {
            outcome = await restarted.execute(retry);
          } catch (error) {
            // The dead owner's lease holds the key until it lapses (maxWaitMs + timeoutMs + 1 s).
            if (!isIdempotencyError(error) || error.code !== 'IN_PROGRESS' || Date.now() > deadline) throw error;
            inProgressAnswers++;
            await sleep(100);
          }
        }
        const replay = await restarted.execute(retry);
        const after = await ledger(key);

        // Assess
        console.log(
          [
            `[crash injection, ${provider}] child wrote its row, then got SIGKILL before COMMIT`,
            formatLedger('ledger inside the child transaction, just before the kill', insideChild),
            formatLedger(`ledger after the kill (record: ${orphan?.status ?? 'none'})`, before),
            `retry with the same key: IN_PROGRESS ${inProgressAnswers} times until the dead owner's lease lapsed, then ${outcome.source}`,
            formatLedger('ledger after the retry and one more replay', after),
            `response: ${JSON.stringify(outcome.ok ? outcome.value : outcome.error)}; replay: ${replay.source} ${JSON.stringify(replay.ok ? replay.value : replay.error)}`,
          ].join('\n'),
        );
        expect(insideChild).toHaveLength(1);
        expect(before).toEqual([]);
        expect(orphan?.status).toBe('IN_PROGRESS');
        expect(inProgressAnswers).toBeGreaterThan(0);
        expect(outcome).toEqual({
          source: 'executed',
          ok: true,
          value: { charged: 100, currency: 'EUR', by: 'parent retry' },
        });
        expect(replay).toEqual({ ...outcome, source: 'replayed' });
        expect(after.map((row) => row.writtenBy)).toEqual(['parent retry']);
      }, 30_000);
    });

    describe('procedure errors', () => {
      it('a retryable error rolls the writes back and releases the key; the retry runs cleanly', async () => {
        const key = randomUUID();
        let attempt = 0;
        const call = charge(key, async (tx) => {
          attempt++;
          await writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy: `attempt ${attempt}` });
          if (attempt === 1) throw new Error('connection reset by the payment provider');
          return { attempt };
        });

        const first = await service.execute(call);
        const afterFailure = await ledger(key);
        const released = await service.store.get('', key);
        const second = await service.execute(call);

        expect(first).toMatchObject({ source: 'executed', ok: false, error: { message: /connection reset/ } });
        expect(afterFailure).toEqual([]);
        expect(released).toBeNull();
        expect(second).toEqual({ source: 'executed', ok: true, value: { attempt: 2 } });
        expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 2']);
      });

      it('a final error rolls the writes back, and is stored and replayed without running again', async () => {
        const key = randomUUID();
        let runs = 0;
        const call = charge(key, async (tx) => {
          runs++;
          await writeLedger(tx, provider, { idempotencyKey: key, entry: 'reserve funds', writtenBy: 'declined run' });
          throw new DeclinedError('card declined: insufficient funds');
        });

        const first = await service.execute(call);
        const replay = await service.execute(call);

        expect(first).toMatchObject({ source: 'executed', ok: false });
        expect(replay).toMatchObject({ source: 'replayed', ok: false });
        expect((replay as { error: Error }).error).toBeInstanceOf(DeclinedError);
        expect((replay as { error: Error }).error.message).toBe('card declined: insufficient funds');
        expect(runs).toBe(1);
        expect(await ledger(key)).toEqual([]);
        expect((await service.store.get('', key))?.status).toBe('FAILED');
      });
    });

    describe('a stale owner', () => {
      it('is fenced at commit after its lease lapsed and another caller took over: its writes vanish', async () => {
        // Prepare: two services, as two processes would be, on one clock we move; the thief has its own client.
        const key = randomUUID();
        const clock = createManualClock(Date.now());
        const other = await db.createClient();
        const stale = createIdempotencyService({ store: createPrismaStore(db.prisma), clock });
        const thief = createIdempotencyService({ store: createPrismaStore(other), clock });
        const started = deferred();
        const resume = deferred();
        const write = (tx: IdempotencyPrismaQueryable, writtenBy: string) =>
          writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge 100 EUR', writtenBy });
        const staleRun = stale.execute(
          charge(key, async (tx) => {
            // SQLite has one writer at a time: there the stale owner writes after the thief's commit; elsewhere
            // it writes first and holds its uncommitted row while the thief runs.
            if (provider !== 'sqlite') await write(tx, 'stale owner');
            started.resolve();
            await resume.promise;
            if (provider === 'sqlite') await write(tx, 'stale owner');
            return { by: 'stale owner' };
          }),
        );
        await started.promise;

        // Act: the stale owner's lease lapses, the thief takes over and completes, then the stale one finishes.
        await clock.advance(60_000);
        const taken = await thief.execute(
          charge(key, async (tx) => {
            await write(tx, 'new owner');
            return { by: 'new owner' };
          }),
        );
        resume.resolve();
        const staleError = await staleRun.catch((error: unknown) => error);

        // Assess
        expect(taken).toEqual({ source: 'executed', ok: true, value: { by: 'new owner' } });
        expect(isIdempotencyError(staleError) && staleError.code).toBe('IN_PROGRESS');
        expect((staleError as Error).message).toMatch(
          /lapsed and another caller took it over, so this run was rolled back/,
        );
        expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['new owner']);
        expect(await stale.execute(charge(key, async () => ({ by: 'unused' })))).toEqual({
          source: 'replayed',
          ok: true,
          value: { by: 'new owner' },
        });
      });
    });

    describe('transaction options', () => {
      it('a timeout shorter than the procedure rolls back and releases the key, with the database error', async () => {
        const key = randomUUID();
        let attempt = 0;
        const call = charge(
          key,
          async (tx) => {
            attempt++;
            await writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy: `attempt ${attempt}` });
            if (attempt === 1) await sleep(700);
            return { attempt };
          },
          { transaction: { timeoutMs: 250 } },
        );

        const first = await service.execute(call);

        expect(first.ok).toBe(false);
        expect(String((first as { error: unknown }).error)).toMatch(/timeout|expired|closed/i);
        expect(await ledger(key)).toEqual([]);
        expect(await service.store.get('', key)).toBeNull();
        expect(await service.execute(call)).toEqual({ source: 'executed', ok: true, value: { attempt: 2 } });
        expect(await ledger(key)).toHaveLength(1);
      });

      if (provider === 'postgresql') {
        it('passes the isolation level through, and completes under it after the old renewal interval', async () => {
          // Regression: a lease renewal from another connection during the transaction made the fenced completion
          // fail with 40001 under RepeatableRead / Serializable, on every attempt.
          const key = randomUUID();
          const shortLease = createIdempotencyService({ store: createPrismaStore(db.prisma), leaseMs: 150 });

          const outcome = await shortLease.execute(
            charge(
              key,
              async (tx) => {
                await writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy: 'serializable' });
                await sleep(400);
                const [row] = await tx.$queryRawUnsafe<Array<{ level: string }>>(
                  `SELECT current_setting('transaction_isolation') AS level`,
                );
                return { level: row?.level };
              },
              { transaction: { isolationLevel: 'Serializable' } },
            ),
          );

          expect(outcome).toEqual({ source: 'executed', ok: true, value: { level: 'serializable' } });
          expect(await ledger(key)).toHaveLength(1);
        });
      }

      if (provider === 'sqlite') {
        it('refuses an isolation level SQLite does not have, before the procedure runs, and releases the key', async () => {
          const key = randomUUID();
          let runs = 0;
          const outcome = await service.execute(
            charge(
              key,
              async () => {
                runs++;
                return {};
              },
              { transaction: { isolationLevel: 'ReadCommitted' } },
            ),
          );

          expect(outcome.ok).toBe(false);
          expect(String((outcome as { error: unknown }).error)).toMatch(
            /expected `isolationLevel` to be one of 'Serializable' on sqlite, got string "ReadCommitted".*SQLite runs every transaction serializably/,
          );
          expect(runs).toBe(0);
          expect(await service.store.get('', key)).toBeNull();
        });
      }
    });

    if (provider === 'postgresql') {
      describe('concurrency', () => {
        it('50 concurrent duplicates over two clients write one ledger row and all get its result', async () => {
          const key = randomUUID();
          const other = await db.createClient({ poolSize: 8 });
          const services = [db.prisma, other].map((client) =>
            createIdempotencyService({ store: createPrismaStore(client), inFlight: { wait: true, timeoutMs: 20_000 } }),
          );
          let runs = 0;
          const call = charge(key, async (tx) => {
            runs++;
            await writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy: `run ${runs}` });
            await sleep(100); // long enough that the duplicates arrive while it runs
            return { runs };
          });

          const outcomes = await Promise.all(
            Array.from({ length: 50 }, (_, index) => services[index % 2]!.execute(call)),
          );

          expect(outcomes.filter((outcome) => outcome.source === 'executed')).toHaveLength(1);
          expect(outcomes.filter((outcome) => outcome.source === 'replayed')).toHaveLength(49);
          expect(new Set(outcomes.map((outcome) => JSON.stringify(outcome.ok && outcome.value)))).toEqual(
            new Set([JSON.stringify({ runs: 1 })]),
          );
          expect(runs).toBe(1);
          expect(await ledger(key)).toHaveLength(1);
        });
      });
    }

    describe('writes that transactional mode does not cover', () => {
      it(
        provider === 'sqlite'
          ? 'SQLite: a write through the global client lands in the open transaction (one connection) and rolls back with it'
          : 'a write through the global client instead of tx is its own transaction: it survives the rollback',
        async () => {
          const key = randomUUID();
          const outcome = await service.execute(
            charge(key, async (tx) => {
              await writeLedger(tx, provider, { idempotencyKey: key, entry: 'through tx', writtenBy: 'tx' });
              await writeLedger(db.prisma, provider, {
                idempotencyKey: key,
                entry: 'through prisma',
                writtenBy: 'global',
              });
              throw new Error('roll back');
            }),
          );

          expect(outcome.ok).toBe(false);
          expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(provider === 'sqlite' ? [] : ['global']);
        },
      );
    });

    if (provider === 'sqlite') {
      describe('SQLite: one connection per client', () => {
        it('a non-transactional call of another request waits for an open transaction instead of joining it', async () => {
          const txKey = randomUUID();
          const plainKey = randomUUID();
          const inside = deferred();
          const release = deferred();
          const order: string[] = [];

          const transactional = service.execute(
            charge(txKey, async (tx) => {
              await writeLedger(tx, provider, { idempotencyKey: txKey, entry: 'charge', writtenBy: 'transactional' });
              inside.resolve();
              await release.promise;
              order.push('transaction rolls back');
              throw new Error('roll back');
            }),
          );
          await inside.promise;
          const plain = service.execute(
            charge(
              plainKey,
              async () => {
                order.push('plain call runs');
                return { plain: true };
              },
              { transaction: false },
            ),
          );
          await sleep(100);
          release.resolve();

          expect((await transactional).ok).toBe(false);
          expect(await plain).toEqual({ source: 'executed', ok: true, value: { plain: true } });
          expect(order).toEqual(['transaction rolls back', 'plain call runs']);
          expect((await service.store.get('', plainKey))?.status).toBe('SUCCEEDED');
          expect(await ledger(txKey)).toEqual([]);
        });

        it('refuses at once an idempotent call nested in a transactional procedure (it would wait for itself)', async () => {
          const outer = randomUUID();
          const started = Date.now();

          const outcome = await service.execute(
            charge(outer, async () =>
              service.execute(charge(randomUUID(), async () => ({ inner: true }), { transaction: false })),
            ),
          );

          expect(Date.now() - started).toBeLessThan(1_000);
          expect(outcome).toMatchObject({ source: 'executed', ok: false, error: { code: 'STORE_UNAVAILABLE' } });
          expect(((outcome as { error: Error }).error.cause as Error).message).toMatch(
            /a store operation was started inside a store transaction of the same client .* it would wait for its own transaction forever/,
          );
          expect(await service.store.get('', outer)).toBeNull();
        });

        it('gives the client back when a transactional procedure never returns: after maxWait + timeout + 1 s', async () => {
          const stuckKey = randomUUID();
          const plainKey = randomUUID();
          const transaction = { maxWaitMs: 100, timeoutMs: 200 };
          const started = Date.now();

          const stuck = service.execute(charge(stuckKey, () => new Promise<never>(() => undefined), { transaction }));
          await sleep(50);
          const plain = await service.execute(charge(plainKey, async () => ({ plain: true }), { transaction: false }));
          const stuckOutcome = await stuck;

          expect(Date.now() - started).toBeGreaterThanOrEqual(1_300);
          expect(plain).toEqual({ source: 'executed', ok: true, value: { plain: true } });
          expect(stuckOutcome.ok).toBe(false);
          expect(String((stuckOutcome as { error: unknown }).error)).toMatch(
            /the work of a SQLite transaction had not returned 1300 ms after it started \(maxWait \+ timeout \+ 1 s\)/,
          );
          expect(await service.store.get('', stuckKey)).toBeNull();
          expect(await service.execute(charge(randomUUID(), async () => ({ after: true })))).toMatchObject({
            ok: true,
          });
        });
      });
    }
  });
}
