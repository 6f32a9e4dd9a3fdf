/**
 * A process that dies in the middle of a transactional call, for the crash-injection tests: started as
 * `node --import tsx test/transactional/support/crash-worker.ts` by `spawnCrashWorker` in ./crash.ts.
 *
 * Protocol: read one JSON line `{ namespace, key, leaseMs, transaction }` on stdin; open its own PrismaClient
 * and service; claim `key` in transactional mode; in the procedure, write a ledger row through the transaction
 * client, print `{"written":true,"ledgerInsideTransaction":[...]}` and then wait forever, holding the
 * transaction open. The parent kills it with SIGKILL at that point: after the write, before the commit.
 */
import { createInterface } from 'node:readline';
import { createIdempotencyService, jsonCodec } from '../../../src/index.js';
import type { IdempotencyTransactionOptions } from '../../../src/stores/contract.js';
import { createPrismaStore, type IdempotencyPrismaQueryable } from '../../../src/stores/prisma/index.js';
import { createTestClient, type TestNamespace } from '../../support/databases.js';
import { readLedger, writeLedger } from './ledger.js';

export interface CrashJob {
  readonly namespace: TestNamespace;
  readonly key: string;
  readonly procedure: string;
  readonly fingerprint: string;
  readonly leaseMs: number;
  readonly transaction: IdempotencyTransactionOptions;
}

const lines = createInterface({ input: process.stdin });
const job = await new Promise<CrashJob>((resolve) => lines.once('line', (line) => resolve(JSON.parse(line))));
lines.close();

const prisma = await createTestClient(job.namespace, { poolSize: 2 });
const service = createIdempotencyService({ store: createPrismaStore(prisma), leaseMs: job.leaseMs });
// Keeps the process alive while the procedure waits; only SIGKILL ends it.
setInterval(() => undefined, 60_000);

await service.execute({
  procedure: job.procedure,
  key: job.key,
  fingerprint: job.fingerprint,
  codec: jsonCodec,
  transaction: job.transaction,
  run: async ({ transaction }) => {
    const tx = transaction as IdempotencyPrismaQueryable;
    await writeLedger(tx, job.namespace.provider, {
      idempotencyKey: job.key,
      entry: 'charge 100 EUR',
      writtenBy: `child pid ${process.pid}`,
    });
    const inside = await readLedger(tx, job.namespace.provider, job.key);
    process.stdout.write(`${JSON.stringify({ written: true, ledgerInsideTransaction: inside })}\n`);
    return new Promise<never>(() => undefined);
  },
});
