// Regression: a stale owner's refused release was reported as `released`.
//
// When the owner's lease lapsed and another caller took the record over, the stale owner's handler failing
// with a retryable error made the service call `store.release`, which the fence refused (it returns false),
// yet the service emitted `released`, telling metrics the key was free for a retry while the new owner's
// record stood. Found by the reliability suite (test/reliability/crash.test.ts, SIGSTOP/SIGCONT).
import { describe, expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyEvent,
  type IdempotencyStore,
} from '../../src/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { deferred, testErrors, textCodec } from './helpers.js';

describe('a stale owner whose release is refused by the fence', () => {
  it('reports store-error (release), not released, and leaves the new owner record alone', async () => {
    // Prepare: one store shared by two services; the stale one's renewals never reach the store (a frozen
    // process), so its lease lapses while its handler still runs.
    const clock = createManualClock();
    const shared = createMemoryStore();
    const frozenRenewals: IdempotencyStore = { ...shared, name: 'frozen', renew: async () => true };
    const staleEvents: IdempotencyEvent[] = [];
    const stale = createIdempotencyService({
      store: frozenRenewals,
      clock,
      leaseMs: 1_000,
      writeRetry: { attempts: 1, delayMs: 0 },
      onEvent: (event) => staleEvents.push(event),
    });
    const fresh = createIdempotencyService({ store: shared, clock, leaseMs: 1_000 });
    const call = {
      procedure: 'payments.create',
      key: 'key-1',
      scope: 'tenant-1',
      fingerprint: computeFingerprint('payments.create', { amount: 1 }),
      codec: textCodec,
      errors: testErrors,
    };
    const entered = deferred();
    const failNow = deferred();
    const staleRun = stale.execute({
      ...call,
      run: async () => {
        entered.resolve();
        await failNow.promise;
        throw new Error('upstream timeout'); // retryable under testErrors
      },
    });
    await entered.promise;
    await clock.advance(1_001);
    const taken = await fresh.execute({ ...call, run: async () => 'paid by the new owner' });

    // Act: the stale handler fails; the service tries to release the record it no longer owns.
    failNow.resolve();
    const outcome = await staleRun;

    // Assess
    expect(taken).toMatchObject({ source: 'executed', ok: true, value: 'paid by the new owner' });
    expect(outcome).toMatchObject({ source: 'executed', ok: false });
    expect(staleEvents.map((event) => event.type)).not.toContain('released');
    expect(staleEvents.find((event) => event.type === 'store-error')).toMatchObject({ operation: 'release' });
    expect(await shared.get('tenant-1', 'key-1')).toMatchObject({ status: 'SUCCEEDED' });
    expect(await fresh.execute({ ...call, run: async () => 'ran again' })).toMatchObject({
      source: 'replayed',
      value: 'paid by the new owner',
    });
  });
});
