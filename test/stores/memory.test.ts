import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, type IdempotencyClaimInput } from '../../src/index.js';

const T0 = 1_764_763_200_000;

function claimInput(key: string, overrides: Partial<IdempotencyClaimInput> = {}): IdempotencyClaimInput {
  return {
    scope: '',
    key,
    fingerprint: 'f',
    procedure: 'p',
    ownerToken: randomUUID(),
    now: T0,
    lockedUntil: T0 + 30_000,
    expiresAt: T0 + 60_000,
    ...overrides,
  };
}

// Driver-specific cases below the shared conformance suite (memory.conformance.test.ts).
describe('createMemoryStore capacity', () => {
  it('refuses a new key once maxRecords live records are held, with a message that says what to do', async () => {
    const store = createMemoryStore({ maxRecords: 3 });
    for (const key of ['a', 'b', 'c']) expect((await store.claim(claimInput(key))).claimed).toBe(true);
    await expect(store.claim(claimInput('d'))).rejects.toThrow(
      /memory store is full: it holds 3 records \(maxRecords 3\)\. Purge expired records, raise maxRecords/,
    );
    // Keys it already holds still answer: a full store never breaks replays.
    expect((await store.claim(claimInput('a'))).claimed).toBe(false);
  });

  it('makes room by dropping expired records, only once one can have expired', async () => {
    const store = createMemoryStore({ maxRecords: 2 });
    await store.claim(claimInput('old', { expiresAt: T0 + 1_000 }));
    await store.claim(claimInput('young', { expiresAt: T0 + 60_000 }));
    await expect(store.claim(claimInput('new', { now: T0 + 999 }))).rejects.toThrow(/memory store is full/);
    expect((await store.claim(claimInput('new', { now: T0 + 1_000 }))).claimed).toBe(true);
    expect(await store.get('', 'old')).toBeNull();
    expect(await store.get('', 'young')).not.toBeNull();
  });

  it('rejects a maxRecords that is not a positive integer', () => {
    expect(() => createMemoryStore({ maxRecords: 0 })).toThrow(
      /expected maxRecords to be a positive integer, received 0/,
    );
  });

  it('hands out copies, so callers cannot change what it holds', async () => {
    const store = createMemoryStore();
    const owner = claimInput('k');
    await store.claim(owner);
    await store.complete({
      scope: '',
      key: 'k',
      ownerToken: owner.ownerToken,
      status: 'SUCCEEDED',
      result: new Uint8Array([1, 2]),
      resultCode: null,
      codec: 'x',
    });
    const first = await store.get('', 'k');
    first?.result?.fill(9);
    expect([...((await store.get('', 'k'))?.result ?? [])]).toEqual([1, 2]);
  });
});
