/**
 * Tools for the reliability suite: server processes (./fixtures/server.ts), clients for both transports with
 * a hard timeout on every call, the ledger table, and the record table as the database holds it.
 *
 * Every wait is bounded: a call that does not answer within its timeout fails the test as a hang instead of
 * stalling the run. Nothing here asserts on how long anything took.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import { createClient, type PaymentsClient } from '../grpc/payments.js';
import type { ChargeInput, FixtureConfig } from './fixtures/server.js';

const SERVER = fileURLToPath(new URL('./fixtures/server.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The longest any single call may take before it counts as a hang. */
export const CALL_TIMEOUT_MS = 15_000;

/** One JSON line a server printed. */
export type ServerLine =
  | { type: 'ready'; port: number; pid: number }
  | { type: 'entered'; holdId: string; key: string }
  | { type: 'event'; event: { type: string; key: string; operation?: string; error?: string } };

export interface ServerProcess {
  readonly transport: 'trpc' | 'grpc';
  readonly port: number;
  readonly pid: number;
  readonly lines: readonly ServerLine[];
  /** Resolves with the first line (already printed or still to come) that matches; rejects after `timeoutMs`. */
  waitFor(match: (line: ServerLine) => boolean, what: string, timeoutMs?: number): Promise<ServerLine>;
  /** Let a held handler go on. */
  release(holdId: string, outcome: 'succeed' | 'fail'): void;
  signal(signal: NodeJS.Signals): void;
  /** Resolves with the exit code or signal once the process is gone. */
  readonly exited: Promise<string>;
  /** Kill the process (SIGKILL) and wait for it. Idempotent. */
  stop(): Promise<void>;
  /** Everything it wrote to stderr, for failure messages. */
  stderr(): string;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Start `node --import tsx test/reliability/fixtures/server.ts <config>` and wait until it serves. */
export async function spawnServer(config: FixtureConfig): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER, JSON.stringify(config)], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  running.add(child);
  const lines: ServerLine[] = [];
  const waiters = new Set<{ match: (line: ServerLine) => boolean; resolve: (line: ServerLine) => void }>();
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  let buffered = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
      const text = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      if (!text.startsWith('{')) continue;
      const line = JSON.parse(text) as ServerLine;
      lines.push(line);
      for (const waiter of waiters) {
        if (waiter.match(line)) {
          waiters.delete(waiter);
          waiter.resolve(line);
        }
      }
    }
  });
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve(signal ?? String(code));
    });
  });
  const waitFor = (match: (line: ServerLine) => boolean, what: string, timeoutMs = CALL_TIMEOUT_MS) => {
    const seen = lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<ServerLine>((resolve, reject) => {
      const waiter = {
        match,
        resolve: (line: ServerLine) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(
            `server ${child.pid} (${config.transport}): no "${what}" within ${timeoutMs} ms. stderr:\n${stderr}`,
          ),
        );
      }, timeoutMs);
      waiters.add(waiter);
      void exited.then((how) => {
        if (!waiters.has(waiter)) return;
        waiters.delete(waiter);
        clearTimeout(timer);
        reject(
          new Error(`server ${child.pid} (${config.transport}) exited (${how}) before "${what}". stderr:\n${stderr}`),
        );
      });
    });
  };
  let ready: ServerLine;
  try {
    ready = await waitFor((line) => line.type === 'ready', 'ready', 60_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const { port, pid } = ready as { port: number; pid: number };
  return {
    transport: config.transport,
    port,
    pid,
    lines,
    waitFor,
    release: (holdId, outcome) => child.stdin?.write(`${JSON.stringify({ cmd: 'release', holdId, outcome })}\n`),
    signal: (signal) => child.kill(signal),
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    stderr: () => stderr,
  };
}

/** The ledger: the effect of `charge`, one row per run. No unique key, so a double effect shows as two rows. */
export async function createLedger(db: IdempotencyPrismaQueryable): Promise<void> {
  await db.$executeRawUnsafe(
    'CREATE TABLE ledger (id BIGSERIAL PRIMARY KEY, idem_key TEXT NOT NULL, amount BIGINT NOT NULL, server TEXT NOT NULL)',
  );
}

/** Ledger rows per key. */
export async function ledgerCounts(db: IdempotencyPrismaQueryable): Promise<Map<string, number>> {
  const rows = await db.$queryRawUnsafe<{ idem_key: string; n: bigint | number }[]>(
    'SELECT idem_key, COUNT(*) AS n FROM ledger GROUP BY idem_key',
  );
  return new Map(rows.map((row) => [row.idem_key, Number(row.n)]));
}

export interface StoredRecord {
  key: string;
  status: string;
  owner_token: string;
  result: Uint8Array | null;
  result_code: string | null;
}

/** Every idempotency record of the namespace, as the database holds it. */
export async function records(db: IdempotencyPrismaQueryable): Promise<StoredRecord[]> {
  return db.$queryRawUnsafe<StoredRecord[]>(
    'SELECT "key", status, owner_token, result, result_code FROM idempotency_records ORDER BY "key"',
  );
}

// ───────────── tRPC over HTTP (no transformer: plain JSON in and out) ─────────────

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  /** The parsed JSON body (tRPC: `{ result: { data } }` or `{ error }`). */
  readonly body: {
    result?: { data: unknown };
    error?: { data?: { code?: string; httpStatus?: number; idempotency?: { code?: string; retryAfterMs?: number } } };
  };
}

