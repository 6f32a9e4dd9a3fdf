import { describe, expect, it } from 'vitest';
import { IdempotencyError, IdempotencyErrorCode, isIdempotencyError, jsonCodec } from '../../src/index.js';
import { createManualClock } from '../../src/testing/index.js';

describe('IdempotencyError', () => {
  it('carries its code, context and retryability', () => {
    const error = new IdempotencyError('IN_PROGRESS', 'still running', {
      procedure: 'p',
      key: 'k',
      retryAfterMs: 500,
    });
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ name: 'IdempotencyError', code: 'IN_PROGRESS', procedure: 'p', key: 'k' });
    expect(error.retryable).toBe(true);
    expect(new IdempotencyError('FINGERPRINT_MISMATCH', 'x').retryable).toBe(false);
  });

  it('is recognised by the guard, also when it comes from another copy of the package', () => {
    expect(isIdempotencyError(new IdempotencyError('KEY_MISSING', 'x'))).toBe(true);
    const foreign = Object.assign(new Error('x'), {
      code: 'KEY_MISSING',
      [Symbol.for('rpc-idempotency.IdempotencyError')]: true,
    });
    expect(isIdempotencyError(foreign)).toBe(true);
    expect(isIdempotencyError(Object.assign(new Error('x'), { code: 'KEY_MISSING' }))).toBe(false);
    expect(isIdempotencyError(null)).toBe(false);
    expect(isIdempotencyError('KEY_MISSING')).toBe(false);
  });

  it('has exactly the codes of the specification', () => {
    expect(Object.keys(IdempotencyErrorCode).sort()).toEqual([
      'FINGERPRINT_MISMATCH',
      'IN_PROGRESS',
      'KEY_INVALID',
      'KEY_MISSING',
      'RESULT_NOT_STORABLE',
      'STORE_UNAVAILABLE',
    ]);
  });
});

describe('jsonCodec', () => {
  it('round-trips plain data, including undefined at the top level', () => {
    for (const value of [{ a: [1, 'x', null, true] }, 'text', 0, null, undefined, [], { $undefined: true }]) {
      expect(jsonCodec.decode(jsonCodec.encode(value))).toEqual(value);
    }
  });

  it.each([
    [new Date(0), /plain object at \$.*superjson/],
    [{ n: 1n }, /at \$\.n, received bigint/],
    [{ m: new Map() }, /at \$\.m/],
    [[Number.POSITIVE_INFINITY], /finite number at \$\[0\]/],
    [{ f: () => 1 }, /at \$\.f, received function/],
  ])('refuses %o instead of replaying something else', (value, message) => {
    expect(() => jsonCodec.encode(value)).toThrow(message);
  });
});

describe('createManualClock', () => {
  it('fires timers in time order as it advances, and not before', async () => {
    const clock = createManualClock(1_000);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push('b'), 200);
    clock.setTimeout(() => fired.push('a'), 100);
    const cancelled = clock.setTimeout(() => fired.push('never'), 150);
    clock.clearTimeout(cancelled);
    await clock.advance(99);
    expect(fired).toEqual([]);
    await clock.advance(101);
    expect(fired).toEqual(['a', 'b']);
    expect(clock.now()).toBe(1_200);
    expect(clock.pendingTimers).toBe(0);
  });

  it('rejects going backwards', async () => {
    await expect(createManualClock().advance(-1)).rejects.toThrow(RangeError);
  });
});
