/**
 * Real databases for integration tests: an isolated, migrated namespace per call, on SQLite (a temp file),
 * PostgreSQL (a fresh schema in database `test`) and MySQL/MariaDB (a fresh database `test_<random>`).
 *
 * Many test files and several people run against the same servers at once, so every namespace has a random
 * name and is dropped by `drop()`. Server addresses, overridable by environment:
 *
 * - `RPC_IDEMPOTENCY_TEST_POSTGRES_URL`, default `postgresql://postgres@127.0.0.1:5432/test`
 * - `RPC_IDEMPOTENCY_TEST_MYSQL_URL`, default `mariadb://root@127.0.0.1:3306/test`
 *
 * When a server is unreachable, {@link describeWithDatabase} skips its tests with a visible message, except
 * under `CI=true`, where it fails instead.
 *
 * @example
 * ```ts
 * import { describeWithDatabase, createTestDatabase, TEST_PROVIDERS } from '../support/databases.js';
 *
 * for (const provider of TEST_PROVIDERS) {
 *   describeWithDatabase(provider, 'my behaviour', () => {
 *     it('works', async () => {
 *       const db = await createTestDatabase(provider);
 *       try {
 *         const store = createPrismaStore(db.prisma);
 *         // ...
 *       } finally {
 *         await db.drop();
 *       }
 *     });
 *   });
 * }
 * ```
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';
import type { PrismaClient as MysqlPrismaClient } from '../../prisma/generated/mysql/client.js';
import type { PrismaClient as PostgresPrismaClient } from '../../prisma/generated/postgresql/client.js';
import type { PrismaClient as SqlitePrismaClient } from '../../prisma/generated/sqlite/client.js';
import type { IdempotencyClaimInput, IdempotencyClaimResult } from '../../src/stores/contract.js';
import { applyIdempotencyMigrations, configureSqlite } from '../../src/stores/prisma/index.js';

/** The providers we test against, named as in `schema.prisma` (MariaDB is `mysql`). */
export type TestProvider = 'sqlite' | 'postgresql' | 'mysql';

/**
 * All three providers, in the order tests iterate them.
 *
 * @example
 * ```ts
 * for (const provider of TEST_PROVIDERS) describeWithDatabase(provider, 'claim', () => { ... });
 * ```
 */
export const TEST_PROVIDERS: readonly TestProvider[] = ['sqlite', 'postgresql', 'mysql'];

/** The generated Prisma client type of each provider (`prisma/generated/<provider>`). */
export interface TestPrismaClients {
  sqlite: SqlitePrismaClient;
  postgresql: PostgresPrismaClient;
  mysql: MysqlPrismaClient;
}

/** The generated Prisma client of provider `P`. */
export type TestPrismaClient<P extends TestProvider = TestProvider> = TestPrismaClients[P];

/**
 * Where a test namespace lives: plain data, so it can be handed to a child process
 * ({@link spawnClaimWorker}) that opens its own client with {@link createTestClient}.
 */
export interface TestNamespace {
  readonly provider: TestProvider;
  /** SQLite: the database file path. PostgreSQL, MySQL: a connection URL. */
  readonly url: string;
  /** PostgreSQL only: the schema that isolates this namespace (set as `search_path`). */
  readonly schema?: string;
}

/** Options of {@link createTestClient}. */
export interface TestClientOptions {
  /**
   * Connection pool size (PostgreSQL, MySQL). Small by default because many test files share the servers.
   * @default 4
   */
  poolSize?: number;
  /** Called with the SQL of every statement Prisma sends (Prisma's `query` log event), e.g. to count them. */
  onQuery?: (sql: string) => void;
}

/** One isolated, migrated namespace from {@link createTestDatabase}. */
export interface TestDatabase<P extends TestProvider = TestProvider> {
  readonly provider: P;
  /** A connected client on the namespace, with the migrations applied. */
  readonly prisma: TestPrismaClient<P>;
  /** Where the namespace lives, for {@link createTestClient} and {@link spawnClaimWorker}. */
  readonly namespace: TestNamespace;
  /** SQLite: the file path. PostgreSQL, MySQL: the connection URL (PostgreSQL needs `namespace.schema` too). */
  readonly url: string;
  /**
   * Another independent PrismaClient (own connections) on the same namespace, for multi-client tests.
   * `drop()` disconnects it. SQLite: single statements only; two clients in one process must not both hold a
   * transaction (better-sqlite3 waits for locks synchronously and would block the event loop).
   */
  createClient(options?: TestClientOptions): Promise<TestPrismaClient<P>>;
  /** Disconnect every client of this namespace and delete the namespace. Idempotent. */
  drop(): Promise<void>;
}

const POSTGRES_URL = process.env.RPC_IDEMPOTENCY_TEST_POSTGRES_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.RPC_IDEMPOTENCY_TEST_MYSQL_URL ?? 'mariadb://root@127.0.0.1:3306/test';

const SERVER_URLS: Record<TestProvider, string> = {
  sqlite: 'better-sqlite3 (temporary files)',
  postgresql: POSTGRES_URL,
  mysql: MYSQL_URL,
};

