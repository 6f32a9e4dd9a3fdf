import { type IdempotencyRecord, IdempotencyStatus, isRecordClaimable } from '../core/record.js';
import type {
  IdempotencyClaimInput,
  IdempotencyClaimResult,
  IdempotencyCompleteInput,
  IdempotencyPurgeInput,
  IdempotencyStore,
} from './contract.js';

/** Options of {@link createMemoryStore}. */
export interface IdempotencyMemoryStoreOptions {
  /**
   * Refuse new claims once this many records are held (expired ones are dropped first), so a flood of distinct
   * keys cannot exhaust memory. The refusal surfaces as `STORE_UNAVAILABLE`. @default 100_000
   */
  readonly maxRecords?: number;
}

/**
 * A record store in this process's memory: for tests, demos and single-process services. Records are lost on
 * restart and are not shared between processes; use `createPrismaStore` for anything else.
 *
 * Every primitive runs synchronously inside one call, so claims are atomic within the process.
 *
 * @example
 * ```ts
 * import { createIdempotencyService, createMemoryStore } from 'rpc-idempotency';
 *
 * const service = createIdempotencyService({ store: createMemoryStore() });
 * ```
 */
export function createMemoryStore(options: IdempotencyMemoryStoreOptions = {}): IdempotencyStore {
  const maxRecords = options.maxRecords ?? 100_000;
  if (!Number.isSafeInteger(maxRecords) || maxRecords <= 0) {
    throw new TypeError(
      `createMemoryStore: expected maxRecords to be a positive integer, received ${String(maxRecords)}.`,
    );
  }
  const records = new Map<string, IdempotencyRecord>();
  const id = (scope: string, key: string) => `${scope.length}:${scope}\u0000${key}`;
  // Copies in and out, so callers can never mutate what the store holds (as with a real database).
  const copy = (record: IdempotencyRecord): IdempotencyRecord => ({
    ...record,
    result: record.result === null ? null : new Uint8Array(record.result),
  });
  const owned = (scope: string, key: string, ownerToken: string) => {
    const record = records.get(id(scope, key));
    return record && record.status === IdempotencyStatus.IN_PROGRESS && record.ownerToken === ownerToken
      ? record
      : undefined;
  };
  // The earliest expiresAt among the records (or later): when the store is full of live records, a flood of
  // new keys must not rescan every record on every claim.
  let earliestExpiry = Number.POSITIVE_INFINITY;
  const dropExpired = (now: number) => {
    if (now < earliestExpiry) return;
    earliestExpiry = Number.POSITIVE_INFINITY;
    for (const [recordId, record] of records) {
      if (record.expiresAt <= now) records.delete(recordId);
      else earliestExpiry = Math.min(earliestExpiry, record.expiresAt);
    }
  };

  return Object.freeze({
    name: 'memory',
    async claim(input: IdempotencyClaimInput): Promise<IdempotencyClaimResult> {
      const recordId = id(input.scope, input.key);
      const existing = records.get(recordId);
      if (existing && !isRecordClaimable(existing, input.now)) return { claimed: false, existing: copy(existing) };
      if (!existing && records.size >= maxRecords) {
        dropExpired(input.now);
        if (records.size >= maxRecords) {
          throw new Error(
            `memory store is full: it holds ${records.size} records (maxRecords ${maxRecords}). Purge expired records, raise maxRecords, or use a database store.`,
          );
        }
      }
      earliestExpiry = Math.min(earliestExpiry, input.expiresAt);
      records.set(recordId, {
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
      return existing
        ? { claimed: true, takenOver: true, previous: copy(existing) }
        : { claimed: true, takenOver: false };
    },
    async get(scope: string, key: string): Promise<IdempotencyRecord | null> {
      const record = records.get(id(scope, key));
      return record ? copy(record) : null;
    },
    async complete(input: IdempotencyCompleteInput): Promise<boolean> {
      const record = owned(input.scope, input.key, input.ownerToken);
      if (!record) return false;
      records.set(id(input.scope, input.key), {
        ...record,
        status: input.status,
        result: input.result === null ? null : new Uint8Array(input.result),
        resultCode: input.resultCode,
        codec: input.codec,
      });
      return true;
    },
    async release(scope: string, key: string, ownerToken: string): Promise<boolean> {
      if (!owned(scope, key, ownerToken)) return false;
      return records.delete(id(scope, key));
    },
    async renew(scope: string, key: string, ownerToken: string, lockedUntil: number): Promise<boolean> {
      const record = owned(scope, key, ownerToken);
      if (!record) return false;
      records.set(id(scope, key), { ...record, lockedUntil });
      return true;
    },
    async purgeExpired(input: IdempotencyPurgeInput): Promise<number> {
      let deleted = 0;
      for (const [recordId, record] of records) {
        if (deleted >= input.limit) break;
        if (record.expiresAt <= input.now) {
          records.delete(recordId);
          deleted++;
        }
      }
      return deleted;
    },
  });
}
