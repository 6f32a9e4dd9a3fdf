import { beforeEach, describe, expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyCall,
  type IdempotencyCompleteInput,
  type IdempotencyEvent,
  IdempotencyStatus,
  type IdempotencyStore,
  type IdempotencyTransactionalStore,
  isIdempotencyError,
} from '../../src/index.js';
import { createManualClock, type IdempotencyManualClock } from '../../src/testing/index.js';
import { deferred, testErrors, textCodec, ValidationError } from './helpers.js';

/** The procedure's side of a fake database: writes become visible only when the transaction commits. */
interface FakeTx {
  write(entry: string): void;
}

/**
 * A transactional wrapper over the memory store: the procedure's writes and the fenced completion are staged and
 * applied together at commit, or dropped together on rollback. This tests the service's use of transactions;
 * real databases are covered by the Prisma store tests.
 */
function fakeTransactionalStore(inner: IdempotencyStore) {
  const ledger: string[] = [];
  let failCommit = false;
  const store: IdempotencyTransactionalStore<FakeTx> = {
    ...inner,
    name: 'fake-transactional',
    async transaction(work) {
      const writes: string[] = [];
      const completions: IdempotencyCompleteInput[] = [];
      const result = await work({
        client: { write: (entry) => writes.push(entry) },
        async complete(input) {
          const record = await inner.get(input.scope, input.key);
          if (!record || record.ownerToken !== input.ownerToken || record.status !== 'IN_PROGRESS') return false;
          completions.push(input);
          return true;
        },
      });
      if (failCommit) throw new Error('commit failed: connection reset');
      for (const input of completions) if (!(await inner.complete(input))) throw new Error('fenced at commit');
      ledger.push(...writes);
      return result;
    },
  };
  return {
    store,
    ledger,
    failCommits() {
      failCommit = true;
    },
  };
}

let clock: IdempotencyManualClock;
let events: IdempotencyEvent[];

beforeEach(() => {
  clock = createManualClock();
  events = [];
});

function txCall(run: (tx: FakeTx) => Promise<string>, overrides: Partial<IdempotencyCall<string>> = {}) {
  return {
    procedure: 'payments.create',
    key: 'key-1',
    scope: 'tenant-1',
    fingerprint: computeFingerprint('payments.create', { amount: 100 }),
    codec: textCodec,
    errors: testErrors,
    transaction: true,
    run: (context) => run(context.transaction as FakeTx),
    ...overrides,
  } satisfies IdempotencyCall<string>;
}

describe('transactional mode', () => {
  it('commits the procedure writes and the record together, and replays without writing again', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const service = createIdempotencyService({ store: fake.store, clock });
    const call = txCall(async (tx) => {
      tx.write('charge 100');
      return 'paid';
    });
    expect(await service.execute(call)).toEqual({ source: 'executed', ok: true, value: 'paid' });
    expect(await service.execute(call)).toEqual({ source: 'replayed', ok: true, value: 'paid' });
    expect(fake.ledger).toEqual(['charge 100']);
    expect((await fake.store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.SUCCEEDED);
  });

  it('rolls back the writes of a procedure that throws a retryable error, and releases the key', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const service = createIdempotencyService({ store: fake.store, clock });
    let attempt = 0;
    const call = txCall(async (tx) => {
      tx.write(`charge attempt ${++attempt}`);
      if (attempt === 1) throw new Error('deadlock detected');
      return 'paid';
    });
    expect(await service.execute(call)).toMatchObject({ source: 'executed', ok: false });
    expect(fake.ledger).toEqual([]);
    expect(await fake.store.get('tenant-1', 'key-1')).toBeNull();
    expect(await service.execute(call)).toMatchObject({ source: 'executed', ok: true });
    expect(fake.ledger).toEqual(['charge attempt 2']);
  });

  it('rolls back the writes of a procedure that throws a final error, and stores the error', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const service = createIdempotencyService({ store: fake.store, clock });
    const call = txCall(async (tx) => {
      tx.write('half a charge');
      throw new ValidationError('card declined');
    });
    await service.execute(call);
    const replay = await service.execute(call);
    expect(replay).toMatchObject({ source: 'replayed', ok: false });
    expect(fake.ledger).toEqual([]);
    expect((await fake.store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.FAILED);
  });

  it('rolls back a stale owner whose lease was taken over, and tells it to retry', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const onEvent = (event: IdempotencyEvent) => events.push(event);
    const slow = createIdempotencyService({ store: fake.store, clock, leaseMs: 3_000, onEvent });
    const gate = deferred();
    const first = slow.execute(
      txCall(async (tx) => {
        tx.write('stale charge');
        await gate.promise;
        return 'stale';
      }),
    );
    await clock.advance(0);
    // Prepare: the stale owner's renewals stop reaching the store, its lease lapses, a new owner takes over.
    const record = await fake.store.get('tenant-1', 'key-1');
    await fake.store.release('tenant-1', 'key-1', record?.ownerToken ?? '');
    const thief = createIdempotencyService({ store: fake.store, clock });
    const taken = await thief.execute(
      txCall(async (tx) => {
        tx.write('new owner charge');
        return 'fresh';
      }),
    );
    expect(taken).toMatchObject({ source: 'executed', value: 'fresh' });
    // Act: the stale owner finishes.
    gate.resolve();
    const error = await first.catch((err: unknown) => err);
    // Assess: its writes vanished, the new owner's record stands.
    expect(isIdempotencyError(error) && error.code).toBe('IN_PROGRESS');
    expect(fake.ledger).toEqual(['new owner charge']);
    expect(await thief.execute(txCall(async () => 'unused'))).toMatchObject({ source: 'replayed', value: 'fresh' });
    expect(events.some((e) => e.type === 'store-error' && e.operation === 'complete')).toBe(true);
  });

  it('releases the key when the transaction itself fails to commit', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const service = createIdempotencyService({ store: fake.store, clock });
    fake.failCommits();
    const outcome = await service.execute(
      txCall(async (tx) => {
        tx.write('charge');
        return 'paid';
      }),
    );
    expect(outcome.ok).toBe(false);
    expect(fake.ledger).toEqual([]);
    expect(await fake.store.get('tenant-1', 'key-1')).toBeNull();
  });

  it('runs a call without a key inside a transaction too', async () => {
    const fake = fakeTransactionalStore(createMemoryStore());
    const service = createIdempotencyService({ store: fake.store, clock });
    const outcome = await service.execute(
      txCall(
        async (tx) => {
          tx.write('keyless charge');
          return 'paid';
        },
        { key: undefined },
      ),
    );
    expect(outcome).toEqual({ source: 'bypassed', ok: true, value: 'paid' });
    expect(fake.ledger).toEqual(['keyless charge']);
  });

  it('refuses transactional mode on a store that cannot do it, before anything runs', async () => {
    const store = createMemoryStore();
    const service = createIdempotencyService({ store, clock });
    let runs = 0;
    const call = txCall(async () => {
      runs++;
      return 'x';
    });
    await expect(service.execute(call)).rejects.toThrow(/store "memory" cannot run transactions.*createPrismaStore/);
    expect(runs).toBe(0);
    expect(await store.get('tenant-1', 'key-1')).toBeNull();
  });
});
