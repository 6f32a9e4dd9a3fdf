/**
 * The physical floor: the least database work an idempotent first execution needs (one INSERT of a row shaped
 * like our record, then one UPDATE of it), and a replay (one primary-key read), sent straight through the
 * driver Prisma's adapter wraps (better-sqlite3, pg) with statements prepared once. No library can do a
 * durable first execution with less than these two writes, so `our overhead / floor` says how far from the
 * optimum we are.
 */
import { randomUUID } from 'node:crypto';
import type { TestDatabase } from '../../test/support/databases.js';

/** The floor operations of one database. */
export interface Floor {
  /** INSERT a fresh IN_PROGRESS row, then UPDATE it to SUCCEEDED with a result. */
  writePair(): Promise<void>;
  /** Read one finished row by primary key. */
  read(): Promise<void>;
  close(): Promise<void>;
}

const LEASE_MS = 30_000;
const TTL_MS = 86_400_000;
const FINGERPRINT = 'f'.repeat(64);
const COLUMNS =
  'scope, "key", fingerprint, procedure, status, owner_token, locked_until, result, result_code, codec, created_at, expires_at';

/**
 * Open the floor on `db`'s namespace with a connection of its own. `result` is the byte size of the stored
 * result, chosen to match what the benchmarked procedure stores.
 */
export async function openFloor(db: TestDatabase, resultBytes: number): Promise<Floor> {
  const result = Buffer.alloc(resultBytes, 7);
  const readKey = `floor-read-${randomUUID()}`;
  if (db.provider === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const sqlite = new Database(db.url, { timeout: 5000 });
    // Text timestamps in the format Prisma's SQLite adapter writes (see NOTES.md: SQLite DateTime is text).
    const iso = (ms: number) => new Date(ms).toISOString().replace('Z', '+00:00');
    const insert = sqlite.prepare(
      `INSERT INTO idempotency_records (${COLUMNS}) VALUES (?, ?, ?, ?, 'IN_PROGRESS', ?, ?, NULL, NULL, NULL, ?, ?)`,
    );
    const update = sqlite.prepare(
      'UPDATE idempotency_records SET status = ?, result = ?, result_code = NULL, codec = ? ' +
        'WHERE scope = ? AND "key" = ? AND owner_token = ? AND status = \'IN_PROGRESS\'',
    );
    const select = sqlite.prepare('SELECT * FROM idempotency_records WHERE scope = ? AND "key" = ?');
    const writePair = async () => {
      const now = Date.now();
      const key = randomUUID();
      const token = randomUUID();
      const inserted = insert.run(
        'floor',
        key,
        FINGERPRINT,
        'bench.floor',
        token,
        iso(now + LEASE_MS),
        iso(now),
        iso(now + TTL_MS),
      );
      if (inserted.changes !== 1) throw new Error('floor: INSERT wrote no row');
      const updated = update.run('SUCCEEDED', result, 'json', 'floor', key, token);
      if (updated.changes !== 1) throw new Error('floor: UPDATE matched no row');
    };
    insert.run(
      'floor',
      readKey,
      FINGERPRINT,
      'bench.floor',
      't',
      iso(Date.now()),
      iso(Date.now()),
      iso(Date.now() + TTL_MS),
    );
    update.run('SUCCEEDED', result, 'json', 'floor', readKey, 't');
    return {
      writePair,
      read: async () => {
        if (select.get('floor', readKey) === undefined) throw new Error('floor: read found no row');
      },
      close: async () => void sqlite.close(),
    };
  }
  if (db.provider === 'postgresql') {
    const { default: pg } = await import('pg');
    const client = new pg.Client({ connectionString: db.url, options: `-c search_path=${db.namespace.schema}` });
    await client.connect();
    // UTC text for TIMESTAMP(3) WITHOUT TIME ZONE, as Prisma's pg adapter sends DateTime parameters.
    const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
    const insertSql = `INSERT INTO idempotency_records (${COLUMNS}) VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, NULL, NULL, NULL, $7, $8)`;
    const updateSql =
      'UPDATE idempotency_records SET status = $4, result = $5, result_code = NULL, codec = $6 ' +
      'WHERE scope = $1 AND "key" = $2 AND owner_token = $3 AND status = \'IN_PROGRESS\'';
    const selectSql = 'SELECT * FROM idempotency_records WHERE scope = $1 AND "key" = $2';
    const write = async (key: string, token: string) => {
      const now = Date.now();
      const inserted = await client.query({
        name: 'floor-insert',
        text: insertSql,
        values: ['floor', key, FINGERPRINT, 'bench.floor', token, utc(now + LEASE_MS), utc(now), utc(now + TTL_MS)],
      });
      if (inserted.rowCount !== 1) throw new Error('floor: INSERT wrote no row');
      const updated = await client.query({
        name: 'floor-update',
        text: updateSql,
        values: ['floor', key, token, 'SUCCEEDED', result, 'json'],
      });
      if (updated.rowCount !== 1) throw new Error('floor: UPDATE matched no row');
    };
    await write(readKey, 't');
    return {
      writePair: () => write(randomUUID(), randomUUID()),
      read: async () => {
        const rows = await client.query({ name: 'floor-select', text: selectSql, values: ['floor', readKey] });
        if (rows.rowCount !== 1) throw new Error('floor: read found no row');
      },
      close: () => client.end(),
    };
  }
  throw new TypeError(`openFloor: no floor for provider ${db.provider}`);
}
