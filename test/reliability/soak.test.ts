// Soak: tens of thousands of mixed calls against one service on PostgreSQL (first executions, replays,
// concurrent duplicates, fingerprint mismatches, retryable failures that release and retry, final failures
// that are stored), in process and over HTTP. Memory must stay bounded (heap measured after a full GC, which
// the reliability config enables with --expose-gc), and afterwards the ledger shows each effect once and no
// record is left IN_PROGRESS.
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { initTRPC, TRPCError } from '@trpc/server';
import { type CreateHTTPContextOptions, createHTTPServer } from '@trpc/server/adapters/standalone';
import { expect, it } from 'vitest';
import {
  computeFingerprint,
  createIdempotencyService,
  type IdempotencyErrorPolicy,
  isIdempotencyError,
  jsonCodec,
} from '../../src/index.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { idempotencyMiddleware } from '../../src/trpc/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { CALL_TIMEOUT_MS, createLedger, ledgerCounts, prng, records } from './support.js';

const SERVICE_CALLS = Number(process.env.RELIABILITY_SOAK_CALLS ?? 20_000);
const HTTP_CALLS = Number(process.env.RELIABILITY_SOAK_HTTP_CALLS ?? 2_000);
const CONCURRENCY = 16;
/** Generous: a leak of even 1 KB per call would exceed it; normal churn stays far below. */
const MAX_HEAP_GROWTH_BYTES = 24 * 1024 * 1024;

class Declined extends Error {}
const errors: IdempotencyErrorPolicy = {
  isFinal: (error) => error instanceof Declined,
  encode: (error) => ({ code: 'DECLINED', bytes: new TextEncoder().encode((error as Error).message) }),
  decode: (_code, bytes) => new Declined(new TextDecoder().decode(bytes)),
};

const gc = (globalThis as { gc?: () => void }).gc;
function memory() {
  gc?.();
  gc?.();
  const usage = process.memoryUsage();
  return { heapUsed: usage.heapUsed, rss: usage.rss };
}
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

