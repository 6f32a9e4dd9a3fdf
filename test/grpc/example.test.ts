// Runs examples/grpc-quickstart.ts as users would, so the example can never rot: it must exit 0 and say ok.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));

describe('examples/grpc-quickstart.ts', () => {
  it('runs to completion: one charge per logical payment, the retry replayed', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'examples/grpc-quickstart.ts'], {
      cwd: root,
      timeout: 30_000,
    });
    expect(stdout).toMatch(/^ok: 2 charges for 3 calls; the retried call was replayed \(pay_2\)\.$/m);
  });
});
