/**
 * A stand-in for a Prisma client that sends the store's raw SQL straight to the bare driver. The Prisma store
 * only uses `$queryRawUnsafe` / `$executeRawUnsafe` (its documented `IdempotencyPrismaQueryable`), so
 * `createPrismaStore(shim, { provider })` runs our exact statements without Prisma in between. Comparing it with
 * the real Prisma client splits a store call into "our SQL on this database" and "what Prisma adds per
 * statement". Bench-only: it converts just the value types the store sends (Date, Uint8Array) and reads.
 */
import type { IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import type { TestDatabase } from '../../test/support/databases.js';

export interface DriverShim {
  readonly client: IdempotencyPrismaQueryable;
  close(): Promise<void>;
}

export async function openDriverShim(db: TestDatabase): Promise<DriverShim> {
  if (db.provider === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const sqlite = new Database(db.url, { timeout: 5000 });
    const statements = new Map<string, ReturnType<typeof sqlite.prepare>>();
    const prepare = (text: string) => {
      let statement = statements.get(text);
      if (statement === undefined) {
        statement = sqlite.prepare(text);
        statements.set(text, statement);
      }
      return statement;
    };
    // Prisma's SQLite adapter stores DateTime as ISO text with an explicit offset; the store's comparisons
    // (`expires_at <= ?`) are textual, so the shim must write the same format.
    const toSqlite = (value: unknown) =>
      value instanceof Date
        ? value.toISOString().replace('Z', '+00:00')
        : value instanceof Uint8Array
          ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
          : value;
    return {
      client: {
        $queryRawUnsafe: async <T>(text: string, ...values: unknown[]) => prepare(text).all(values.map(toSqlite)) as T,
        $executeRawUnsafe: async (text: string, ...values: unknown[]) =>
          prepare(text).run(values.map(toSqlite)).changes,
      },
      close: async () => void sqlite.close(),
    };
  }
  if (db.provider === 'postgresql') {
    const { default: pg } = await import('pg');
    // TIMESTAMP WITHOUT TIME ZONE holds UTC here (as Prisma's adapter writes it): parse it as UTC, whatever TZ is.
    const types = {
      getTypeParser: (oid: number, format?: string) =>
        oid === 1114
          ? (text: string) => new Date(`${text.replace(' ', 'T')}Z`)
          : pg.types.getTypeParser(oid, format as 'text'),
    };
    const client = new pg.Client({
      connectionString: db.url,
      options: `-c search_path=${db.namespace.schema}`,
      types: types as never,
    });
    await client.connect();
    const toPg = (value: unknown) =>
      value instanceof Date
        ? value.toISOString().replace('T', ' ').replace('Z', '')
        : value instanceof Uint8Array
          ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
          : value;
    return {
      client: {
        $queryRawUnsafe: async <T>(text: string, ...values: unknown[]) =>
          (await client.query(text, values.map(toPg))).rows as T,
        $executeRawUnsafe: async (text: string, ...values: unknown[]) =>
          (await client.query(text, values.map(toPg))).rowCount ?? 0,
      },
      close: () => client.end(),
    };
  }
  throw new TypeError(`openDriverShim: no shim for provider ${db.provider}`);
}
