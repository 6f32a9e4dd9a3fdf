/**
 * Counters for round trips, so "how many times does a call touch the store" is counted, not inferred from a
 * timing.
 */
import type { IdempotencyStore } from '../../src/index.js';

export type StoreOperation = 'claim' | 'get' | 'complete' | 'release' | 'renew' | 'purgeExpired';

/** A store that counts each primitive it forwards to `inner`. */
export interface CountingStore extends IdempotencyStore {
  readonly counts: Record<StoreOperation, number>;
  reset(): void;
}

export function countingStore(inner: IdempotencyStore): CountingStore {
  const counts: Record<StoreOperation, number> = {
    claim: 0,
    get: 0,
    complete: 0,
    release: 0,
    renew: 0,
    purgeExpired: 0,
  };
  return {
    name: inner.name,
    counts,
    reset() {
      for (const operation of Object.keys(counts) as StoreOperation[]) counts[operation] = 0;
    },
    claim(input) {
      counts.claim++;
      return inner.claim(input);
    },
    get(scope, key) {
      counts.get++;
      return inner.get(scope, key);
    },
    complete(input) {
      counts.complete++;
      return inner.complete(input);
    },
    release(scope, key, token) {
      counts.release++;
      return inner.release(scope, key, token);
    },
    renew(scope, key, token, lockedUntil) {
      counts.renew++;
      return inner.renew(scope, key, token, lockedUntil);
    },
    purgeExpired(input) {
      counts.purgeExpired++;
      return inner.purgeExpired(input);
    },
  };
}

/** The non-zero counts, as `claim 1 + complete 1`, or `none`. */
export function describeCounts(counts: Readonly<Record<string, number>>): string {
  const parts = Object.entries(counts)
    .filter(([, count]) => count > 0)
    .map(([operation, count]) => `${operation} ${count}`);
  return parts.length === 0 ? 'none' : parts.join(' + ');
}

/** Sum of all counts. */
export function totalCount(counts: Readonly<Record<string, number>>): number {
  return Object.values(counts).reduce((sum, count) => sum + count, 0);
}
