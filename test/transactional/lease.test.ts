// The lease of a transactional call: it covers the whole transaction and is not renewed (see transactionLeaseMs
// in src/core/transaction.ts for why; the PostgreSQL regression is in service.test.ts).
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyTransactionalStore,
  jsonCodec,
} from '../../src/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { deferred, instrument } from '../core/helpers.js';

function transactionalMemoryStore() {
  const inner = instrument(createMemoryStore());
  const store: IdempotencyTransactionalStore<object> = {
    ...inner,
    name: 'memory-with-transactions',
    transaction: (work) => work({ client: {}, complete: (input) => inner.complete(input) }),
  };
  return { store, calls: inner.calls };
}

describe('the lease of a transactional call', () => {
  it.each([
    ['transaction: true (Prisma defaults 2 s + 5 s)', true, 1_000, 8_000],
    ['maxWaitMs + timeoutMs given', { maxWaitMs: 500, timeoutMs: 10_000 }, 1_000, 11_500],
    ['a longer leaseMs wins', { maxWaitMs: 500, timeoutMs: 1_000 }, 30_000, 30_000],
  ] as const)('covers the transaction: %s', async (_name, transaction, leaseMs, expected) => {
    const clock = createManualClock();
    const { store } = transactionalMemoryStore();
    const service = createIdempotencyService({ store, clock, leaseMs });
    const gate = deferred();
    const running = deferred();

    const call = service.execute({
      procedure: 'p',
      key: 'k',
      fingerprint: 'f',
      codec: jsonCodec,
      transaction,
      run: async () => {
        running.resolve();
        await gate.promise;
        return 'done';
      },
    });
    await running.promise;
    const record = await store.get('', 'k');
    gate.resolve();
    await call;

    expect(record && record.lockedUntil - record.createdAt).toBe(expected);
  });

  it('is not renewed while the transaction runs, however long it takes', async () => {
    const clock = createManualClock();
    const { store, calls } = transactionalMemoryStore();
    const service = createIdempotencyService({ store, clock, leaseMs: 3_000 });
    const gate = deferred();
    const running = deferred();
    let aborted = false;

    const call = service.execute({
      procedure: 'p',
      key: 'k',
      fingerprint: 'f',
      codec: jsonCodec,
      transaction: { timeoutMs: 20_000 },
      run: async ({ signal }) => {
        running.resolve();
        await gate.promise;
        aborted = signal.aborted;
        return 'done';
      },
    });
    await running.promise;
    await clock.advance(15_000);
    gate.resolve();

    expect(await call).toEqual({ source: 'executed', ok: true, value: 'done' });
    expect(calls.renew).toBe(0);
    expect(aborted).toBe(false);
    expect(clock.pendingTimers).toBe(0);
  });
});
