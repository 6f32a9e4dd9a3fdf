import { randomUUID } from 'node:crypto';
import type { IdempotencyClaimInput } from '../../src/stores/contract.js';

/** A realistic epoch value with milliseconds, so a store that truncates them is caught. */
export const T0 = 1_764_763_200_123;
export const LEASE_MS = 30_000;
export const TTL_MS = 86_400_000;

/** A claim of a fresh random key at T0 with a fresh owner token; override any field. */
export function claimInput(overrides: Partial<IdempotencyClaimInput> = {}): IdempotencyClaimInput {
  return {
    scope: 'tenant-1',
    key: randomUUID(),
    fingerprint: 'f'.repeat(64),
    procedure: 'payments.create',
    ownerToken: randomUUID(),
    now: T0,
    lockedUntil: T0 + LEASE_MS,
    expiresAt: T0 + TTL_MS,
    ...overrides,
  };
}
