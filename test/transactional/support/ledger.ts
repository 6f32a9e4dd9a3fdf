/**
 * A demo ledger for the transactional-mode tests: a table in the test namespace, created with raw SQL through the
 * Prisma client, that procedures write through the transaction client (`tx.$executeRawUnsafe`). It has no
 * unique constraint on purpose: "one row per key" must come from transactional mode, not from the schema.
 */
import type { IdempotencyPrismaQueryable } from '../../../src/stores/prisma/index.js';
import type { TestProvider } from '../../support/databases.js';

/** One ledger row as the tests read it back. */
export interface LedgerRow {
  readonly id: number;
  readonly idempotencyKey: string;
  readonly entry: string;
  readonly writtenBy: string;
}

const q = (provider: TestProvider, id: string) => (provider === 'mysql' ? `\`${id}\`` : `"${id}"`);
const p = (provider: TestProvider, n: number) => (provider === 'postgresql' ? `$${n}` : '?');

/** Create `demo_ledger` in the namespace `client` points at. */
export async function createLedger(client: IdempotencyPrismaQueryable, provider: TestProvider): Promise<void> {
  const id =
    provider === 'postgresql'
      ? 'SERIAL PRIMARY KEY'
      : provider === 'mysql'
        ? 'INT AUTO_INCREMENT PRIMARY KEY'
        : 'INTEGER PRIMARY KEY AUTOINCREMENT';
  await client.$executeRawUnsafe(
    `CREATE TABLE ${q(provider, 'demo_ledger')} (${q(provider, 'id')} ${id}, ` +
      `${q(provider, 'idempotency_key')} VARCHAR(255) NOT NULL, ${q(provider, 'entry')} VARCHAR(255) NOT NULL, ` +
      `${q(provider, 'written_by')} VARCHAR(64) NOT NULL)`,
  );
}

/** Append a row, through whatever client the caller holds (in the tests: the procedure's transaction client). */
export async function writeLedger(
  client: IdempotencyPrismaQueryable,
  provider: TestProvider,
  row: { idempotencyKey: string; entry: string; writtenBy: string },
): Promise<void> {
  await client.$executeRawUnsafe(
    `INSERT INTO ${q(provider, 'demo_ledger')} (${q(provider, 'idempotency_key')}, ${q(provider, 'entry')}, ` +
      `${q(provider, 'written_by')}) VALUES (${p(provider, 1)}, ${p(provider, 2)}, ${p(provider, 3)})`,
    row.idempotencyKey,
    row.entry,
    row.writtenBy,
  );
}

/** The rows of `idempotencyKey` (or all rows), oldest first. */
export async function readLedger(
  client: IdempotencyPrismaQueryable,
  provider: TestProvider,
  idempotencyKey?: string,
): Promise<LedgerRow[]> {
  const where = idempotencyKey === undefined ? '' : ` WHERE ${q(provider, 'idempotency_key')} = ${p(provider, 1)}`;
  const rows = await client.$queryRawUnsafe<Array<Record<string, unknown>>>(
    `SELECT ${q(provider, 'id')} AS id, ${q(provider, 'idempotency_key')} AS k, ${q(provider, 'entry')} AS e, ` +
      `${q(provider, 'written_by')} AS w FROM ${q(provider, 'demo_ledger')}${where} ORDER BY ${q(provider, 'id')}`,
    ...(idempotencyKey === undefined ? [] : [idempotencyKey]),
  );
  return rows.map((row) => ({
    id: Number(row.id),
    idempotencyKey: String(row.k),
    entry: String(row.e),
    writtenBy: String(row.w),
  }));
}

/** A ledger as a small table for the test log, e.g. to quote in a report. */
export function formatLedger(title: string, rows: readonly LedgerRow[]): string {
  const lines = rows.map((row) => `  ${row.id} | ${row.idempotencyKey} | ${row.entry} | ${row.writtenBy}`);
  return [
    `${title} (${rows.length} row${rows.length === 1 ? '' : 's'})`,
    '  id | idempotency_key | entry | written_by',
    ...lines,
  ].join('\n');
}
