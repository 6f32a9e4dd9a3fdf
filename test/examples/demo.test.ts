import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

// `npm run demo` is the first thing a newcomer runs: run it here exactly as they would, on a fresh SQLite file.
describe('npm run demo', () => {
  it('charges every order exactly once with idempotency, and double-charges without it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-demo-'));
    try {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', 'examples/demo/run.ts'], {
        cwd: root,
        timeout: 60_000,
        env: { ...process.env, DEMO_DB: join(dir, 'demo.db'), NO_COLOR: '1' },
      });
      expect(stdout).toContain('with rpc-idempotency: 7 charges for 7 orders, every order charged exactly once');
      expect(stdout).toMatch(/without: +\d+ charges, [1-9]\d* double charges/);
      for (const order of ['order-A', 'order-B', 'order-C', 'order-D', 'order-E', 'order-F', 'order-G']) {
        expect(stdout).toMatch(new RegExp(`${order} +[\\d.]+ EUR +1 charge `));
      }
      expect(stdout).toContain('replayed the stored payment (no charge)');
      expect(stdout).toContain('rejected: key reused with a different request');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
