import { describe, expect, it } from 'vitest';
import { canonicalJson, computeFingerprint } from '../../src/index.js';

describe('canonicalJson', () => {
  it('sorts object keys at every depth and drops undefined members', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('gives equal data equal text regardless of key order', () => {
    expect(canonicalJson({ amount: 100, currency: 'EUR' })).toBe(canonicalJson({ currency: 'EUR', amount: 100 }));
  });

  it('tags values JSON cannot express, so they never collide with plain data', () => {
    expect(canonicalJson(10n)).toBe('{"$bigint":"10"}');
    expect(canonicalJson(10n)).not.toBe(canonicalJson('10'));
    expect(canonicalJson(new Date('2026-01-02T03:04:05.006Z'))).toBe('{"$date":"2026-01-02T03:04:05.006Z"}');
    expect(canonicalJson(new Uint8Array([0, 255]))).toBe('{"$bytes":"AP8="}');
    expect(canonicalJson(Buffer.from([0, 255]))).toBe('{"$bytes":"AP8="}');
    expect(
      canonicalJson(
        new Map([
          ['b', 1],
          ['a', 2],
        ]),
      ),
    ).toBe(
      canonicalJson(
        new Map([
          ['a', 2],
          ['b', 1],
        ]),
      ),
    );
    expect(canonicalJson(new Set([2, 1]))).toBe(canonicalJson(new Set([1, 2])));
    expect(canonicalJson(Number.NaN)).toBe('{"$number":"NaN"}');
    expect(canonicalJson(-0)).toBe('0');
  });

  it('keeps arrays in order', () => {
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
  });

  it('rejects cycles and functions with a message that says what to do', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(/acyclic.*custom fingerprint/);
    expect(() => canonicalJson({ f: () => 1 })).toThrow(/received a function/);
  });

  it('allows the same object twice when it is not a cycle', () => {
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
  });
});

describe('computeFingerprint', () => {
  it('is a SHA-256 hex digest that depends on the procedure and the input', () => {
    const a = computeFingerprint('payments.create', { amount: 100 });
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(computeFingerprint('payments.create', { amount: 100 })).toBe(a);
    expect(computeFingerprint('payments.refund', { amount: 100 })).not.toBe(a);
    expect(computeFingerprint('payments.create', { amount: 101 })).not.toBe(a);
  });

  it('cannot be confused by moving text between the procedure and the input', () => {
    expect(computeFingerprint('a', 'bc')).not.toBe(computeFingerprint('a"', 'c'));
  });
});