function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(5).toString('hex')}`;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/**
 * Open a new PrismaClient on an existing namespace (another client in this process, or in a child process).
 * The caller disconnects it.
 *
 * @example
 * ```ts
 * const other = await createTestClient(db.namespace);
 * try { await createPrismaStore(other).get('', 'k'); } finally { await other.$disconnect(); }
 * ```
 */
export async function createTestClient<P extends TestProvider>(
  namespace: TestNamespace & { provider: P },
  options: TestClientOptions = {},
): Promise<TestPrismaClient<P>> {
  const poolSize = options.poolSize ?? 4;
  const log = options.onQuery === undefined ? {} : { log: [{ emit: 'event' as const, level: 'query' as const }] };
  let client: TestPrismaClient;
  switch (namespace.provider) {
    case 'sqlite': {
      const [{ PrismaBetterSqlite3 }, { PrismaClient }] = await Promise.all([
        import('@prisma/adapter-better-sqlite3'),
        import('../../prisma/generated/sqlite/client.js'),
      ]);
      client = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: namespace.url, timeout: 5000 }), ...log });
      break;
    }
    case 'postgresql': {
      const [{ PrismaPg }, { PrismaClient }] = await Promise.all([
        import('@prisma/adapter-pg'),
        import('../../prisma/generated/postgresql/client.js'),
      ]);
      if (namespace.schema === undefined) {
        throw new Error('createTestClient: a PostgreSQL namespace needs `schema` (from createTestDatabase).');
      }
      const adapter = new PrismaPg(
        { connectionString: namespace.url, options: `-c search_path=${namespace.schema}`, max: poolSize },
        { schema: namespace.schema },
      );
      client = new PrismaClient({ adapter, ...log });
      break;
    }
    case 'mysql': {
      const [{ PrismaMariaDb }, { PrismaClient }] = await Promise.all([
        import('@prisma/adapter-mariadb'),
        import('../../prisma/generated/mysql/client.js'),
      ]);
      const url = new URL(namespace.url);
      url.searchParams.set('connectionLimit', String(poolSize));
      client = new PrismaClient({ adapter: new PrismaMariaDb(url.toString()), ...log });
      break;
    }
  }
  const { onQuery } = options;
  if (onQuery !== undefined) {
    (client as unknown as { $on(event: 'query', cb: (event: { query: string }) => void): void }).$on('query', (event) =>
      onQuery(event.query),
    );
  }
  await client.$connect();
  return client as TestPrismaClient<P>;
}

async function adminPostgres<T>(fn: (client: import('pg').Client) => Promise<T>): Promise<T> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function adminMysql<T>(fn: (connection: import('mariadb').Connection) => Promise<T>): Promise<T> {
  const mariadb = await import('mariadb');
  const connection = await mariadb.createConnection({ ...mysqlConfig(MYSQL_URL), connectTimeout: 2000 });
  try {
    return await fn(connection);
  } finally {
    await connection.end();
  }
}

function mysqlConfig(url: string): { host: string; port: number; user: string; password: string; database?: string } {
  const parsed = new URL(url);
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 3306),
    user: decodeURIComponent(parsed.username || 'root'),
    password: decodeURIComponent(parsed.password),
    ...(database === '' ? {} : { database }),
  };
}

/**
 * Create an isolated namespace on `provider`, apply the shipped migrations with `applyIdempotencyMigrations`,
 * and return a connected client. Always call `drop()` (in `finally` or `afterAll`).
 *
 * @param options.migrate apply the migrations (default `true`; `false` for tests of the migration runner)
 * @example
 * ```ts
 * const db = await createTestDatabase('postgresql');
 * afterAll(() => db.drop());
 * ```
 */
export async function createTestDatabase<P extends TestProvider>(
  provider: P,
  options: { migrate?: boolean } = {},
): Promise<TestDatabase<P>> {
  let namespace: TestNamespace;
  let removeNamespace: () => Promise<void>;
  switch (provider) {
    case 'sqlite': {
      const dir = await mkdtemp(join(tmpdir(), 'rpc-idempotency-'));
      namespace = { provider, url: join(dir, 'test.db') };
      removeNamespace = () => rm(dir, { recursive: true, force: true });
      break;
    }
    case 'postgresql': {
      const schema = uniqueName('t');
      await adminPostgres((client) => client.query(`CREATE SCHEMA "${schema}"`));
      namespace = { provider, url: POSTGRES_URL, schema };
      removeNamespace = () =>
        adminPostgres(async (client) => void (await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)));
      break;
    }
    case 'mysql': {
      const database = uniqueName('test');
      await adminMysql((connection) => connection.query(`CREATE DATABASE \`${database}\``));
      namespace = { provider, url: withDatabase(MYSQL_URL, database) };
      removeNamespace = () =>
        adminMysql(async (connection) => void (await connection.query(`DROP DATABASE IF EXISTS \`${database}\``)));
      break;
    }
    default:
      throw new TypeError(
        `createTestDatabase: unknown provider ${String(provider)}; expected ${TEST_PROVIDERS.join(' | ')}.`,
      );
  }

  const clients: TestPrismaClient[] = [];
  let dropped: Promise<void> | undefined;
  const drop = () => {
    dropped ??= (async () => {
      await Promise.allSettled(clients.map((client) => client.$disconnect()));
      await removeNamespace();
    })();
    return dropped;
  };
  try {
    const prisma = await createTestClient(namespace as TestNamespace & { provider: P });
    clients.push(prisma);
    if (provider === 'sqlite') await configureSqlite(prisma);
    if (options.migrate !== false) await applyIdempotencyMigrations(prisma);
    return {
      provider,
      prisma,
      namespace,
      url: namespace.url,
      async createClient(clientOptions) {
        const client = await createTestClient(namespace as TestNamespace & { provider: P }, clientOptions);
        clients.push(client);
        return client;
      },
      drop,
    };
  } catch (error) {
    await drop().catch(() => undefined);
    throw error;
  }
}

