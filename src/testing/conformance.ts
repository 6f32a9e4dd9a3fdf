import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type IdempotencyRecord, IdempotencyStatus } from '../core/record.js';
import type { IdempotencyClaimInput, IdempotencyClaimResult, IdempotencyStore } from '../stores/contract.js';

/** Another connection to the same records, e.g. a second PrismaClient. */
export interface IdempotencyConformancePeer {
  readonly store: IdempotencyStore;
  close(): Promise<void>;
}

/**
 * One fresh, empty backend for one test, as {@link IdempotencyConformanceOptions.createBackend} returns it.
 */
export interface IdempotencyConformanceBackend {
  /** The store under test, on an empty record set. */
  readonly store: IdempotencyStore;
  /** Open another independent client on the same records (for cross-client races). Optional. */
  connect?(): Promise<IdempotencyConformancePeer>;
  /**
   * Run batches of claims in other OS processes against the same records, each batch in its own process with
   * all of its claims in flight at once; resolve to each claim's result, batch by batch. Optional.
   */
  claimInChildProcesses?(batches: IdempotencyClaimInput[][]): Promise<IdempotencyClaimResult[][]>;
  /** Drop the records and close connections. */
  cleanup?(): Promise<void>;
}

/**
 * Options of {@link runStoreConformanceSuite}.
 *
 * @example
 * ```ts
 * runStoreConformanceSuite({ name: 'my-redis-store', createBackend: async () => ({ store: createMyStore() }) });
 * ```
 */
export interface IdempotencyConformanceOptions {
  /** Shown in the `describe` title. */
  readonly name: string;
  /** Make a fresh, empty backend; called before every test. */
  createBackend(): Promise<IdempotencyConformanceBackend>;
  /** How many claims race for one key in the concurrency tests. @default 50 */
  readonly concurrency?: number;
  /** Per-test timeout in ms, for slow databases. @default 30_000 */
  readonly timeoutMs?: number;
}

const T0 = 1_764_763_200_123; // a realistic epoch value with milliseconds, to catch truncation
const LEASE = 30_000;
const TTL = 86_400_000;

/**
 * The store conformance suite: every store must pass it. Call it at the top level of a vitest test file; it
 * registers one `describe` block. It covers claims (with truly concurrent races, across clients and processes
 * when the backend offers them), takeover after lease or TTL expiry, fencing of stale owners, completion,
 * release, renewal, purge, and byte-exact large and binary results.
 *
 * Requires `vitest` (an optional peer dependency).
 *
 * @example
 * ```ts
 * // test/my-store.test.ts
 * import { runStoreConformanceSuite } from 'rpc-idempotency/testing';
 * import { createMyStore } from '../src/my-store.js';
 *
 * runStoreConformanceSuite({
 *   name: 'my-store',
 *   createBackend: async () => {
 *     const store = await createMyStore({ namespace: crypto.randomUUID() });
 *     return { store, cleanup: () => store.dropAll() };
 *   },
 * });
 * ```
 */
