import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describeValue } from '../../core/errors.js';
import {
  DEFAULT_TABLE_NAME,
  IDEMPOTENCY_PRISMA_PROVIDERS,
  type IdempotencyPrismaClient,
  type IdempotencyPrismaProvider,
  type IdempotencyPrismaQueryable,
  MIGRATIONS_TABLE_NAME,
  quoteIdentifier,
  resolvePrismaProvider,
  validateTableName,
} from './client.js';

/**
 * The package's `prisma/` folder. This module lives at `src/stores/prisma/migrate.ts` (tsx, vitest) and at
 * `dist/stores/prisma/migrate.js` (built): both are three folders below the package root.
 */
const PACKAGE_PRISMA_DIR = new URL('../../../prisma/', import.meta.url);

/** One shipped migration, as {@link loadIdempotencyMigrations} reads it. */
export interface IdempotencyMigration {
  /** The migration's folder name, e.g. `20261203120000_init`; migrations apply in name order. */
  readonly name: string;
  /** The SQL to run, with the table name substituted. */
  readonly sql: string;
  /** `sql` split into single statements (the Prisma client runs one statement per call). */
  readonly statements: readonly string[];
  /** SHA-256 (hex) of the shipped `migration.sql` (line endings normalised), recorded when applied. */
  readonly checksum: string;
}

/** Options of {@link loadIdempotencyMigrations}. */
export interface IdempotencyMigrationSourceOptions {
  /**
   * The record table's name; must match the store's `tableName`.
   * @default 'idempotency_records'
   */
  tableName?: string;
  /**
   * The folder that holds `<provider>/migrations/`. Set it when a bundler moved this module away from the
   * package's `prisma/` folder.
   * @default the `prisma/` folder of the installed rpc-idempotency package
   */
  migrationsRoot?: string | URL;
}

/** Options of {@link applyIdempotencyMigrations}. */
export interface IdempotencyMigrationOptions extends IdempotencyMigrationSourceOptions {
  /**
   * The database provider. Detected from the Prisma client when omitted.
   * @default detected from the client
   */
  provider?: IdempotencyPrismaProvider;
  /**
   * How long to wait for a concurrent deployer that is applying the same migrations, in milliseconds.
   * @default 60_000
   */
  lockTimeoutMs?: number;
}

/** What {@link applyIdempotencyMigrations} did. */
export interface IdempotencyMigrationResult {
  /** Migrations this call applied, in order. */
  readonly applied: readonly string[];
  /** Migrations that were applied before (by an earlier run or a concurrent deployer). */
  readonly alreadyApplied: readonly string[];
}

/**
 * Split a migration script into statements: drop `--` comment lines, cut at a `;` that ends a line. Enough for
 * Prisma-style DDL (our shipped files); not a general SQL parser (no `;` inside string literals).
 *
 * @example
 * ```ts
 * splitSqlStatements('CREATE TABLE "a" (x INT);\nCREATE INDEX i ON "a"(x);'); // two statements
 * ```
 */
export function splitSqlStatements(sql: string): string[] {
  const withoutComments = sql
    .replace(/\r\n/g, '\n')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('--'))
    .join('\n');
  return withoutComments
    .split(/;[ \t]*(?:\n|$)/)
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0);
}

