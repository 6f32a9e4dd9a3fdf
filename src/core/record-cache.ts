import type { IdempotencyRecord } from './record.js';

/**
 * A bounded LRU of finished records. Only finished records are cached: they never change before `expiresAt`,
 * so serving them from memory is as correct as reading the store.
 */
export class RecordCache {
  readonly #entries = new Map<string, IdempotencyRecord>();
  readonly #maxEntries: number;

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  get(id: string, now: number): IdempotencyRecord | undefined {
    const record = this.#entries.get(id);
    if (!record) return undefined;
    this.#entries.delete(id);
    if (record.expiresAt <= now) return undefined;
    this.#entries.set(id, record);
    return record;
  }

  set(id: string, record: IdempotencyRecord): void {
    if (record.status === 'IN_PROGRESS') return;
    this.#entries.delete(id);
    this.#entries.set(id, record);
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}