describeWithDatabase('postgresql', 'soak', () => {
  it(`serves ${SERVICE_CALLS} mixed service calls and ${HTTP_CALLS} HTTP calls with bounded memory, each effect once, nothing left IN_PROGRESS`, async () => {
    // Prepare
    const db = await createTestDatabase('postgresql');
    const prisma = await db.createClient({ poolSize: 10 });
    await createLedger(db.prisma);
    const service = createIdempotencyService({ store: createPrismaStore(prisma), cache: { maxEntries: 1_000 } });
    const charge = async (key: string, amount: number) => {
      const rows = await prisma.$queryRawUnsafe<{ id: bigint }[]>(
        'INSERT INTO ledger (idem_key, amount, server) VALUES ($1, $2, $3) RETURNING id',
        key,
        amount,
        'soak',
      );
      return { ledgerId: String(rows[0]?.id), amount };
    };
    const createContext = ({ req, res }: CreateHTTPContextOptions) => ({ req, res });
    const t = initTRPC.context<Awaited<ReturnType<typeof createContext>>>().create();
    const router = t.router({
      charge: t.procedure
        .use(idempotencyMiddleware({ service, required: true }))
        .input((raw) => raw as { amount: number; decline?: boolean })
        .mutation(async ({ input, ctx }) => {
          if (input.decline) throw new TRPCError({ code: 'BAD_REQUEST', message: 'declined' });
          return charge(String(ctx.req.headers['idempotency-key']), input.amount);
        }),
    });
    const server = createHTTPServer({ router, createContext });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/charge`;

    const random = prng(7);
    const finished: { key: string; amount: number; value: unknown }[] = [];
    const succeeded = new Set<string>();
    const declined = new Set<string>();
    const violations: string[] = [];
    let calls = 0;
    const call = (key: string, amount: number, run: () => Promise<unknown>) => {
      calls++;
      return service.execute({
        procedure: 'soak.charge',
        key,
        fingerprint: computeFingerprint('soak.charge', { amount }),
        codec: jsonCodec,
        errors,
        run,
      });
    };
    /** One mixed operation: one or two calls, each checked as it completes. */
    const operation = async () => {
      const roll = random();
      const amount = 1 + Math.floor(random() * 1_000);
      if (roll < 0.35 || finished.length < 10) {
        const key = randomUUID();
        const outcome = await call(key, amount, () => charge(key, amount));
        if (outcome.source !== 'executed' || !outcome.ok) violations.push(`first ${key}: ${outcome.source}`);
        else {
          finished.push({ key, amount, value: outcome.value });
          succeeded.add(key);
        }
      } else if (roll < 0.65) {
        const earlier = finished[Math.floor(random() * finished.length)] as (typeof finished)[number];
        const outcome = await call(earlier.key, earlier.amount, async () => {
          throw new Error('a replay must not run');
        });
        if (outcome.source !== 'replayed' || !outcome.ok) violations.push(`replay ${earlier.key}: ${outcome.source}`);
        else expect(outcome.value).toEqual(earlier.value);
      } else if (roll < 0.75) {
        // Two concurrent calls with one new key: one runs, the other is refused as in progress or replays.
        const key = randomUUID();
        const both = await Promise.allSettled([
          call(key, amount, () => charge(key, amount)),
          call(key, amount, () => charge(key, amount)),
        ]);
        const executed = both.filter((r) => r.status === 'fulfilled' && r.value.source === 'executed').length;
        const others = both.filter(
          (r) =>
            (r.status === 'fulfilled' && r.value.source === 'replayed') ||
            (r.status === 'rejected' && isIdempotencyError(r.reason) && r.reason.code === 'IN_PROGRESS'),
        ).length;
        if (executed !== 1 || others !== 1) violations.push(`duplicate ${key}: ${executed} executed`);
        succeeded.add(key);
      } else if (roll < 0.8) {
        const earlier = finished[Math.floor(random() * finished.length)] as (typeof finished)[number];
        const mismatch = await call(earlier.key, earlier.amount + 1, async () => {
          throw new Error('a mismatch must not run');
        }).then(
          () => 'ran',
          (error: unknown) => (isIdempotencyError(error) ? error.code : String(error)),
        );
        if (mismatch !== 'FINGERPRINT_MISMATCH') violations.push(`mismatch ${earlier.key}: ${mismatch}`);
      } else if (roll < 0.92) {
        // A transient failure releases the key; the retry runs and charges once.
        const key = randomUUID();
        const failed = await call(key, amount, async () => {
          throw new Error('upstream timeout');
        });
        const retried = await call(key, amount, () => charge(key, amount));
        if (failed.ok || retried.source !== 'executed' || !retried.ok) violations.push(`retryable ${key}`);
        succeeded.add(key);
      } else {
        // A final failure is stored; its retry replays the same error and charges nothing.
        const key = randomUUID();
        const failed = await call(key, amount, async () => {
          throw new Declined(`declined ${key}`);
        });
        const again = await call(key, amount, async () => {
          throw new Error('a stored failure must not run');
        });
        if (failed.ok || again.source !== 'replayed' || again.ok || !(again.error instanceof Declined)) {
          violations.push(`final ${key}`);
        }
        declined.add(key);
      }
    };
    const runOperations = async (until: number) => {
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (calls < until) await operation();
        }),
      );
    };
    /** Keys charged over HTTP (the tRPC procedure `charge` is another procedure than `soak.charge`). */
    const httpFinished: { key: string; amount: number }[] = [];
    const http = async (index: number) => {
      const earlier = httpFinished[index % Math.max(1, httpFinished.length)];
      const replay = index % 3 === 2 && earlier !== undefined;
      const key = replay ? earlier.key : randomUUID();
      const amount = replay ? earlier.amount : 1 + (index % 500);
      const decline = !replay && index % 7 === 0;
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ amount, ...(decline ? { decline: true } : {}) }),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
      await response.arrayBuffer();
      const expected = decline ? 400 : 200;
      if (response.status !== expected) violations.push(`http ${key}: ${response.status}`);
      if (replay !== (response.headers.get('idempotent-replayed') === 'true')) violations.push(`http replay ${key}`);
      if (!replay && !decline && response.status === 200) {
        succeeded.add(key);
        httpFinished.push({ key, amount });
      }
      if (decline) declined.add(key);
    };

    try {
      // Warm up (JIT, pools, prepared plans), then measure from a collected heap.
      await runOperations(1_000);
      const start = memory();

      // Act
      await runOperations(SERVICE_CALLS);
      for (let batch = 0; batch < HTTP_CALLS; batch += CONCURRENCY) {
        await Promise.all(
          Array.from({ length: Math.min(CONCURRENCY, HTTP_CALLS - batch) }, (_, offset) => http(batch + offset)),
        );
      }
      const end = memory();

      // Assess
      expect(violations).toEqual([]);
      const ledger = await ledgerCounts(db.prisma);
      const charged = [...ledger.entries()];
      expect(charged.filter(([, count]) => count !== 1)).toEqual([]);
      expect(charged.length).toBe(succeeded.size);
      for (const key of declined) expect(ledger.has(key), `declined ${key} charged`).toBe(false);
      const stored = await records(db.prisma);
      expect(stored.filter((record) => record.status === 'IN_PROGRESS').map((record) => record.key)).toEqual([]);
      console.info(
        `[reliability] soak: ${calls} service calls + ${HTTP_CALLS} HTTP calls, ${stored.length} records, ${ledger.size} charges; ` +
          `heap ${mb(start.heapUsed)} -> ${mb(end.heapUsed)}, RSS ${mb(start.rss)} -> ${mb(end.rss)}` +
          (gc ? ' (after full GC)' : ' (no --expose-gc: heap not collected first)'),
      );
      if (gc) expect(end.heapUsed - start.heapUsed).toBeLessThan(MAX_HEAP_GROWTH_BYTES);
      else
        console.warn(
          '[reliability] soak: run with --expose-gc (vitest.reliability.config.ts does) to assert heap growth',
        );
    } finally {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await db.drop();
    }
  });
});
