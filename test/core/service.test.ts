import { beforeEach, describe, expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyCall,
  type IdempotencyEvent,
  type IdempotencyServiceOptions,
  IdempotencyStatus,
  isIdempotencyError,
  jsonCodec,
} from '../../src/index.js';
import { createManualClock, type IdempotencyManualClock } from '../../src/testing/index.js';
import { deferred, type InstrumentedStore, instrument, testErrors, textCodec, ValidationError } from './helpers.js';

const PROCEDURE = 'payments.create';

let clock: IdempotencyManualClock;
let store: InstrumentedStore;
let events: IdempotencyEvent[];

beforeEach(() => {
  clock = createManualClock();
  store = instrument(createMemoryStore());
  events = [];
});

function makeService(options: Partial<IdempotencyServiceOptions> = {}) {
  return createIdempotencyService({
    store,
    clock,
    onEvent: (event) => events.push(event),
    writeRetry: { attempts: 3, delayMs: 0 },
    ...options,
  });
}

function call(
  overrides: Partial<IdempotencyCall<string>> & { input?: unknown; run?: IdempotencyCall<string>['run'] } = {},
): IdempotencyCall<string> & { runs: () => number } {
  let runs = 0;
  const { input = { amount: 100 }, run, ...rest } = overrides;
  const procedure = rest.procedure ?? PROCEDURE;
  return {
    procedure,
    key: 'key-1',
    scope: 'tenant-1',
    fingerprint: computeFingerprint(procedure, input),
    codec: textCodec,
    errors: testErrors,
    ...rest,
    run: async (context) => {
      runs++;
      return run ? run(context) : `paid ${runs}`;
    },
    runs: () => runs,
  };
}

async function expectIdempotencyError(promise: Promise<unknown>, code: string) {
  const error = await promise.then(
    () => {
      throw new Error(`expected IdempotencyError ${code}, but the call succeeded`);
    },
    (err: unknown) => err,
  );
  expect(isIdempotencyError(error), String(error)).toBe(true);
  expect((error as { code: string }).code).toBe(code);
  return error as Error & { code: string; retryAfterMs?: number };
}

const types = () => events.map((event) => event.type);

describe('calls without a key', () => {
  it('run normally when the key is optional, and touch no store', async () => {
    const service = makeService();
    const c = call({ key: undefined });
    expect(await service.execute(c)).toEqual({ source: 'bypassed', ok: true, value: 'paid 1' });
    expect(await service.execute(c)).toEqual({ source: 'bypassed', ok: true, value: 'paid 2' });
    expect(store.totalCalls()).toBe(0);
  });

  it('report a thrown error as ok: false', async () => {
    const service = makeService();
    const boom = new Error('boom');
    const outcome = await service.execute(
      call({
        key: null,
        run: async () => {
          throw boom;
        },
      }),
    );
    expect(outcome).toEqual({ source: 'bypassed', ok: false, error: boom });
  });

  it('fail with KEY_MISSING when the procedure requires a key, without running it', async () => {
    const service = makeService();
    const c = call({ key: undefined, required: true });
    const error = await expectIdempotencyError(service.execute(c), 'KEY_MISSING');
    expect(error.message).toContain(PROCEDURE);
    expect(c.runs()).toBe(0);
  });
});

describe('key validation', () => {
  it.each([
    ['empty', ''],
    ['256 characters', 'k'.repeat(256)],
    ['a newline', 'abc\ndef'],
    ['a NUL byte', 'abc\u0000'],
    ['DEL', 'abc\u007f'],
    ['non-ASCII', 'clé'],
    ['a leading space', ' abc'],
    ['a trailing space', 'abc '],
    ['a number', 42],
    ['an array', ['a', 'b']],
  ])('rejects a key with %s as KEY_INVALID, storing nothing', async (_label, key) => {
    const service = makeService();
    const c = call({ key });
    const error = await expectIdempotencyError(service.execute(c), 'KEY_INVALID');
    expect(error.message).toMatch(/expected 1 to 255 printable ASCII characters/);
    expect(c.runs()).toBe(0);
    expect(store.calls.claim).toBe(0);
  });

  it('accepts 255 printable characters, including inner spaces and punctuation', async () => {
    const service = makeService();
    const key = `a b~!${'x'.repeat(250)}`;
    expect(key).toHaveLength(255);
    const outcome = await service.execute(call({ key }));
    expect(outcome.source).toBe('executed');
  });

  it('rejects a scope that is not a short string as a programming error', async () => {
    const service = makeService();
    await expect(service.execute(call({ scope: 's'.repeat(256) }))).rejects.toThrow(TypeError);
  });
});

