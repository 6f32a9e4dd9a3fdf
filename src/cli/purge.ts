/**
 * `rpc-idempotency-purge`: delete expired idempotency records in batches, for a cron job or a scheduled task.
 *
 * It talks to the database through the plain driver (`pg`, `mariadb` or `better-sqlite3`, whichever the URL
 * needs: the same drivers the Prisma adapters use), so it needs no generated Prisma client.
 *
 * ```text
 * rpc-idempotency-purge --url <database-url> [--schema <pg schema>] [--table idempotency_records]
 *                       [--batch-size 1000] [--max-batches N] [--quiet]
 *
 *   postgresql://user@host:5432/db   PostgreSQL
 *   mysql://user@host:3306/db        MySQL / MariaDB (also mariadb://)
 *   file:./data/app.db               SQLite (a path ending in .db / .sqlite works too)
 * ```
 *
 * Exit codes: 0 done, 1 the database failed, 2 bad arguments.
 *
 * @example
 * ```sh
 * npx rpc-idempotency-purge --url "$DATABASE_URL" --batch-size 5000
 * ```
 * @packageDocumentation
 */
import { createIdempotencyService } from '../core/service.js';
import type { IdempotencyPrismaProvider, IdempotencyPrismaQueryable } from '../stores/prisma/client.js';
import { createPrismaStore } from '../stores/prisma/store.js';

/** Parsed command line of the purge command. */
export interface IdempotencyPurgeCommand {
  readonly url: string;
  readonly provider: IdempotencyPrismaProvider;
  readonly schema: string | undefined;
  readonly table: string | undefined;
  readonly batchSize: number;
  readonly maxBatches: number;
  readonly quiet: boolean;
}

const USAGE = `usage: rpc-idempotency-purge --url <database-url> [--schema <name>] [--table <name>]
                             [--batch-size 1000] [--max-batches <n>] [--quiet]
  --url          postgresql://..., mysql://... or mariadb://..., file:./app.db (SQLite)
  --schema       PostgreSQL schema holding the table (default: the connection's search_path)
  --table        the record table (default: idempotency_records)
  --batch-size   records deleted per statement (default: 1000)
  --max-batches  stop after this many batches, for a bounded job (default: no limit)
  --quiet        print only the final line`;

/** A bad command line: the message says what was expected and what arrived. */
export class PurgeUsageError extends Error {
  override name = 'PurgeUsageError';
}

/**
 * Parse the purge command's arguments.
 *
 * @example
 * ```ts
 * parsePurgeArguments(['--url', 'postgresql://127.0.0.1/app', '--batch-size', '500']);
 * ```
 */
export function parsePurgeArguments(argv: readonly string[]): IdempotencyPurgeCommand {
  const values = new Map<string, string>();
  let quiet = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--quiet') {
      quiet = true;
      continue;
    }
    if (arg === '--help' || arg === '-h') throw new PurgeUsageError(USAGE);
    // Split at the first '=' only: URLs carry '=' in query strings and passwords.
    const equals = arg.indexOf('=');
    const name = equals === -1 ? arg : arg.slice(0, equals);
    const inline = equals === -1 ? undefined : arg.slice(equals + 1);
    if (!['--url', '--schema', '--table', '--batch-size', '--max-batches'].includes(name)) {
      throw new PurgeUsageError(`unknown argument ${JSON.stringify(arg)}\n${USAGE}`);
    }
    const value = inline ?? argv[++i];
    if (value === undefined || value === '') throw new PurgeUsageError(`${name} needs a value\n${USAGE}`);
    values.set(name, value);
  }
  const url = values.get('--url') ?? process.env.DATABASE_URL;
  if (!url) throw new PurgeUsageError(`expected --url <database-url> (or DATABASE_URL), received none\n${USAGE}`);
  const integer = (name: string, fallback: number) => {
    const raw = values.get(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new PurgeUsageError(`expected ${name} to be a positive integer, received ${JSON.stringify(raw)}`);
    }
    return value;
  };
  return {
    url,
    provider: providerOf(url),
    schema: values.get('--schema'),
    table: values.get('--table'),
    batchSize: integer('--batch-size', 1_000),
    maxBatches: integer('--max-batches', Number.MAX_SAFE_INTEGER),
    quiet,
  };
}

