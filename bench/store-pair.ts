/**
 * What the Prisma store costs per call, against the same SQL sent straight through the driver.
 *
 * For each provider, over sequential iterations on a fresh key each time:
 *   (a) store: `claim` + `complete` through createPrismaStore (Prisma client + driver adapter);
 *   (b) raw:   the same two statements through the bare driver (better-sqlite3, pg.Client, a mariadb
 *       connection), prepared once where the driver allows it;
 *   (c) model: for reference, the pair through Prisma's model API (`create`, then a fenced `updateMany`),
 *       which the store avoids.
 * Prints the median and p99 of one pair, and the ratio of the store's median to the raw driver's.
 *
 * Run: `npx tsx bench/store-pair.ts [iterations]` (default 2000, after 200 warm-up pairs). Needs the
 * PostgreSQL and MariaDB servers that the tests use (see test/support/databases.ts); a provider whose server is
 * unreachable is reported and skipped.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createPrismaStore } from '../src/stores/prisma/index.js';
import {
  createTestDatabase,
  providerAvailable,
  TEST_PROVIDERS,
  type TestDatabase,
  type TestProvider,
} from '../test/support/databases.js';

const ITERATIONS = Number(process.argv[2] ?? 2000);
const WARMUP = 200;
const LEASE = 30_000;
const TTL = 86_400_000;
const RESULT = new Uint8Array(256).fill(7);

type Pair = (key: string) => Promise<void>;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function measure(pair: Pair): Promise<{ median: number; p99: number }> {
  for (let i = 0; i < WARMUP; i++) await pair(randomUUID());
  const samples: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    const key = randomUUID();
    const started = performance.now();
    await pair(key);
    samples.push((performance.now() - started) * 1000);
  }
  samples.sort((a, b) => a - b);
  return { median: percentile(samples, 50), p99: percentile(samples, 99) };
}

function storePair(db: TestDatabase): Pair {
  const store = createPrismaStore(db.prisma);
  return async (key) => {
    const now = Date.now();
    const ownerToken = randomUUID();
    const claim = await store.claim({
      scope: 'bench',
      key,
      fingerprint: 'f'.repeat(64),
      procedure: 'bench.pair',
      ownerToken,
      now,
      lockedUntil: now + LEASE,
      expiresAt: now + TTL,
    });
    if (!claim.claimed) throw new Error('bench: a fresh key was not claimed');
    const done = await store.complete({
      scope: 'bench',
      key,
      ownerToken,
      status: 'SUCCEEDED',
      result: RESULT,
      resultCode: null,
      codec: 'json',
    });
    if (!done) throw new Error('bench: completion was refused');
  };
}

interface ModelApi {
  idempotencyRecord: {
    create(args: { data: Record<string, unknown> }): Promise<unknown>;
    updateMany(args: { where: Record<string, unknown>; data: Record<string, unknown> }): Promise<{ count: number }>;
  };
}

function modelPair(db: TestDatabase): Pair {
  const prisma = db.prisma as unknown as ModelApi;
  return async (key) => {
    const now = Date.now();
    const ownerToken = randomUUID();
    await prisma.idempotencyRecord.create({
      data: {
        scope: 'bench',
        key,
        fingerprint: 'f'.repeat(64),
        procedure: 'bench.pair',
        status: 'IN_PROGRESS',
        ownerToken,
        lockedUntil: new Date(now + LEASE),
        createdAt: new Date(now),
        expiresAt: new Date(now + TTL),
      },
    });
    const done = await prisma.idempotencyRecord.updateMany({
      where: { scope: 'bench', key, ownerToken, status: 'IN_PROGRESS' },
      data: { status: 'SUCCEEDED', result: RESULT, codec: 'json' },
    });
    if (done.count !== 1) throw new Error('bench: model completion refused');
  };
}

const COLUMNS =
  'scope, "key", fingerprint, procedure, status, owner_token, locked_until, result, result_code, codec, created_at, expires_at';

async function rawPair(db: TestDatabase): Promise<{ pair: Pair; close: () => Promise<void> }> {
  switch (db.provider) {
    case 'sqlite': {
      const { default: Database } = await import('better-sqlite3');
      const sqlite = new Database(db.url, { timeout: 5000 });
      const claim = sqlite.prepare(
        `INSERT INTO idempotency_records (${COLUMNS}) VALUES (?, ?, ?, ?, 'IN_PROGRESS', ?, ?, NULL, NULL, NULL, ?, ?) ` +
          'ON CONFLICT (scope, "key") DO NOTHING',
      );
      const complete = sqlite.prepare(
        'UPDATE idempotency_records SET status = ?, result = ?, result_code = ?, codec = ? ' +
          'WHERE scope = ? AND "key" = ? AND owner_token = ? AND status = \'IN_PROGRESS\'',
      );
      // The text form Prisma's SQLite adapter writes for DateTime values.
      const iso = (ms: number) => new Date(ms).toISOString().replace('Z', '+00:00');
      return {
        pair: async (key) => {
          const now = Date.now();
          const token = randomUUID();
          const claimed = claim.run(
            'bench',
            key,
            'f'.repeat(64),
            'bench.pair',
            token,
            iso(now + LEASE),
            iso(now),
            iso(now + TTL),
          );
          if (claimed.changes !== 1) throw new Error('bench: raw claim lost');
          const done = complete.run('SUCCEEDED', Buffer.from(RESULT), null, 'json', 'bench', key, token);
          if (done.changes !== 1) throw new Error('bench: raw completion refused');
        },
        close: async () => void sqlite.close(),
      };
    }
    case 'postgresql': {
      const { default: pg } = await import('pg');
      const client = new pg.Client({
        connectionString: db.url,
        options: `-c search_path=${db.namespace.schema}`,
      });
      await client.connect();
      // The store's one-statement claim (insert, or return the existing row), as a named prepared statement.
      const claimSql =
        `WITH ins AS (INSERT INTO idempotency_records (${COLUMNS}) ` +
        "VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, NULL, NULL, NULL, $7, $8) " +
        'ON CONFLICT (scope, "key") DO NOTHING RETURNING 1) ' +
        'SELECT EXISTS (SELECT 1 FROM ins) AS inserted, s.* FROM (SELECT 1) AS one ' +
        'LEFT JOIN idempotency_records AS s ON s.scope = $1 AND s."key" = $2';
      const completeSql =
        'UPDATE idempotency_records SET status = $4, result = $5, result_code = $6, codec = $7 ' +
        'WHERE scope = $1 AND "key" = $2 AND owner_token = $3 AND status = \'IN_PROGRESS\'';
      // UTC text for TIMESTAMP WITHOUT TIME ZONE, as Prisma's pg adapter sends it.
      const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
      return {
        pair: async (key) => {
          const now = Date.now();
          const token = randomUUID();
          const claimed = await client.query({
            name: 'bench-claim',
            text: claimSql,
            values: ['bench', key, 'f'.repeat(64), 'bench.pair', token, utc(now + LEASE), utc(now), utc(now + TTL)],
          });
          if (claimed.rows[0]?.inserted !== true) throw new Error('bench: raw claim lost');
          const done = await client.query({
            name: 'bench-complete',
            text: completeSql,
            values: ['bench', key, token, 'SUCCEEDED', Buffer.from(RESULT), null, 'json'],
          });
          if (done.rowCount !== 1) throw new Error('bench: raw completion refused');
        },
        close: () => client.end(),
      };
    }
    case 'mysql': {
      const mariadb = await import('mariadb');
      const url = new URL(db.url);
      const connection = await mariadb.createConnection({
        host: url.hostname,
        port: Number(url.port || 3306),
        user: decodeURIComponent(url.username || 'root'),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
      });
      const claimSql =
        'INSERT IGNORE INTO idempotency_records (scope, `key`, fingerprint, `procedure`, status, owner_token, ' +
        'locked_until, result, result_code, codec, created_at, expires_at) ' +
        "VALUES (?, ?, ?, ?, 'IN_PROGRESS', ?, ?, NULL, NULL, NULL, ?, ?)";
      const completeSql =
        'UPDATE idempotency_records SET status = ?, result = ?, result_code = ?, codec = ? ' +
        "WHERE scope = ? AND `key` = ? AND owner_token = ? AND status = 'IN_PROGRESS'";
      const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
      return {
        pair: async (key) => {
          const now = Date.now();
          const token = randomUUID();
          const claimed = await connection.query(claimSql, [
            'bench',
            key,
            'f'.repeat(64),
            'bench.pair',
            token,
            utc(now + LEASE),
            utc(now),
            utc(now + TTL),
          ]);
          if (Number(claimed.affectedRows) !== 1) throw new Error('bench: raw claim lost');
          const done = await connection.query(completeSql, [
            'SUCCEEDED',
            Buffer.from(RESULT),
            null,
            'json',
            'bench',
            key,
            token,
          ]);
          if (Number(done.affectedRows) !== 1) throw new Error('bench: raw completion refused');
        },
        close: () => connection.end(),
      };
    }
  }
}

const fmt = (us: number) => `${us.toFixed(0).padStart(6)} µs`;

console.log(
  `claim + complete pair, ${ITERATIONS} sequential iterations after ${WARMUP} warm-up (Node ${process.version})\n`,
);
console.log(
  'provider    | store median |    store p99 |   raw median |      raw p99 | store/raw | model API median |  model p99',
);
console.log(
  '------------|--------------|--------------|--------------|--------------|-----------|------------------|-----------',
);
for (const provider of TEST_PROVIDERS as readonly TestProvider[]) {
  if (!(await providerAvailable(provider))) {
    console.log(`${provider.padEnd(11)} | skipped: server unreachable`);
    continue;
  }
  const db = await createTestDatabase(provider);
  try {
    const raw = await rawPair(db);
    try {
      const store = await measure(storePair(db));
      const direct = await measure(raw.pair);
      const model = await measure(modelPair(db));
      console.log(
        `${provider.padEnd(11)} | ${fmt(store.median)}    | ${fmt(store.p99)}    | ${fmt(direct.median)}    | ` +
          `${fmt(direct.p99)}    | ${`${(store.median / direct.median).toFixed(2)}x`.padStart(9)} | ` +
          `${fmt(model.median)}        | ${fmt(model.p99)}`,
      );
    } finally {
      await raw.close();
    }
  } finally {
    await db.drop();
  }
}