describe('first execution and replay', () => {
  it('runs once, stores the encoded result, and replays it', async () => {
    const service = makeService();
    const c = call();
    expect(await service.execute(c)).toEqual({ source: 'executed', ok: true, value: 'paid 1' });
    expect(store.calls).toMatchObject({ claim: 1, complete: 1, get: 0 });
    const record = await store.get('tenant-1', 'key-1');
    expect(record).toMatchObject({ status: IdempotencyStatus.SUCCEEDED, codec: 'text', procedure: PROCEDURE });
    expect(new TextDecoder().decode(record?.result ?? new Uint8Array())).toBe('paid 1');

    expect(await service.execute(c)).toEqual({ source: 'replayed', ok: true, value: 'paid 1' });
    expect(c.runs()).toBe(1);
    expect(types()).toEqual(['executed', 'replayed']);
    expect(events[1]).toMatchObject({ scope: 'tenant-1', key: 'key-1', procedure: PROCEDURE, ok: true, cached: false });
  });

  it('makes a replay cost one store call (the claim that finds the record)', async () => {
    const service = makeService();
    await service.execute(call());
    const before = store.totalCalls();
    await service.execute(call());
    expect(store.totalCalls() - before).toBe(1);
  });

  it('keeps scopes apart: the same key in another scope runs again', async () => {
    const service = makeService();
    const a = await service.execute(call({ scope: 'tenant-a' }));
    const b = await service.execute(call({ scope: 'tenant-b' }));
    expect(a).toMatchObject({ source: 'executed', value: 'paid 1' });
    expect(b).toMatchObject({ source: 'executed', value: 'paid 1' });
  });

  it('runs exactly once for 50 concurrent identical calls, the rest get IN_PROGRESS or a replay', async () => {
    const service = makeService();
    const gate = deferred();
    let runs = 0;
    const make = () =>
      call({
        run: async () => {
          runs++;
          await gate.promise;
          return 'charged';
        },
      });
    const pending = Array.from({ length: 50 }, () => service.execute(make()).catch((error: unknown) => error));
    await clock.advance(0);
    gate.resolve();
    const results = await Promise.all(pending);
    expect(runs).toBe(1);
    const executed = results.filter((r) => (r as { source?: string }).source === 'executed');
    const conflicts = results.filter((r) => isIdempotencyError(r) && r.code === 'IN_PROGRESS');
    expect(executed).toHaveLength(1);
    expect(conflicts).toHaveLength(49);
  });
});

describe('fingerprint mismatch', () => {
  it('refuses a different input under the same key, and nothing runs', async () => {
    const service = makeService();
    await service.execute(call({ input: { amount: 100 } }));
    const second = call({ input: { amount: 999 } });
    const error = await expectIdempotencyError(service.execute(second), 'FINGERPRINT_MISMATCH');
    expect(error.message).toContain('key-1');
    expect(second.runs()).toBe(0);
    expect(types()).toEqual(['executed', 'mismatch']);
  });

  it('refuses the same key on another procedure', async () => {
    const service = makeService();
    await service.execute(call());
    const other = call({ procedure: 'payments.refund' });
    const error = await expectIdempotencyError(service.execute(other), 'FINGERPRINT_MISMATCH');
    expect(error.message).toContain('payments.create');
    expect(other.runs()).toBe(0);
  });

  it('refuses a different input while the first call is still running', async () => {
    const service = makeService();
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    await expectIdempotencyError(service.execute(call({ input: { amount: 1 } })), 'FINGERPRINT_MISMATCH');
    gate.resolve('done');
    await first;
  });

  it('refuses a record written by another codec', async () => {
    const service = makeService();
    await service.execute(call());
    const other = { ...call(), codec: { ...textCodec, name: 'other' } };
    await expectIdempotencyError(service.execute(other), 'FINGERPRINT_MISMATCH');
  });
});