const availability = new Map<TestProvider, Promise<boolean>>();

/**
 * Whether `provider`'s server answers (cached per process). SQLite is always available.
 *
 * @example
 * ```ts
 * if (!(await providerAvailable('mysql'))) console.warn('no MariaDB here');
 * ```
 */
export function providerAvailable(provider: TestProvider): Promise<boolean> {
  let cached = availability.get(provider);
  if (cached === undefined) {
    cached = (async () => {
      try {
        if (provider === 'postgresql') await adminPostgres((client) => client.query('SELECT 1'));
        if (provider === 'mysql') await adminMysql((connection) => connection.query('SELECT 1'));
        return true;
      } catch {
        return false;
      }
    })();
    availability.set(provider, cached);
  }
  return cached;
}

/**
 * `describe` for tests that need `provider`'s server. When it is unreachable the suite is skipped with a
 * warning on the console and a skipped test saying why; with `CI=true` the suite fails instead, so CI never
 * passes by skipping.
 *
 * @example
 * ```ts
 * for (const provider of TEST_PROVIDERS) {
 *   describeWithDatabase(provider, 'claim', () => { it('...', async () => { ... }); });
 * }
 * ```
 */
export function describeWithDatabase(provider: TestProvider, name: string, fn: () => void): void {
  describe(`${name} [${provider}]`, async () => {
    if (await providerAvailable(provider)) {
      fn();
      return;
    }
    const message = `${provider} server unreachable at ${SERVER_URLS[provider]}`;
    if (process.env.CI === 'true') {
      throw new Error(`${message}. CI=true: database tests must not be skipped. Start the server or fix the URL.`);
    }
    console.warn(`\n[rpc-idempotency tests] SKIPPING "${name} [${provider}]": ${message}.\n`);
    it.skip(`SKIPPED: ${message}`, () => undefined);
  });
}

/** A running claim worker: wait for `ready`, call `go()`, then await `results`. */
export interface ClaimWorker {
  /** Resolves when the child has connected and warmed its connection pool. */
  readonly ready: Promise<void>;
  /** Start the claims (after `ready`). */
  go(): void;
  /** The result of each claim, in input order, once the child exits. */
  readonly results: Promise<IdempotencyClaimResult[]>;
  /** Kill the child (cleanup after a failure). */
  kill(): void;
}

const WORKER = fileURLToPath(new URL('./claim-worker.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Start a separate OS process (`node --import tsx test/support/claim-worker.ts`) that opens its own
 * PrismaClient and store on `namespace` and, on `go()`, starts all `claims` at once. For multi-process races:
 * await `ready`, then call `go()` together with your own claims.
 *
 * @example
 * ```ts
 * const worker = spawnClaimWorker(db.namespace, inputs);
 * await worker.ready;
 * worker.go();
 * const [theirs, ours] = await Promise.all([worker.results, Promise.all(mine.map((i) => store.claim(i)))]);
 * ```
 */
export function spawnClaimWorker(namespace: TestNamespace, claims: readonly IdempotencyClaimInput[]): ClaimWorker {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', WORKER], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // The job travels on stdin (first line) rather than argv: 50 claims do not fit every platform's argv.
  child.stdin?.write(`${JSON.stringify({ namespace, claims })}\n`);
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const lines = createInterface({ input: child.stdout! });
  let resolveReady: () => void = () => undefined;
  let rejectReady: (error: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  let resultLine: string | undefined;
  lines.on('line', (line) => {
    if (line === 'ready') resolveReady();
    else if (line.startsWith('{')) resultLine = line;
  });
  const results = exited.then((code) => {
    const failure = new Error(`claim worker exited with code ${code}. Its stderr:\n${stderr}`);
    rejectReady(failure);
    if (code !== 0 || resultLine === undefined) throw failure;
    // Records travel as JSON, with `result` bytes as a plain array: turn them back into Uint8Arrays.
    const revive = (key: string, value: unknown) =>
      key === 'result' && Array.isArray(value) ? Uint8Array.from(value as number[]) : value;
    return (JSON.parse(resultLine, revive) as { results: IdempotencyClaimResult[] }).results;
  });
  results.catch(() => undefined);
  ready.catch(() => undefined);
  return {
    ready,
    go: () => child.stdin?.write('go\n'),
    results,
    kill: () => child.kill(),
  };
}