function renameTable(sql: string, tableName: string): string {
  if (tableName === DEFAULT_TABLE_NAME) return sql;
  // Only quoted identifiers: the table itself and names derived from it (`..._pkey`, `..._expires_at_idx`).
  return sql.replace(/(["`])idempotency_records/g, (_match, quote: string) => `${quote}${tableName}`);
}

function migrationsDir(provider: IdempotencyPrismaProvider, root: string | URL | undefined): string {
  const base = root === undefined ? PACKAGE_PRISMA_DIR : root;
  const basePath = base instanceof URL ? fileURLToPath(base) : base;
  return `${basePath.replace(/[\\/]+$/, '')}/${provider}/migrations`;
}

/**
 * Read the migrations shipped for `provider` (`prisma/<provider>/migrations/<name>/migration.sql`), in the
 * order they apply. Useful to copy the SQL into your own migration tool.
 *
 * @example
 * ```ts
 * for (const migration of await loadIdempotencyMigrations('postgresql')) console.log(migration.sql);
 * ```
 */
export async function loadIdempotencyMigrations(
  provider: IdempotencyPrismaProvider,
  options: IdempotencyMigrationSourceOptions = {},
): Promise<IdempotencyMigration[]> {
  if (!(IDEMPOTENCY_PRISMA_PROVIDERS as readonly unknown[]).includes(provider)) {
    throw new TypeError(
      `loadIdempotencyMigrations: expected provider ${IDEMPOTENCY_PRISMA_PROVIDERS.join(' | ')}, got ` +
        `${describeValue(provider)}.`,
    );
  }
  const tableName = validateTableName(options.tableName ?? DEFAULT_TABLE_NAME, 'loadIdempotencyMigrations');
  const dir = migrationsDir(provider, options.migrationsRoot);
  let entries: string[];
  try {
    entries = (await readdir(dir, { withFileTypes: true }))
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
      .sort();
  } catch (error) {
    throw new Error(
      `loadIdempotencyMigrations: cannot read the migrations folder ${dir} (${(error as Error).message}). ` +
        'It ships with the package as prisma/<provider>/migrations; if a bundler moved this module, pass ' +
        "`migrationsRoot` pointing at a copy of the package's prisma/ folder.",
      { cause: error },
    );
  }
  const migrations: IdempotencyMigration[] = [];
  for (const name of entries) {
    const shipped = (await readFile(`${dir}/${name}/migration.sql`, 'utf8')).replace(/\r\n/g, '\n');
    const sql = renameTable(shipped, tableName);
    migrations.push({
      name,
      sql,
      statements: splitSqlStatements(sql),
      checksum: createHash('sha256').update(shipped).digest('hex'),
    });
  }
  return migrations;
}

/**
 * SQLite: two PrismaClients on one file in one process must not both hold a write transaction, because
 * better-sqlite3 waits for the file lock synchronously and would block the event loop (and with it the other
 * client's commit) for the whole busy timeout. Migrations of one file in this process therefore queue here.
 */
const sqliteQueues = new Map<string, Promise<unknown>>();

async function withSqliteFileQueue<T>(file: string, fn: () => Promise<T>): Promise<T> {
  if (file === '') return fn(); // in-memory databases are private to their connection
  const previous = sqliteQueues.get(file) ?? Promise.resolve();
  const run = previous.then(fn, fn);
  const settled = run.then(
    () => undefined,
    () => undefined,
  );
  sqliteQueues.set(file, settled);
  try {
    return await run;
  } finally {
    if (sqliteQueues.get(file) === settled) sqliteQueues.delete(file);
  }
}

function migrationsTableSql(provider: IdempotencyPrismaProvider): string {
  const q = (id: string) => quoteIdentifier(provider, id);
  const time = provider === 'sqlite' ? 'DATETIME' : provider === 'mysql' ? 'DATETIME(3)' : 'TIMESTAMP(3)';
  const suffix = provider === 'mysql' ? ' DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci' : '';
  return (
    `CREATE TABLE IF NOT EXISTS ${q(MIGRATIONS_TABLE_NAME)} (` +
    `${q('table_name')} VARCHAR(64) NOT NULL, ` +
    `${q('migration_name')} VARCHAR(255) NOT NULL, ` +
    `${q('checksum')} VARCHAR(64) NOT NULL, ` +
    `${q('applied_at')} ${time} NOT NULL, ` +
    `PRIMARY KEY (${q('table_name')}, ${q('migration_name')}))${suffix}`
  );
}

/**
 * MariaDB has the NO PAD binary collation `utf8mb4_nopad_bin`; MySQL 8 calls its equivalent
 * `utf8mb4_0900_bin`. The shipped SQL names MariaDB's; on a server without it we switch to MySQL's.
 */
async function adaptMysqlCollation(tx: IdempotencyPrismaQueryable, sql: string): Promise<string> {
  if (!sql.includes('utf8mb4_nopad_bin')) return sql;
  const rows = await tx.$queryRawUnsafe<Array<{ name: string }>>(
    "SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')",
  );
  const names = new Set(rows.map((row) => row.name));
  if (names.has('utf8mb4_nopad_bin')) return sql;
  if (names.has('utf8mb4_0900_bin')) return sql.replace(/utf8mb4_nopad_bin/g, 'utf8mb4_0900_bin');
  throw new Error(
    'applyIdempotencyMigrations: this MySQL/MariaDB server has neither utf8mb4_nopad_bin (MariaDB 10.2+) nor ' +
      'utf8mb4_0900_bin (MySQL 8+). Keys need a binary NO PAD collation so that "abc", "ABC" and "abc " stay ' +
      'distinct; upgrade the server.',
  );
}

/**
 * Apply the shipped migrations that this database has not seen yet, through the Prisma client (no Prisma
 * engines needed). Safe to run at every start-up and from several deployers at once:
 *
 * - Applied migrations are recorded in the table `rpc_idempotency_migrations` (per record table name), so a
 *   host app's `_prisma_migrations` stays untouched and a re-run applies nothing.
 * - PostgreSQL: one transaction under `pg_advisory_xact_lock` (per schema), so concurrent deployers apply
 *   once and a failure rolls everything back.
 * - MySQL/MariaDB: under `GET_LOCK` (per database). DDL commits implicitly there, so a crash between a
 *   migration's DDL and its bookkeeping row needs a manual fix (drop the table, run again).
 * - SQLite: one write transaction; migrations of one file in one process are also queued in memory.
 *
 * Statements run unqualified, so the table lands in the connection's current schema (PostgreSQL
 * `search_path`) or database (MySQL). Users of `prisma migrate deploy` can instead copy
 * `prisma/<provider>/migrations` from the package into their own migrations.
 *
 * @example
 * ```ts
 * const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString }) });
 * await applyIdempotencyMigrations(prisma); // { applied: ['20261203120000_init'], alreadyApplied: [] }
 * const store = createPrismaStore(prisma);
 * ```
 */
export async function applyIdempotencyMigrations(
  prisma: IdempotencyPrismaClient,
  options: IdempotencyMigrationOptions = {},
): Promise<IdempotencyMigrationResult> {
  const caller = 'applyIdempotencyMigrations';
  const provider = resolvePrismaProvider(prisma, options.provider, caller);
  if (typeof (prisma as Partial<IdempotencyPrismaClient>).$transaction !== 'function') {
    throw new TypeError(
      `${caller}: expected a whole PrismaClient (with $transaction), got a client without it (a transaction ` +
        'client `tx`?). Pass the PrismaClient itself: migrations manage their own transaction and lock.',
    );
  }
  const tableName = validateTableName(options.tableName ?? DEFAULT_TABLE_NAME, caller);
  const lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1) {
    throw new TypeError(
      `${caller}: option \`lockTimeoutMs\` must be a positive integer (milliseconds), got ${describeValue(lockTimeoutMs)}.`,
    );
  }
  const migrations = await loadIdempotencyMigrations(provider, {
    tableName,
    ...(options.migrationsRoot === undefined ? {} : { migrationsRoot: options.migrationsRoot }),
  });
  const q = (id: string) => quoteIdentifier(provider, id);
  const p = (index: number) => (provider === 'postgresql' ? `$${index}` : '?');

  const applyPending = async (tx: IdempotencyPrismaQueryable): Promise<IdempotencyMigrationResult> => {
    const rows = await tx.$queryRawUnsafe<Array<{ migration_name: string }>>(
      `SELECT ${q('migration_name')} FROM ${q(MIGRATIONS_TABLE_NAME)} WHERE ${q('table_name')} = ${p(1)}`,
      tableName,
    );
    const done = new Set(rows.map((row) => row.migration_name));
    const applied: string[] = [];
    const alreadyApplied: string[] = [];
    for (const migration of migrations) {
      if (done.has(migration.name)) {
        alreadyApplied.push(migration.name);
        continue;
      }
      const sql = provider === 'mysql' ? await adaptMysqlCollation(tx, migration.sql) : migration.sql;
      for (const statement of splitSqlStatements(sql)) {
        try {
          await tx.$executeRawUnsafe(statement);
        } catch (error) {
          throw new Error(
            `${caller}: migration ${migration.name} failed on ${provider} at:\n${statement}\n` +
              `${(error as Error).message ?? String(error)}`,
            { cause: error },
          );
        }
      }
      await tx.$executeRawUnsafe(
        `INSERT INTO ${q(MIGRATIONS_TABLE_NAME)} (${q('table_name')}, ${q('migration_name')}, ${q('checksum')}, ` +
          `${q('applied_at')}) VALUES (${p(1)}, ${p(2)}, ${p(3)}, ${p(4)})`,
        tableName,
        migration.name,
        migration.checksum,
        new Date(),
      );
      applied.push(migration.name);
    }
    return { applied, alreadyApplied };
  };

  // Prisma's interactive transaction must outlive a concurrent deployer's work plus our own.
  const transactionOptions = { maxWait: lockTimeoutMs, timeout: lockTimeoutMs * 2 };

  if (provider === 'postgresql') {
    return prisma.$transaction(async (tx) => {
      await tx.$executeRawUnsafe(`SET LOCAL lock_timeout = '${lockTimeoutMs}ms'`);
      // Two-key form: class 0x52494450 ('RIDP') keeps us apart from the app's own advisory locks; the second
      // key is the schema, so isolated schemas in one database do not wait for each other.
      await tx.$executeRawUnsafe(
        "SELECT pg_advisory_xact_lock(1380533328, hashtext(coalesce(current_schema(), '') || '.rpc_idempotency'))",
      );
      await tx.$executeRawUnsafe(migrationsTableSql(provider));
      return applyPending(tx);
    }, transactionOptions);
  }

  if (provider === 'mysql') {
    // GET_LOCK belongs to the session, so everything runs on the one connection a transaction pins.
    return prisma.$transaction(async (tx) => {
      const lockName = "CONCAT('rpc_idempotency:', SHA1(COALESCE(DATABASE(), '')))";
      const [lock] = await tx.$queryRawUnsafe<Array<{ acquired: unknown }>>(
        `SELECT GET_LOCK(${lockName}, ?) AS acquired`,
        Math.ceil(lockTimeoutMs / 1000),
      );
      if (lock === undefined || Number(lock.acquired) !== 1) {
        throw new Error(
          `${caller}: timed out after ${lockTimeoutMs} ms waiting for another deployer's migration lock ` +
            '(GET_LOCK). Retry, or raise `lockTimeoutMs`.',
        );
      }
      try {
        await tx.$executeRawUnsafe(migrationsTableSql(provider));
        return await applyPending(tx);
      } finally {
        await tx.$queryRawUnsafe(`SELECT RELEASE_LOCK(${lockName}) AS released`);
      }
    }, transactionOptions);
  }

  // SQLite. The table must exist before the transaction so that its first statement can be a write: a
  // deferred transaction that reads first cannot always upgrade to a writer in WAL mode (SQLITE_BUSY_SNAPSHOT).
  await prisma.$executeRawUnsafe(migrationsTableSql(provider));
  const [database] = await prisma.$queryRawUnsafe<Array<{ file: string | null }>>(
    "SELECT file FROM pragma_database_list WHERE name = 'main'",
  );
  return withSqliteFileQueue(database?.file ?? '', async () =>
    prisma.$transaction(async (tx) => {
      // A write that changes nothing, to take the write lock first (waiting for other processes).
      await tx.$executeRawUnsafe(`DELETE FROM ${q(MIGRATIONS_TABLE_NAME)} WHERE 0 = 1`);
      return applyPending(tx);
    }, transactionOptions),
  );
}
