import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

// `npm start` and the commands it prints: the same service, called by hand as the README says.
describe('npm start (examples/demo/serve.ts) and examples/demo/call-grpc.ts', () => {
  it('serves both transports, replays a repeated key, and prints the ledger on Ctrl-C', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rpc-idempotency-serve-'));
    const server = spawn(process.execPath, ['--import', 'tsx', 'examples/demo/serve.ts'], {
      cwd: root,
      env: { ...process.env, DEMO_DB: join(dir, 'demo.db'), PORT: '0', GRPC_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    const lines = createInterface({ input: server.stdout });
    lines.on('line', (line) => output.push(line));
    try {
      const up = await new Promise<RegExpMatchArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`serve.ts did not start:\n${output.join('\n')}`)), 30_000);
        lines.on('line', (line) => {
          const match = line.match(/payments service up: tRPC (\S+), gRPC (\S+) /);
          if (match) {
            clearTimeout(timer);
            resolve(match);
          }
        });
      });
      const [, trpcUrl, grpcAddress] = up as unknown as [string, string, string];

      // The curl line, as fetch: the same key twice, the second answer marked as a replay.
      const post = () =>
        fetch(`${trpcUrl}/createPayment`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'Idempotency-Key': 'order-1001' },
          body: JSON.stringify({ json: { orderId: 'order-1001', amountCents: 1250, currency: 'EUR' } }),
        });
      const first = await post();
      const second = await post();
      expect(first.status).toBe(200);
      expect(second.headers.get('idempotent-replayed')).toBe('true');
      expect(await second.json()).toEqual(await first.json());

      // The gRPC client line: one charge, one replay, then a different amount under the same key.
      const call = (amount: string) =>
        run(process.execPath, ['--import', 'tsx', 'examples/demo/call-grpc.ts', grpcAddress, 'order-2001', amount], {
          cwd: root,
          timeout: 30_000,
        });
      const charged = await call('4990');
      const replayed = await call('4990');
      expect(charged.stdout).toContain('idempotent-replayed: false');
      expect(replayed.stdout).toContain('idempotent-replayed: true');
      expect(replayed.stdout.split('\n').find((line) => line.startsWith('payment '))).toBe(
        charged.stdout.split('\n').find((line) => line.startsWith('payment ')),
      );
      const mismatch = await call('5000').catch((error: { code: number; stderr: string }) => error);
      expect(mismatch).toMatchObject({ code: 1 });
      expect((mismatch as { stderr: string }).stderr).toContain('idempotency-error: FINGERPRINT_MISMATCH');

      const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
      server.kill('SIGINT');
      expect(await exited).toBe(0);
      const ledger = output.slice(output.findIndex((line) => line.startsWith('ledger:')));
      expect(ledger[0]).toBe('ledger: 2 charges');
    } finally {
      server.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
