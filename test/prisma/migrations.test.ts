import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  applyIdempotencyMigrations,
  createPrismaStore,
  loadIdempotencyMigrations,
} from '../../src/stores/prisma/index.js';
import { splitSqlStatements } from '../../src/stores/prisma/migrate.js';
import { createTestDatabase, describeWithDatabase, TEST_PROVIDERS, type TestProvider } from '../support/databases.js';

const INIT = '20261203120000_init';
const PRISMA_DIR = fileURLToPath(new URL('../../prisma/', import.meta.url));

async function tableExists(db: Awaited<ReturnType<typeof createTestDatabase>>, table: string): Promise<boolean> {
  const sql: Record<TestProvider, string> = {
    sqlite: `SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '${table}'`,
    postgresql: `SELECT COUNT(*)::int AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '${table}'`,
    mysql: `SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '${table}'`,
  };
  const [row] = await db.prisma.$queryRawUnsafe<Array<{ n: unknown }>>(sql[db.provider]);
  return Number(row?.n) === 1;
}

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'applyIdempotencyMigrations', () => {
    it('applies the shipped migrations once; a second run applies nothing', async () => {
      const db = await createTestDatabase(provider, { migrate: false });
      try {
        expect(await tableExists(db, 'idempotency_records')).toBe(false);

        const first = await applyIdempotencyMigrations(db.prisma);
        const second = await applyIdempotencyMigrations(db.prisma);

        expect(first).toEqual({ applied: [INIT], alreadyApplied: [] });
        expect(second).toEqual({ applied: [], alreadyApplied: [INIT] });
        expect(await tableExists(db, 'idempotency_records')).toBe(true);
        const store = createPrismaStore(db.prisma);
        expect(await store.get('', 'nothing')).toBeNull();
      } finally {
        await db.drop();
      }
    });

    it('applies once when three clients migrate at the same time', async () => {
      const db = await createTestDatabase(provider, { migrate: false });
      try {
        const clients = [db.prisma, await db.createClient(), await db.createClient()];

        const results = await Promise.all(clients.map((client) => applyIdempotencyMigrations(client)));

        expect(results.filter((result) => result.applied.length === 1)).toHaveLength(1);
        expect(results.filter((result) => result.alreadyApplied.includes(INIT))).toHaveLength(2);
        const [row] = await db.prisma.$queryRawUnsafe<Array<{ n: unknown }>>(
          'SELECT COUNT(*) AS n FROM rpc_idempotency_migrations',
        );
        expect(Number(row?.n)).toBe(1);
      } finally {
        await db.drop();
      }
    });

    it('picks up a new migration later, and records each migration per table name', async () => {
      const db = await createTestDatabase(provider, { migrate: false });
      const root = await mkdtemp(join(tmpdir(), 'rpc-idempotency-migrations-'));
      try {
        await applyIdempotencyMigrations(db.prisma);
        await cp(join(PRISMA_DIR, provider, 'migrations'), join(root, provider, 'migrations'), { recursive: true });
        const next = join(root, provider, 'migrations', '20261204000000_add_probe');
        await mkdir(next);
        const q = provider === 'mysql' ? '`' : '"';
        await writeFile(
          join(next, 'migration.sql'),
          `-- CreateTable\nCREATE TABLE ${q}idempotency_records_probe${q} (${q}id${q} INTEGER NOT NULL);\n`,
        );

        const result = await applyIdempotencyMigrations(db.prisma, { migrationsRoot: root });
        const other = await applyIdempotencyMigrations(db.prisma, { migrationsRoot: root, tableName: 'other_records' });

        expect(result).toEqual({ applied: ['20261204000000_add_probe'], alreadyApplied: [INIT] });
        expect(await tableExists(db, 'idempotency_records_probe')).toBe(true);
        // The table name is substituted in every quoted identifier that starts with it.
        expect(other.applied).toEqual([INIT, '20261204000000_add_probe']);
        expect(await tableExists(db, 'other_records')).toBe(true);
        expect(await tableExists(db, 'other_records_probe')).toBe(true);
      } finally {
        await rm(root, { recursive: true, force: true });
        await db.drop();
      }
    });

    it.runIf(provider !== 'mysql')('rolls a failed migration back entirely (transactional DDL)', async () => {
      const db = await createTestDatabase(provider, { migrate: false });
      const root = await mkdtemp(join(tmpdir(), 'rpc-idempotency-migrations-'));
      try {
        await cp(join(PRISMA_DIR, provider, 'migrations'), join(root, provider, 'migrations'), { recursive: true });
        const broken = join(root, provider, 'migrations', '20261204000000_broken');
        await mkdir(broken);
        await writeFile(
          join(broken, 'migration.sql'),
          'CREATE TABLE "probe" ("id" INTEGER);\nSELECT * FROM "no_such_table";\n',
        );

        await expect(applyIdempotencyMigrations(db.prisma, { migrationsRoot: root })).rejects.toThrow(
          /migration 20261204000000_broken failed on .* at:\nSELECT \* FROM "no_such_table"/,
        );

        expect(await tableExists(db, 'idempotency_records')).toBe(false);
        expect(await tableExists(db, 'probe')).toBe(false);
        expect(await applyIdempotencyMigrations(db.prisma)).toEqual({ applied: [INIT], alreadyApplied: [] });
      } finally {
        await rm(root, { recursive: true, force: true });
        await db.drop();
      }
    });
  });
}

describe('shipped migration files', () => {
  it.each(TEST_PROVIDERS)('%s: Prisma layout with a lock file naming the provider', async (provider) => {
    const { readFile } = await import('node:fs/promises');
    const lock = await readFile(join(PRISMA_DIR, provider, 'migrations', 'migration_lock.toml'), 'utf8');
    expect(lock).toContain(`provider = "${provider}"`);
    const migrations = await loadIdempotencyMigrations(provider);
    expect(migrations.map((migration) => migration.name)).toEqual([INIT]);
    expect(migrations[0]?.statements).toHaveLength(2 - (provider === 'mysql' ? 1 : 0));
    expect(migrations[0]?.checksum).toMatch(/^[0-9a-f]{64}$/);
  });

  it('splits statements at line-ending semicolons and drops comment lines', () => {
    expect(
      splitSqlStatements(
        '-- CreateTable\r\nCREATE TABLE "a" (\n  "x" INT\n);\n\n-- CreateIndex\nCREATE INDEX i ON "a"("x");',
      ),
    ).toEqual(['CREATE TABLE "a" (\n  "x" INT\n)', 'CREATE INDEX i ON "a"("x")']);
  });

  it('explains a missing migrations folder', async () => {
    await expect(
      loadIdempotencyMigrations('sqlite', { migrationsRoot: join(tmpdir(), 'nowhere-rpc-idem') }),
    ).rejects.toThrow(
      /cannot read the migrations folder .*nowhere-rpc-idem\/sqlite\/migrations.*pass `migrationsRoot`/,
    );
  });

  it('refuses a client without $transaction, such as a transaction client', async () => {
    const tx = { _activeProvider: 'sqlite', $queryRawUnsafe: async () => [], $executeRawUnsafe: async () => 0 };
    await expect(applyIdempotencyMigrations(tx as never)).rejects.toThrow(
      /expected a whole PrismaClient \(with \$transaction\)/,
    );
  });
});
