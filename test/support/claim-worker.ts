/**
 * A separate OS process for multi-process claim races, started by `spawnClaimWorker` in ./databases.ts as
 * `node --import tsx test/support/claim-worker.ts`.
 *
 * Protocol on stdin/stdout: read one JSON line `{ namespace, claims }`; open a client and warm its pool; print
 * `ready`; wait for a `go` line; start every claim at once; print `{"results":[...]}` (in input order) and
 * exit 0. Records come back with `result` as an array of bytes (JSON has no Uint8Array).
 */
import { createInterface } from 'node:readline';
import type { IdempotencyClaimInput } from '../../src/stores/contract.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { createTestClient, type TestNamespace } from './databases.js';

const lines = createInterface({ input: process.stdin });
const received: string[] = [];
let wake: (() => void) | undefined;
lines.on('line', (line) => {
  received.push(line);
  wake?.();
});
async function nextLine(): Promise<string> {
  while (received.length === 0) await new Promise<void>((resolve) => (wake = resolve));
  return received.shift() as string;
}

const job = JSON.parse(await nextLine()) as { namespace: TestNamespace; claims: IdempotencyClaimInput[] };
const poolSize = 4;
const prisma = await createTestClient(job.namespace, { poolSize });
try {
  const store = createPrismaStore(prisma);
  // Open the pool's connections now, so that after `go` the claims race instead of queueing on connects.
  await Promise.all(Array.from({ length: poolSize }, () => prisma.$queryRawUnsafe('SELECT 1')));
  process.stdout.write('ready\n');
  while ((await nextLine()) !== 'go') {
    // ignore anything else
  }
  lines.close();
  const results = await Promise.all(job.claims.map((claim) => store.claim(claim)));
  const json = JSON.stringify({ results }, (_key, value) => (value instanceof Uint8Array ? [...value] : value));
  process.stdout.write(`${json}\n`);
} finally {
  await prisma.$disconnect();
}
