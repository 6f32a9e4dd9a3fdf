import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

// The README's tRPC example is a real program: run it as users would, so it never rots.
describe('examples/trpc-quickstart.ts', () => {
  it('runs to completion with every assertion holding', async () => {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'examples/trpc-quickstart.ts'], {
      cwd: root,
      timeout: 30_000,
    });

    expect(stderr).toBe('');
    expect(stdout.trim()).toBe(
      'ok: 2 charges for 4 createPayment calls (one retried after a lost response, one replayed, one refused)',
    );
  });
});