export async function trpcCharge(port: number, key: string, input: ChargeInput): Promise<HttpAnswer> {
  const response = await fetch(`http://127.0.0.1:${port}/charge`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(input),
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as HttpAnswer['body'] };
}

// ───────────── gRPC ─────────────

export interface GrpcAnswer {
  readonly code: grpc.status;
  readonly details: string;
  readonly value: Record<string, unknown> | undefined;
  readonly trailers: grpc.Metadata;
  readonly headers: grpc.Metadata | undefined;
}

export function grpcClient(port: number): PaymentsClient {
  return createClient(`127.0.0.1:${port}`);
}

export function grpcCharge(
  client: PaymentsClient,
  key: string | undefined,
  input: ChargeInput,
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<GrpcAnswer> {
  if (key !== undefined) metadata.set('idempotency-key', key);
  const options: Record<string, string> = {};
  if (input.holdId !== undefined) options.holdId = input.holdId;
  if (input.effect === false) options.effect = 'false';
  if (input.delayMs !== undefined) options.delayMs = String(input.delayMs);
  if (input.resultBytes !== undefined) options.resultBytes = String(input.resultBytes);
  return new Promise((resolve) => {
    let value: Record<string, unknown> | undefined;
    let headers: grpc.Metadata | undefined;
    const call = client.createPayment(
      { amount: String(input.amount), currency: 'EUR', metadata: options },
      metadata,
      { deadline: Date.now() + CALL_TIMEOUT_MS },
      (_error, response) => {
        value = response;
      },
    );
    call.on('metadata', (received: grpc.Metadata) => {
      headers = received;
    });
    call.on('status', (status: grpc.StatusObject) =>
      resolve({ code: status.code, details: status.details, value, trailers: status.metadata, headers }),
    );
  });
}

/** A gRPC answer without the parts that legitimately differ between a first response and its replays. */
export function grpcPayload(answer: GrpcAnswer): unknown {
  return { code: answer.code, value: answer.value };
}

// ───────────── retries ─────────────

/**
 * Call until the answer is not "still running elsewhere" (409 / ABORTED), waiting the server's hint between
 * attempts, at most `attempts` times. Returns every answer, the last one final.
 */
export async function untilSettled<A>(
  call: () => Promise<A>,
  retryAfterMs: (answer: A) => number | undefined,
  attempts = 60,
): Promise<A[]> {
  const answers: A[] = [];
  for (let attempt = 1; ; attempt++) {
    const answer = await call();
    answers.push(answer);
    const wait = retryAfterMs(answer);
    if (wait === undefined || attempt >= attempts) return answers;
    await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(wait, 10), 1_000)));
  }
}

/** tRPC: a 409 IN_PROGRESS answer's Retry-After, in ms. */
export const trpcRetryAfter = (answer: HttpAnswer): number | undefined =>
  answer.status === 409
    ? (answer.body.error?.data?.idempotency?.retryAfterMs ?? Number(answer.headers.get('retry-after') ?? '1') * 1000)
    : undefined;

/** gRPC: an ABORTED IN_PROGRESS answer's pushback, in ms. */
export const grpcRetryAfter = (answer: GrpcAnswer): number | undefined =>
  answer.code === grpc.status.ABORTED ? Number(answer.trailers.get('grpc-retry-pushback-ms')[0] ?? '100') : undefined;

/** A seeded PRNG (mulberry32): the fuzz run is the same every time for a given seed. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