function providerOf(url: string): IdempotencyPrismaProvider {
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgresql';
  if (/^(mysql|mariadb):\/\//i.test(url)) return 'mysql';
  if (/^file:/i.test(url) || /\.(db|sqlite3?)$/i.test(url)) return 'sqlite';
  throw new PurgeUsageError(
    `expected a postgresql://, mysql://, mariadb:// or file: URL, received ${JSON.stringify(url.replace(/\/\/[^@/]*@/, '//***@'))}`,
  );
}

/** Timestamps travel as UTC text in the format each database stores, whatever the process time zone. */
function utcText(provider: IdempotencyPrismaProvider, date: Date): string {
  const iso = date.toISOString(); // 2026-12-03T17:45:00.123Z
  return provider === 'sqlite' ? iso.replace('Z', '+00:00') : iso.replace('T', ' ').replace('Z', '');
}

interface Connection extends IdempotencyPrismaQueryable {
  close(): Promise<void>;
}

async function importDriver<T>(name: string, provider: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (error) {
    throw new Error(
      `rpc-idempotency-purge: the ${provider} driver "${name}" is not installed (${(error as Error).message}). Install it next to rpc-idempotency: npm install ${name}`,
    );
  }
}

/** Open a raw-driver connection that answers the two raw-SQL calls the store makes. */
async function connect(command: IdempotencyPurgeCommand): Promise<Connection> {
  const args = (values: unknown[]) =>
    values.map((value) => (value instanceof Date ? utcText(command.provider, value) : value));
  switch (command.provider) {
    case 'postgresql': {
      const pg = await importDriver<{ default: typeof import('pg') }>('pg', 'PostgreSQL');
      const client = new pg.default.Client({ connectionString: command.url });
      await client.connect();
      if (command.schema) {
        try {
          await client.query(`SET search_path TO "${command.schema.replaceAll('"', '""')}"`);
        } catch (error) {
          await client.end();
          throw error;
        }
      }
      return {
        async $queryRawUnsafe<T>(sql: string, ...values: unknown[]) {
          return (await client.query(sql, args(values))).rows as T;
        },
        async $executeRawUnsafe(sql: string, ...values: unknown[]) {
          return (await client.query(sql, args(values))).rowCount ?? 0;
        },
        close: () => client.end(),
      };
    }
    case 'mysql': {
      const mariadb = await importDriver<{ default: typeof import('mariadb') }>('mariadb', 'MySQL/MariaDB');
      const url = new URL(command.url.replace(/^mysql:/i, 'mariadb:'));
      const connection = await mariadb.default.createConnection({
        host: url.hostname,
        port: Number(url.port || 3306),
        user: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
      });
      return {
        async $queryRawUnsafe<T>(sql: string, ...values: unknown[]) {
          return (await connection.query(sql, args(values))) as T;
        },
        async $executeRawUnsafe(sql: string, ...values: unknown[]) {
          return Number(((await connection.query(sql, args(values))) as { affectedRows: number }).affectedRows);
        },
        close: () => connection.end(),
      };
    }
    case 'sqlite': {
      const sqlite = await importDriver<{ default: typeof import('better-sqlite3') }>('better-sqlite3', 'SQLite');
      const db = new sqlite.default(command.url.replace(/^file:/i, ''), { fileMustExist: true, timeout: 5_000 });
      return {
        async $queryRawUnsafe<T>(sql: string, ...values: unknown[]) {
          return db.prepare(sql).all(...args(values)) as T;
        },
        async $executeRawUnsafe(sql: string, ...values: unknown[]) {
          return db.prepare(sql).run(...args(values)).changes;
        },
        async close() {
          db.close();
        },
      };
    }
  }
}

/**
 * Run the purge: batches until no expired record is left (or `maxBatches`), printing progress to `log`.
 * Resolves to the number of records deleted.
 *
 * @example
 * ```ts
 * await runPurge(parsePurgeArguments(['--url', 'file:./app.db']), console.log);
 * ```
 */
export async function runPurge(command: IdempotencyPurgeCommand, log: (line: string) => void): Promise<number> {
  const connection = await connect(command);
  try {
    const store = createPrismaStore(connection, {
      provider: command.provider,
      ...(command.table ? { tableName: command.table } : {}),
    });
    const service = createIdempotencyService({ store });
    const started = Date.now();
    const deleted = await service.purgeExpired({
      batchSize: command.batchSize,
      maxBatches: command.maxBatches,
      onProgress: ({ deleted: total, batches }) => {
        if (!command.quiet) log(`batch ${batches}: ${total} expired records deleted so far`);
      },
    });
    log(`purged ${deleted} expired idempotency records in ${Date.now() - started} ms`);
    return deleted;
  } finally {
    await connection.close();
  }
}

/** The command's entry point: parse `argv`, purge, set the exit code. */
export async function purgeMain(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  let command: IdempotencyPurgeCommand;
  try {
    command = parsePurgeArguments(argv);
  } catch (error) {
    const message = (error as Error).message;
    console.error(message.includes('usage:') ? message : `${message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  try {
    await runPurge(command, (line) => console.log(line));
  } catch (error) {
    console.error(`rpc-idempotency-purge failed: ${(error as Error).message}`);
    process.exitCode = 1;
  }
}
