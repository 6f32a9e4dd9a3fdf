// The transactional-mode examples quoted in the README, run as a user would: each asserts its own invariants
// and exits non-zero when one fails.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

async function runExample(file: string): Promise<string> {
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', file], { cwd: root, timeout: 45_000 });
  expect(stderr).toBe('');
  return stdout.trim();
}

describe('transactional-mode examples', () => {
  it('transactional-trpc.ts: one payment row per key; a declined payment leaves none', async () => {
    expect(await runExample('examples/transactional-trpc.ts')).toBe(
      'ok: 1 payment row for 2 calls of o-1; o-2 declined twice and left no row',
    );
  });

  it('transactional-grpc.ts: one payment row per key, the retry replayed', async () => {
    expect(await runExample('examples/transactional-grpc.ts')).toBe(
      'ok: 1 payment row for 2 calls with key order-7 (pay_1)',
    );
  });
});
