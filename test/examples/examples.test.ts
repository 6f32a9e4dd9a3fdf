import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { describeWithDatabase } from '../support/databases.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

/** Run an example as a user would; it asserts its own invariants and exits non-zero when one fails. */
async function runExample(file: string, env: Record<string, string> = {}): Promise<string> {
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', file], {
    cwd: root,
    timeout: 45_000,
    env: { ...process.env, ...env },
  });
  expect(stderr).toBe('');
  return stdout.trim();
}

describe('examples', () => {
  it('trpc-fetch-adapter.ts: batched mutations keep their own keys, a repeated key replays', async () => {
    expect(await runExample('examples/trpc-fetch-adapter.ts')).toBe(
      'ok: 3 runs for 4 mutations over the fetch adapter; 3 records in SQLite',
    );
  });

  it('shared-store.ts: one payment for the same key over gRPC and then tRPC', async () => {
    expect(await runExample('examples/shared-store.ts')).toBe(
      'ok: 1 payment for 2 calls (gRPC, then tRPC with the same key); 1 record',
    );
  });
});

describeWithDatabase('postgresql', 'examples/postgresql.ts', () => {
  it('charges once for eleven calls with one key on PostgreSQL', async () => {
    const url = process.env.RPC_IDEMPOTENCY_TEST_POSTGRES_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
    expect(await runExample('examples/postgresql.ts', { DATABASE_URL: url })).toBe(
      'ok: 11 calls, 1 charge, migrations applied: 1, purged 0',
    );
  });
});