describe('errors', () => {
  it('stores a final error and replays it without running again', async () => {
    const service = makeService();
    const c = call({
      run: async () => {
        throw new ValidationError('amount must be positive');
      },
    });
    const first = await service.execute(c);
    expect(first.ok).toBe(false);
    expect(first.source).toBe('executed');
    const second = await service.execute(c);
    expect(second.source).toBe('replayed');
    expect(second.ok).toBe(false);
    if (second.ok) return;
    expect(second.error).toBeInstanceOf(ValidationError);
    expect((second.error as Error).message).toBe('VALIDATION: amount must be positive');
    expect(c.runs()).toBe(1);
    expect((await store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.FAILED);
  });

  it('releases the record on a retryable error, so a retry runs again', async () => {
    const service = makeService();
    let attempt = 0;
    const c = call({
      run: async () => {
        attempt++;
        if (attempt === 1) throw new Error('database deadlock');
        return 'second try';
      },
    });
    const first = await service.execute(c);
    expect(first).toMatchObject({ source: 'executed', ok: false });
    expect(await store.get('tenant-1', 'key-1')).toBeNull();
    expect(await service.execute(c)).toEqual({ source: 'executed', ok: true, value: 'second try' });
    expect(types()).toEqual(['released', 'executed', 'executed']);
  });

  it('treats every error as retryable when no error policy is given', async () => {
    const service = makeService();
    const c = { ...call({ run: async () => Promise.reject(new ValidationError('x')) }), errors: undefined };
    await service.execute(c);
    expect(await store.get('tenant-1', 'key-1')).toBeNull();
  });

  it('treats an error policy that throws as retryable', async () => {
    const service = makeService();
    const c = {
      ...call({ run: async () => Promise.reject(new Error('x')) }),
      errors: {
        ...testErrors,
        isFinal: () => {
          throw new Error('broken policy');
        },
      },
    };
    await service.execute(c);
    expect(await store.get('tenant-1', 'key-1')).toBeNull();
  });
});

describe('results that cannot be stored', () => {
  it('gives the first caller its result and later callers RESULT_NOT_STORABLE when encoding fails', async () => {
    const service = makeService();
    const c = {
      ...call(),
      codec: {
        ...textCodec,
        encode: () => {
          throw new TypeError('cannot serialize a socket');
        },
      },
    };
    expect(await service.execute(c)).toEqual({ source: 'executed', ok: true, value: 'paid 1' });
    const record = await store.get('tenant-1', 'key-1');
    expect(record).toMatchObject({ status: IdempotencyStatus.FAILED, resultCode: 'RESULT_NOT_STORABLE', result: null });
    const replay = await service.execute(c);
    expect(replay.source).toBe('replayed');
    expect(replay.ok).toBe(false);
    if (replay.ok) return;
    expect(isIdempotencyError(replay.error) && replay.error.code).toBe('RESULT_NOT_STORABLE');
    expect(c.runs()).toBe(1);
    expect(types()).toEqual(['not-storable', 'executed', 'replayed']);
  });

  it('does the same when the result is larger than maxResultBytes', async () => {
    const service = makeService({ maxResultBytes: 10 });
    const c = call({ run: async () => 'x'.repeat(11) });
    expect(await service.execute(c)).toMatchObject({ source: 'executed', ok: true });
    expect((await store.get('tenant-1', 'key-1'))?.resultCode).toBe('RESULT_NOT_STORABLE');
    const notStorable = events.find((event) => event.type === 'not-storable');
    expect(String(notStorable?.error)).toMatch(/11 bytes.*maxResultBytes \(10\)/);
  });

  it('honours a per-call maxResultBytes', async () => {
    const service = makeService({ maxResultBytes: 10 });
    const c = call({ run: async () => 'x'.repeat(11), maxResultBytes: 100 });
    await service.execute(c);
    expect((await store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.SUCCEEDED);
  });

  it('stores a final error that cannot be encoded as RESULT_NOT_STORABLE', async () => {
    const service = makeService();
    const c = {
      ...call({ run: async () => Promise.reject(new ValidationError('bad')) }),
      errors: {
        ...testErrors,
        encode: () => {
          throw new Error('unencodable');
        },
      },
    };
    const first = await service.execute(c);
    expect(first.ok).toBe(false);
    expect((await store.get('tenant-1', 'key-1'))?.resultCode).toBe('RESULT_NOT_STORABLE');
  });

  it('reports a stored final error that cannot be decoded as RESULT_NOT_STORABLE', async () => {
    const service = makeService();
    const c = call({ run: async () => Promise.reject(new ValidationError('bad')) });
    await service.execute(c);
    const broken = {
      ...c,
      errors: {
        ...testErrors,
        decode: () => {
          throw new SyntaxError('truncated error record');
        },
      },
    };
    const error = await expectIdempotencyError(service.execute(broken), 'RESULT_NOT_STORABLE');
    expect(error.message).toContain('truncated error record');
  });

  it('reports a stored result the codec cannot decode as RESULT_NOT_STORABLE', async () => {
    const service = makeService();
    await service.execute({ ...call(), codec: { ...jsonCodec, name: 'text' } as never });
    await store.complete({
      scope: 'tenant-1',
      key: 'key-1',
      ownerToken: 'x',
      status: 'SUCCEEDED',
      result: null,
      resultCode: null,
      codec: null,
    });
    const broken = {
      ...call(),
      codec: {
        ...textCodec,
        decode: () => {
          throw new SyntaxError('truncated');
        },
      },
    };
    await expectIdempotencyError(service.execute(broken), 'RESULT_NOT_STORABLE');
  });
});

describe('in-flight calls', () => {
  it('rejects a duplicate with IN_PROGRESS and a retry hint capped by the lease', async () => {
    const service = makeService({ leaseMs: 3_000, retryAfterMs: 1_000 });
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const error = await expectIdempotencyError(service.execute(call()), 'IN_PROGRESS');
    expect(error.retryAfterMs).toBe(1_000);
    expect(error.message).toContain('still running');
    gate.resolve('done');
    expect(await first).toMatchObject({ source: 'executed', value: 'done' });
    expect(types()).toEqual(['conflict', 'executed']);
  });

  it('with the wait policy, wakes a waiter in the same process as soon as the first call finishes', async () => {
    const service = makeService({ inFlight: { wait: true, timeoutMs: 5_000, pollIntervalMs: 1_000 } });
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const waiters = Array.from({ length: 20 }, () => service.execute(call()));
    await clock.advance(0);
    gate.resolve('done');
    const outcomes = await Promise.all(waiters);
    expect(await first).toMatchObject({ source: 'executed', value: 'done' });
    for (const outcome of outcomes) expect(outcome).toEqual({ source: 'replayed', ok: true, value: 'done' });
  });

  it('with the wait policy, polls the store when the first call runs in another process', async () => {
    const other = makeService();
    const waiting = makeService({ inFlight: { wait: true, timeoutMs: 5_000, pollIntervalMs: 200 } });
    const gate = deferred<string>();
    const first = other.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const waiter = waiting.execute(call());
    await clock.advance(200);
    expect(store.calls.get).toBe(1);
    gate.resolve('done');
    await first;
    await clock.advance(200);
    expect(await waiter).toEqual({ source: 'replayed', ok: true, value: 'done' });
  });

  it('with the wait policy, gives up with IN_PROGRESS after timeoutMs', async () => {
    const other = makeService();
    const waiting = makeService({ inFlight: { wait: true, timeoutMs: 1_000, pollIntervalMs: 300 } });
    const gate = deferred<string>();
    const first = other.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const waiter = expectIdempotencyError(waiting.execute(call()), 'IN_PROGRESS');
    await clock.advance(1_200);
    await waiter;
    gate.resolve('done');
    await first;
  });

  it('with the wait policy, claims and runs itself when the first call fails with a retryable error', async () => {
    const service = makeService({ inFlight: { wait: true, timeoutMs: 5_000 } });
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const second = call();
    const waiter = service.execute(second);
    await clock.advance(0);
    gate.reject(new Error('transient'));
    expect(await first).toMatchObject({ source: 'executed', ok: false });
    expect(await waiter).toEqual({ source: 'executed', ok: true, value: 'paid 1' });
    expect(second.runs()).toBe(1);
  });

  it('honours a per-call in-flight policy', async () => {
    const service = makeService();
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    const waiter = service.execute(call({ inFlight: { wait: true } }));
    await clock.advance(0);
    gate.resolve('ok');
    await first;
    expect(await waiter).toMatchObject({ source: 'replayed', value: 'ok' });
  });
});

describe('leases', () => {
  it('renews the lease while a long call runs, so a duplicate cannot take it over', async () => {
    const service = makeService({ leaseMs: 3_000 });
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(10_000); // more than three leases
    expect(store.calls.renew).toBeGreaterThanOrEqual(9);
    await expectIdempotencyError(service.execute(call()), 'IN_PROGRESS');
    gate.resolve('slow but healthy');
    expect(await first).toMatchObject({ source: 'executed', value: 'slow but healthy' });
    expect(clock.pendingTimers).toBe(0);
  });

  it('stops renewing after maxRunMs, so a hung procedure cannot hold its key until the TTL ends', async () => {
    const service = makeService({ leaseMs: 3_000, maxRunMs: 10_000 });
    let signal: AbortSignal | undefined;
    const hung = service.execute(
      call({
        run: (context) => {
          signal = context.signal;
          return new Promise<string>(() => {});
        },
      }),
    );
    await clock.advance(9_000);
    expect(signal?.aborted).toBe(false);
    await expectIdempotencyError(service.execute(call()), 'IN_PROGRESS');
    await clock.advance(2_000); // past maxRunMs: no more renewals
    expect(signal?.aborted).toBe(true);
    expect(String((signal?.reason as Error | undefined)?.message)).toMatch(/ran longer than maxRunMs \(10000 ms\)/);
    const renewals = store.calls.renew;
    await clock.advance(4_000); // the last lease lapses
    expect(store.calls.renew).toBe(renewals);
    expect(await service.execute(call({ run: async () => 'taken over' }))).toMatchObject({
      source: 'executed',
      value: 'taken over',
    });
    void hung;
  });

  it('takes over a record whose owner crashed, once its lease lapsed', async () => {
    const service = makeService({ leaseMs: 3_000 });
    const now = clock.now();
    await store.claim({
      scope: 'tenant-1',
      key: 'key-1',
      fingerprint: computeFingerprint(PROCEDURE, { amount: 100 }),
      procedure: PROCEDURE,
      ownerToken: 'crashed-owner',
      now,
      lockedUntil: now + 3_000,
      expiresAt: now + 86_400_000,
    });
    await expectIdempotencyError(service.execute(call()), 'IN_PROGRESS');
    await clock.advance(3_000);
    const c = call();
    expect(await service.execute(c)).toMatchObject({ source: 'executed', ok: true });
    expect(types()).toEqual(['conflict', 'taken-over', 'executed']);
    expect(
      await store.complete({
        scope: 'tenant-1',
        key: 'key-1',
        ownerToken: 'crashed-owner',
        status: 'SUCCEEDED',
        result: null,
        resultCode: null,
        codec: null,
      }),
    ).toBe(false);
  });

  it('aborts the signal when the lease is lost, and reports the fenced completion', async () => {
    const service = makeService({ leaseMs: 3_000 });
    const gate = deferred<string>();
    let signal: AbortSignal | undefined;
    const first = service.execute(
      call({
        run: (context) => {
          signal = context.signal;
          return gate.promise;
        },
      }),
    );
    await clock.advance(0);
    store.loseLease();
    await clock.advance(1_000);
    expect(signal?.aborted).toBe(true);
    // Someone else takes the key over meanwhile.
    await clock.advance(3_000);
    const thief = makeService({ leaseMs: 3_000 });
    const stolen = thief.execute(call({ run: () => new Promise(() => {}) }));
    await clock.advance(0);
    gate.resolve('late');
    expect(await first).toMatchObject({ source: 'executed', ok: true, value: 'late' });
    const fenced = events.filter((e) => e.type === 'store-error');
    expect(fenced.map((e) => e.operation)).toEqual(expect.arrayContaining(['renew', 'complete']));
    expect((await store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.IN_PROGRESS);
    void stolen;
  });

  it('keeps running when a renewal throws, and reports it', async () => {
    const service = makeService({ leaseMs: 3_000 });
    const gate = deferred<string>();
    const first = service.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    store.failNext('renew', 1);
    await clock.advance(2_500);
    gate.resolve('ok');
    expect(await first).toMatchObject({ ok: true });
    expect(events.some((e) => e.type === 'store-error' && e.operation === 'renew')).toBe(true);
    expect(store.calls.renew).toBeGreaterThanOrEqual(2);
  });
});

describe('expiry', () => {
  it('treats a record as absent after ttlMs, so the key runs again', async () => {
    const service = makeService({ ttlMs: 60_000 });
    await service.execute(call());
    await clock.advance(59_999);
    expect((await service.execute(call())).source).toBe('replayed');
    await clock.advance(1);
    const again = await service.execute(call({ input: { amount: 5 } }));
    expect(again).toMatchObject({ source: 'executed', ok: true });
  });

  it('honours a per-call ttlMs', async () => {
    const service = makeService();
    await service.execute(call({ ttlMs: 1_000 }));
    expect((await store.get('tenant-1', 'key-1'))?.expiresAt).toBe(clock.now() + 1_000);
  });

  it('purges expired records in batches and reports progress', async () => {
    const service = makeService({ ttlMs: 1_000 });
    for (let i = 0; i < 25; i++) await service.execute(call({ key: `k-${i}` }));
    await clock.advance(1_000);
    await service.execute(call({ key: 'fresh' }));
    const progress: number[] = [];
    const deleted = await service.purgeExpired({ batchSize: 10, onProgress: (p) => progress.push(p.deleted) });
    expect(deleted).toBe(25);
    expect(progress).toEqual([10, 20, 25]);
    expect(await store.get('tenant-1', 'fresh')).not.toBeNull();
  });

  it('stops after maxBatches', async () => {
    const service = makeService({ ttlMs: 1_000 });
    for (let i = 0; i < 25; i++) await service.execute(call({ key: `k-${i}` }));
    await clock.advance(1_000);
    expect(await service.purgeExpired({ batchSize: 10, maxBatches: 2 })).toBe(20);
  });
});

describe('store failures', () => {
  it('fails closed with STORE_UNAVAILABLE when the claim fails, and nothing runs', async () => {
    const service = makeService();
    store.failNext('claim');
    const c = call();
    const error = await expectIdempotencyError(service.execute(c), 'STORE_UNAVAILABLE');
    expect(error.message).toContain('did not run');
    expect((error as Error).cause).toBeInstanceOf(Error);
    expect(c.runs()).toBe(0);
    expect(types()).toEqual(['store-error']);
  });

  it('retries a failed completion and stores the result', async () => {
    const service = makeService();
    store.failNext('complete', 2);
    await service.execute(call());
    expect(store.calls.complete).toBe(3);
    expect((await store.get('tenant-1', 'key-1'))?.status).toBe(IdempotencyStatus.SUCCEEDED);
  });

  it('returns the real result when completion keeps failing, and reports it', async () => {
    const service = makeService();
    store.failNext('complete');
    expect(await service.execute(call())).toEqual({ source: 'executed', ok: true, value: 'paid 1' });
    expect(store.calls.complete).toBe(3);
    expect(events.find((e) => e.type === 'store-error')).toMatchObject({ operation: 'complete' });
  });

  it('waits between completion attempts on the injected clock', async () => {
    const service = makeService({ writeRetry: { attempts: 2, delayMs: 500 } });
    store.failNext('complete', 1);
    const pending = service.execute(call());
    await clock.advance(0);
    expect(store.calls.complete).toBe(1);
    await clock.advance(500);
    expect(await pending).toMatchObject({ ok: true });
    expect(store.calls.complete).toBe(2);
  });

  it('reports a failed release and still returns the procedure error', async () => {
    const service = makeService();
    store.failNext('release');
    const boom = new Error('transient');
    const outcome = await service.execute(call({ run: async () => Promise.reject(boom) }));
    expect(outcome).toEqual({ source: 'executed', ok: false, error: boom });
    expect(events.find((e) => e.type === 'store-error')).toMatchObject({ operation: 'release' });
  });

  it('fails with STORE_UNAVAILABLE when a waiting call cannot read the store', async () => {
    const other = makeService();
    const waiting = makeService({ inFlight: { wait: true, pollIntervalMs: 100 } });
    const gate = deferred<string>();
    const first = other.execute(call({ run: () => gate.promise }));
    await clock.advance(0);
    store.failNext('get');
    const waiter = expectIdempotencyError(waiting.execute(call()), 'STORE_UNAVAILABLE');
    await clock.advance(100);
    await waiter;
    gate.resolve('x');
    await first;
  });

  it('ignores an event listener that throws', async () => {
    const service = makeService({
      onEvent: () => {
        throw new Error('metrics down');
      },
    });
    expect(await service.execute(call())).toMatchObject({ ok: true });
    expect(await service.execute(call())).toMatchObject({ source: 'replayed' });
  });
});

describe('in-process cache', () => {
  it('serves hot replays without touching the store', async () => {
    const service = makeService({ cache: { maxEntries: 10 } });
    await service.execute(call());
    await service.execute(call()); // replay from the store fills the cache
    const before = store.totalCalls();
    for (let i = 0; i < 5; i++) expect(await service.execute(call())).toMatchObject({ source: 'replayed' });
    expect(store.totalCalls()).toBe(before);
    expect(events.at(-1)).toMatchObject({ type: 'replayed', cached: true });
  });

  it('still checks the fingerprint on a cache hit', async () => {
    const service = makeService({ cache: {} });
    await service.execute(call());
    await service.execute(call());
    await expectIdempotencyError(service.execute(call({ input: { amount: 1 } })), 'FINGERPRINT_MISMATCH');
  });

  it('honours expiry and its size bound', async () => {
    const service = makeService({ cache: { maxEntries: 1 }, ttlMs: 10_000 });
    for (const key of ['a', 'b']) {
      await service.execute(call({ key }));
      await service.execute(call({ key }));
    }
    const before = store.calls.claim;
    await service.execute(call({ key: 'a' })); // evicted by 'b': goes to the store
    expect(store.calls.claim).toBe(before + 1);
    await clock.advance(10_000);
    expect(await service.execute(call({ key: 'a' }))).toMatchObject({ source: 'executed' });
  });
});

describe('options', () => {
  it.each([
    [{ ttlMs: 0 }, /ttlMs to be a positive integer, received number 0/],
    [{ leaseMs: -1 }, /leaseMs/],
    [{ leaseMs: 1.5 }, /leaseMs/],
    [{ leaseMs: 1_000, renewIntervalMs: 1_000 }, /renewIntervalMs \(1000\) to be shorter than leaseMs \(1000\)/],
    [{ inFlight: 'wait' }, /inFlight to be 'reject' or \{ wait: true/],
    [{ cache: { maxEntries: 0 } }, /cache.maxEntries/],
    [{ maxResultBytes: Number.NaN }, /maxResultBytes/],
  ])('rejects %o with a message that says what was expected', (options, message) => {
    expect(() => makeService(options as Partial<IdempotencyServiceOptions>)).toThrow(message);
  });

  it('rejects a missing store', () => {
    expect(() => createIdempotencyService({} as IdempotencyServiceOptions)).toThrow(
      /expected options.store to implement IdempotencyStore/,
    );
  });

  it('returns a frozen service', () => {
    expect(Object.isFrozen(makeService())).toBe(true);
  });
});