export function runStoreConformanceSuite(options: IdempotencyConformanceOptions): void {
  const concurrency = options.concurrency ?? 50;
  const timeout = options.timeoutMs ?? 30_000;

  describe(`IdempotencyStore conformance: ${options.name}`, () => {
    let backend: IdempotencyConformanceBackend;
    let store: IdempotencyStore;

    beforeEach(async () => {
      backend = await options.createBackend();
      store = backend.store;
    }, timeout);

    afterEach(async () => {
      await backend?.cleanup?.();
    }, timeout);

    const claimInput = (overrides: Partial<IdempotencyClaimInput> = {}): IdempotencyClaimInput => ({
      scope: 'tenant-1',
      key: 'key-1',
      fingerprint: 'f'.repeat(64),
      procedure: 'payments.create',
      ownerToken: randomUUID(),
      now: T0,
      lockedUntil: T0 + LEASE,
      expiresAt: T0 + TTL,
      ...overrides,
    });

    const mustGet = async (scope: string, key: string): Promise<IdempotencyRecord> => {
      const record = await store.get(scope, key);
      expect(record, `expected a record for (${scope}, ${key})`).not.toBeNull();
      return record as IdempotencyRecord;
    };

    const winners = (results: IdempotencyClaimResult[]) => results.filter((r) => r.claimed).length;

    describe('claim', () => {
      it(
        'inserts an IN_PROGRESS record with every field as given',
        async () => {
          const input = claimInput();
          const result = await store.claim(input);
          expect(result).toEqual({ claimed: true, takenOver: false });
          expect(await store.get(input.scope, input.key)).toEqual({
            scope: input.scope,
            key: input.key,
            fingerprint: input.fingerprint,
            procedure: input.procedure,
            status: IdempotencyStatus.IN_PROGRESS,
            ownerToken: input.ownerToken,
            lockedUntil: input.lockedUntil,
            result: null,
            resultCode: null,
            codec: null,
            createdAt: input.now,
            expiresAt: input.expiresAt,
          });
        },
        timeout,
      );

      it(
        'returns the record it collided with when the key is held',
        async () => {
          const first = claimInput();
          await store.claim(first);
          const second = await store.claim(claimInput({ fingerprint: 'e'.repeat(64), now: T0 + 10 }));
          expect(second.claimed).toBe(false);
          if (second.claimed) return;
          expect(second.existing.ownerToken).toBe(first.ownerToken);
          expect(second.existing.fingerprint).toBe(first.fingerprint);
          expect(second.existing.status).toBe(IdempotencyStatus.IN_PROGRESS);
        },
        timeout,
      );

      it(
        'keeps scopes, keys and procedures apart, byte for byte',
        async () => {
          const pairs: Array<[string, string]> = [
            ['tenant-1', 'abc'],
            ['tenant-2', 'abc'],
            ['', 'abc'],
            ['tenant-1', 'ABC'],
            ['tenant-1', 'abc '],
            ['tenant-1', ' abc'],
            ['tenant-1:abc', ''],
            ['Tenänt-1', 'abc'],
          ];
          for (const [scope, key] of pairs) {
            const result = await store.claim(claimInput({ scope, key }));
            expect(result.claimed, `(${JSON.stringify(scope)}, ${JSON.stringify(key)}) must be a key of its own`).toBe(
              true,
            );
          }
          for (const [scope, key] of pairs) {
            expect((await mustGet(scope, key)).key).toBe(key);
          }
        },
        timeout,
      );

      it(
        'stores 255-character keys and scopes unchanged',
        async () => {
          const scope = `${'s'.repeat(254)}S`;
          const key = `${'k'.repeat(254)}~`;
          await store.claim(claimInput({ scope, key }));
          const record = await mustGet(scope, key);
          expect(record.scope).toBe(scope);
          expect(record.key).toBe(key);
          const other = await store.claim(claimInput({ scope, key: `${'k'.repeat(254)}!` }));
          expect(other.claimed).toBe(true);
        },
        timeout,
      );

      it(
        `lets exactly one of ${concurrency} concurrent claims win`,
        async () => {
          const inputs = Array.from({ length: concurrency }, () => claimInput());
          const results = await Promise.all(inputs.map((input) => store.claim(input)));
          expect(winners(results)).toBe(1);
          const record = await mustGet('tenant-1', 'key-1');
          const winner = inputs[results.findIndex((r) => r.claimed)];
          expect(record.ownerToken).toBe(winner?.ownerToken);
          for (const result of results) {
            if (!result.claimed) expect(result.existing.ownerToken).toBe(winner?.ownerToken);
          }
        },
        timeout,
      );

      it(
        `lets exactly one of ${concurrency} concurrent claims from several clients win`,
        async (context) => {
          if (!backend.connect) {
            context.skip();
            return;
          }
          const peers = await Promise.all([backend.connect(), backend.connect()]);
          try {
            const stores = [store, ...peers.map((peer) => peer.store)];
            const inputs = Array.from({ length: concurrency }, () => claimInput({ key: 'multi-client' }));
            const results = await Promise.all(
              inputs.map((input, index) => (stores[index % stores.length] as IdempotencyStore).claim(input)),
            );
            expect(winners(results)).toBe(1);
          } finally {
            await Promise.all(peers.map((peer) => peer.close()));
          }
        },
        timeout,
      );

      it(
        `lets exactly one of ${concurrency} claims from two OS processes win`,
        async (context) => {
          if (!backend.claimInChildProcesses) {
            context.skip();
            return;
          }
          const half = Math.ceil(concurrency / 2);
          const batches = [0, 1].map(() => Array.from({ length: half }, () => claimInput({ key: 'multi-process' })));
          const results = await backend.claimInChildProcesses(batches);
          expect(results).toHaveLength(2);
          expect(results.flat()).toHaveLength(half * 2);
          expect(winners(results.flat())).toBe(1);
          const record = await mustGet('tenant-1', 'multi-process');
          const tokens = batches.flat().map((input) => input.ownerToken);
          expect(tokens).toContain(record.ownerToken);
        },
        timeout * 2,
      );
    });

    describe('takeover', () => {
      it(
        'does not take over a live lease',
        async () => {
          await store.claim(claimInput());
          const result = await store.claim(claimInput({ now: T0 + LEASE - 1 }));
          expect(result.claimed).toBe(false);
        },
        timeout,
      );

      it(
        'takes over an IN_PROGRESS record whose lease lapsed, and fences the old owner',
        async () => {
          const stale = claimInput();
          await store.claim(stale);
          const later = T0 + LEASE;
          const fresh = claimInput({ now: later, lockedUntil: later + LEASE, expiresAt: later + TTL });
          const result = await store.claim(fresh);
          expect(result.claimed).toBe(true);
          if (!result.claimed) return;
          expect(result.takenOver).toBe(true);
          const record = await mustGet('tenant-1', 'key-1');
          expect(record.ownerToken).toBe(fresh.ownerToken);
          expect(record.lockedUntil).toBe(later + LEASE);
          expect(record.createdAt).toBe(later);

          // Prepare: the stale owner wakes up late. Act: it tries every fenced write. Assess: all refused.
          expect(await store.renew('tenant-1', 'key-1', stale.ownerToken, later + 2 * LEASE)).toBe(false);
          expect(
            await store.complete({
              scope: 'tenant-1',
              key: 'key-1',
              ownerToken: stale.ownerToken,
              status: IdempotencyStatus.SUCCEEDED,
              result: new Uint8Array([1]),
              resultCode: null,
              codec: 'json',
            }),
          ).toBe(false);
          expect(await store.release('tenant-1', 'key-1', stale.ownerToken)).toBe(false);
          expect(await mustGet('tenant-1', 'key-1')).toEqual(record);
        },
        timeout,
      );

      it(
        'does not take over a finished record before it expires, even after its lease time',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          await store.complete({
            scope: 'tenant-1',
            key: 'key-1',
            ownerToken: owner.ownerToken,
            status: IdempotencyStatus.SUCCEEDED,
            result: new Uint8Array([42]),
            resultCode: null,
            codec: 'json',
          });
          const result = await store.claim(claimInput({ now: T0 + TTL - 1, lockedUntil: T0 + TTL - 1 + LEASE }));
          expect(result.claimed).toBe(false);
          if (result.claimed) return;
          expect(result.existing.status).toBe(IdempotencyStatus.SUCCEEDED);
          expect([...(result.existing.result ?? [])]).toEqual([42]);
        },
        timeout,
      );

      it(
        'takes over an expired finished record',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          await store.complete({
            scope: 'tenant-1',
            key: 'key-1',
            ownerToken: owner.ownerToken,
            status: IdempotencyStatus.FAILED,
            result: new Uint8Array([7]),
            resultCode: 'BAD_REQUEST',
            codec: 'json',
          });
          const later = T0 + TTL;
          const fresh = claimInput({
            now: later,
            lockedUntil: later + LEASE,
            expiresAt: later + TTL,
            fingerprint: 'b'.repeat(64),
          });
          const result = await store.claim(fresh);
          expect(result).toMatchObject({ claimed: true, takenOver: true });
          const record = await mustGet('tenant-1', 'key-1');
          expect(record).toMatchObject({
            status: IdempotencyStatus.IN_PROGRESS,
            fingerprint: fresh.fingerprint,
            ownerToken: fresh.ownerToken,
            result: null,
            resultCode: null,
            codec: null,
            expiresAt: later + TTL,
          });
        },
        timeout,
      );

      it(
        `lets exactly one of ${concurrency} concurrent takeovers of a lapsed lease win`,
        async () => {
          await store.claim(claimInput());
          const later = T0 + LEASE + 5;
          const inputs = Array.from({ length: concurrency }, () =>
            claimInput({ now: later, lockedUntil: later + LEASE, expiresAt: later + TTL }),
          );
          const results = await Promise.all(inputs.map((input) => store.claim(input)));
          expect(winners(results)).toBe(1);
          const record = await mustGet('tenant-1', 'key-1');
          expect(record.ownerToken).toBe(inputs[results.findIndex((r) => r.claimed)]?.ownerToken);
        },
        timeout,
      );
    });

    describe('complete, release, renew', () => {
      it(
        'completes only for the owner, once',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          const complete = {
            scope: 'tenant-1',
            key: 'key-1',
            status: IdempotencyStatus.SUCCEEDED,
            result: new Uint8Array([1, 2, 3]),
            resultCode: null,
            codec: 'superjson',
          } as const;
          expect(await store.complete({ ...complete, ownerToken: randomUUID() })).toBe(false);
          expect((await mustGet('tenant-1', 'key-1')).status).toBe(IdempotencyStatus.IN_PROGRESS);
          expect(await store.complete({ ...complete, ownerToken: owner.ownerToken })).toBe(true);
          const record = await mustGet('tenant-1', 'key-1');
          expect(record.status).toBe(IdempotencyStatus.SUCCEEDED);
          expect([...(record.result ?? [])]).toEqual([1, 2, 3]);
          expect(record.codec).toBe('superjson');
          expect(record.resultCode).toBeNull();
          expect(record.expiresAt).toBe(owner.expiresAt);
          expect(record.createdAt).toBe(owner.now);
          // A finished record is immutable: neither a second completion nor a release touches it.
          expect(await store.complete({ ...complete, ownerToken: owner.ownerToken, result: new Uint8Array([9]) })).toBe(
            false,
          );
          expect(await store.release('tenant-1', 'key-1', owner.ownerToken)).toBe(false);
          expect(await store.renew('tenant-1', 'key-1', owner.ownerToken, T0 + 99)).toBe(false);
          expect(await mustGet('tenant-1', 'key-1')).toEqual(record);
        },
        timeout,
      );

      it(
        'stores a FAILED record with its code and a null result',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          expect(
            await store.complete({
              scope: 'tenant-1',
              key: 'key-1',
              ownerToken: owner.ownerToken,
              status: IdempotencyStatus.FAILED,
              result: null,
              resultCode: 'RESULT_NOT_STORABLE',
              codec: null,
            }),
          ).toBe(true);
          expect(await mustGet('tenant-1', 'key-1')).toMatchObject({
            status: IdempotencyStatus.FAILED,
            result: null,
            resultCode: 'RESULT_NOT_STORABLE',
            codec: null,
          });
        },
        timeout,
      );

      it(
        'releases only for the owner, and a released key can be claimed again',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          expect(await store.release('tenant-1', 'key-1', randomUUID())).toBe(false);
          expect(await store.get('tenant-1', 'key-1')).not.toBeNull();
          expect(await store.release('tenant-1', 'key-1', owner.ownerToken)).toBe(true);
          expect(await store.get('tenant-1', 'key-1')).toBeNull();
          expect(await store.release('tenant-1', 'key-1', owner.ownerToken)).toBe(false);
          expect(await store.claim(claimInput({ now: T0 + 1 }))).toEqual({ claimed: true, takenOver: false });
        },
        timeout,
      );

      it(
        'renews the lease only for the owner, which keeps a live record from being taken over',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          expect(await store.renew('tenant-1', 'key-1', randomUUID(), T0 + 10 * LEASE)).toBe(false);
          expect(await store.renew('tenant-1', 'key-1', owner.ownerToken, T0 + 2 * LEASE)).toBe(true);
          expect((await mustGet('tenant-1', 'key-1')).lockedUntil).toBe(T0 + 2 * LEASE);
          const result = await store.claim(claimInput({ now: T0 + LEASE + 1 }));
          expect(result.claimed).toBe(false);
        },
        timeout,
      );

      it(
        'returns null for a key that was never claimed',
        async () => {
          expect(await store.get('tenant-1', 'nothing-here')).toBeNull();
        },
        timeout,
      );
    });

    describe('results', () => {
      it(
        'round-trips a 1 MiB binary result byte for byte',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          const bytes = Uint8Array.from(randomBytes(1_048_576));
          bytes[0] = 0;
          bytes[1] = 0xff;
          bytes[bytes.length - 1] = 0;
          await store.complete({
            scope: 'tenant-1',
            key: 'key-1',
            ownerToken: owner.ownerToken,
            status: IdempotencyStatus.SUCCEEDED,
            result: bytes,
            resultCode: null,
            codec: 'protobuf',
          });
          const record = await mustGet('tenant-1', 'key-1');
          expect(record.result).toBeInstanceOf(Uint8Array);
          expect(record.result?.byteLength).toBe(bytes.byteLength);
          expect(Buffer.compare(Buffer.from(record.result as Uint8Array), Buffer.from(bytes))).toBe(0);
        },
        timeout,
      );

      it(
        'keeps an empty result distinct from no result',
        async () => {
          const owner = claimInput();
          await store.claim(owner);
          await store.complete({
            scope: 'tenant-1',
            key: 'key-1',
            ownerToken: owner.ownerToken,
            status: IdempotencyStatus.SUCCEEDED,
            result: new Uint8Array(0),
            resultCode: null,
            codec: 'protobuf',
          });
          const record = await mustGet('tenant-1', 'key-1');
          expect(record.result).toBeInstanceOf(Uint8Array);
          expect(record.result?.byteLength).toBe(0);
        },
        timeout,
      );
    });

    describe('purgeExpired', () => {
      it(
        'deletes expired records in batches of at most `limit`, and nothing else',
        async () => {
          const expired = 7;
          for (let i = 0; i < expired; i++) {
            await store.claim(claimInput({ key: `old-${i}`, expiresAt: T0 + 1_000 + i }));
          }
          await store.claim(claimInput({ key: 'young', expiresAt: T0 + TTL }));
          await store.claim(claimInput({ key: 'edge', expiresAt: T0 + 5_000 }));
          const now = T0 + 5_000; // 'edge' expires exactly now: expiresAt <= now counts as expired
          expect(await store.purgeExpired({ now, limit: 3 })).toBe(3);
          expect(await store.purgeExpired({ now, limit: 3 })).toBe(3);
          expect(await store.purgeExpired({ now, limit: 3 })).toBe(2);
          expect(await store.purgeExpired({ now, limit: 3 })).toBe(0);
          for (let i = 0; i < expired; i++) expect(await store.get('tenant-1', `old-${i}`)).toBeNull();
          expect(await store.get('tenant-1', 'edge')).toBeNull();
          expect(await store.get('tenant-1', 'young')).not.toBeNull();
        },
        timeout,
      );
    });
  });
}
