import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PurgeUsageError, parsePurgeArguments } from '../../src/cli/purge.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestDatabase, describeWithDatabase, TEST_PROVIDERS, type TestDatabase } from '../support/databases.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const HOUR = 3_600_000;

describe('parsePurgeArguments', () => {
  it('reads the URL, picks the provider from it, and applies defaults', () => {
    expect(parsePurgeArguments(['--url', 'postgresql://u@h/db'])).toMatchObject({
      provider: 'postgresql',
      batchSize: 1_000,
      quiet: false,
    });
    expect(parsePurgeArguments(['--url=mariadb://root@h/db', '--batch-size=50']).provider).toBe('mysql');
    expect(parsePurgeArguments(['--url', 'mysql://root@h/db']).provider).toBe('mysql');
    expect(parsePurgeArguments(['--url=postgresql://u:p=1@h/db?sslmode=require']).url).toBe(
      'postgresql://u:p=1@h/db?sslmode=require',
    );
    expect(parsePurgeArguments(['--url', 'file:./x.db', '--quiet', '--max-batches', '3'])).toMatchObject({
      provider: 'sqlite',
      maxBatches: 3,
      quiet: true,
    });
  });

  it.each([
    [[], /expected --url/],
    [['--url', 'redis://h'], /expected a postgresql:\/\/, mysql:\/\/, mariadb:\/\/ or file: URL/],
    [['--url', 'file:x.db', '--batch-size', '0'], /--batch-size to be a positive integer, received "0"/],
    [['--url', 'file:x.db', '--frobnicate'], /unknown argument "--frobnicate"/],
    [['--url'], /--url needs a value/],
  ])('refuses %j with a message that says what was expected', (argv, message) => {
    const saved = process.env.DATABASE_URL;
    delete process.env.DATABASE_URL;
    try {
      expect(() => parsePurgeArguments(argv)).toThrow(PurgeUsageError);
      expect(() => parsePurgeArguments(argv)).toThrow(message);
    } finally {
      if (saved !== undefined) process.env.DATABASE_URL = saved;
    }
  });

  it('hides credentials when it echoes a bad URL', () => {
    expect(() => parsePurgeArguments(['--url', 'redis://user:secret@h/0'])).toThrow(/redis:\/\/\*\*\*@h\/0/);
  });
});

for (const provider of TEST_PROVIDERS) {
  describeWithDatabase(provider, 'rpc-idempotency-purge', () => {
    let db: TestDatabase;

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      const store = createPrismaStore(db.prisma);
      const now = Date.now();
      // Prepare: 7 expired records (created two days ago with a one-day TTL) and 2 live ones.
      for (let i = 0; i < 9; i++) {
        const created = i < 7 ? now - 48 * HOUR : now;
        await store.claim({
          scope: 'tenant',
          key: `key-${i}`,
          fingerprint: 'f',
          procedure: 'p',
          ownerToken: randomUUID(),
          now: created,
          lockedUntil: created + 30_000,
          expiresAt: created + 24 * HOUR,
        });
      }
    });

    afterAll(async () => {
      await db?.drop();
    });

    it('deletes expired records in batches, reports progress, and keeps live ones', async () => {
      const url = provider === 'sqlite' ? `file:${db.url}` : db.url;
      const args = ['--import', 'tsx', 'src/cli/purge-bin.ts', '--url', url, '--batch-size', '3'];
      if (db.namespace.schema) args.push('--schema', db.namespace.schema);
      const { stdout } = await run(process.execPath, args, { cwd: root, timeout: 30_000 });
      expect(stdout).toContain('batch 1: 3 expired records deleted so far');
      expect(stdout).toContain('batch 3: 7 expired records deleted so far');
      expect(stdout).toMatch(/purged 7 expired idempotency records in \d+ ms/);
      const store = createPrismaStore(db.prisma);
      expect(await store.get('tenant', 'key-0')).toBeNull();
      expect(await store.get('tenant', 'key-6')).toBeNull();
      expect(await store.get('tenant', 'key-7')).not.toBeNull();
      expect(await store.get('tenant', 'key-8')).not.toBeNull();
    });
  });
}

describe('rpc-idempotency-purge failures', () => {
  it('exits 2 with usage on bad arguments and 1 when the database is unreachable', async () => {
    const bin = ['--import', 'tsx', 'src/cli/purge-bin.ts'];
    const env = { ...process.env, DATABASE_URL: '' };
    const usage = await run(process.execPath, [...bin, '--url', 'ftp://x'], { cwd: root, env }).catch((e) => e);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/usage: rpc-idempotency-purge/);
    const down = await run(process.execPath, [...bin, '--url', 'postgresql://postgres@127.0.0.1:1/test'], {
      cwd: root,
      env,
    }).catch((e) => e);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/rpc-idempotency-purge failed: .*ECONNREFUSED/);
  });
});
