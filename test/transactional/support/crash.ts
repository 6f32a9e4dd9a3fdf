// Starts ./crash-worker.ts as a separate OS process and kills it once it reports its write.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CrashJob } from './crash-worker.js';
import type { LedgerRow } from './ledger.js';

const WORKER = fileURLToPath(new URL('./crash-worker.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** A running crash worker. */
export interface CrashWorker {
  /** Resolves with the ledger as the child saw it inside its open transaction, once it wrote its row. */
  readonly written: Promise<LedgerRow[]>;
  /** SIGKILL the child; resolves with the signal it died of once it is gone. */
  kill(): Promise<NodeJS.Signals | null>;
}

/**
 * Start `node --import tsx test/transactional/support/crash-worker.ts` on `job`.
 *
 * @example
 * ```ts
 * const worker = spawnCrashWorker(job);
 * await worker.written;
 * expect(await worker.kill()).toBe('SIGKILL');
 * ```
 */
export function spawnCrashWorker(job: CrashJob): CrashWorker {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.write(`${JSON.stringify(job)}\n`);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  const written = new Promise<LedgerRow[]>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      resolve((JSON.parse(line) as { ledgerInsideTransaction: LedgerRow[] }).ledgerInsideTransaction);
    });
    void exited.then((signal) =>
      reject(new Error(`crash worker exited (signal ${signal}) before it wrote its row. Its stderr:\n${stderr}`)),
    );
  });
  written.catch(() => undefined);
  return {
    written,
    kill: () => {
      child.kill('SIGKILL');
      return exited;
    },
  };
}
