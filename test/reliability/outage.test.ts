// Database outage: the idempotency store's connections are killed while requests are in flight, and new ones
// are refused for a while; then the database comes back.
//
// The namespace is a dedicated database (not a schema of the shared `test` database), so refusing connections
// (`ALLOW_CONNECTIONS false`) and `pg_terminate_backend` hit only this test's servers. Within it, only the store's
// connections are terminated (by `application_name`): the ledger (the business data) stays up, as when an
// idempotency database fails on its own.
//
// Invariants: no key is charged twice; a call that found the store unreachable ran nothing and said so with a
// clear STORE_UNAVAILABLE (tRPC 503, gRPC UNAVAILABLE); every caller got either that or its real result; once
// connections are allowed again the same servers serve again without a restart, and retries run each refused
// key exactly once.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { applyIdempotencyMigrations } from '../../src/stores/prisma/index.js';
import type { PaymentsClient } from '../grpc/payments.js';
import {
  createTestClient,
  describeWithDatabase,
  type TestNamespace,
  type TestPrismaClient,
} from '../support/databases.js';
import {
  createLedger,
  type GrpcAnswer,
  grpcCharge,
  grpcClient,
  grpcRetryAfter,
  type HttpAnswer,
  ledgerCounts,
  records,
  type ServerProcess,
  spawnServer,
  trpcCharge,
  trpcRetryAfter,
  untilSettled,
} from './support.js';

const ADMIN_URL = process.env.RPC_IDEMPOTENCY_TEST_POSTGRES_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

async function admin<T>(sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return (await client.query(sql, values)).rows as T[];
  } finally {
    await client.end();
  }
}

/** What a caller saw: its result, or a store-unavailable refusal, or something else (a failure of the test). */
type Seen = { kind: 'ok'; payload: unknown } | { kind: 'store-unavailable' } | { kind: 'other'; detail: unknown };

function seenHttp(answer: HttpAnswer): Seen {
  if (answer.status === 200) return { kind: 'ok', payload: answer.body.result?.data };
  if (answer.status === 503 && answer.body.error?.data?.idempotency?.code === 'STORE_UNAVAILABLE') {
    return { kind: 'store-unavailable' };
  }
  return { kind: 'other', detail: { status: answer.status, body: answer.body } };
}

function seenGrpc(answer: GrpcAnswer): Seen {
  if (answer.code === grpc.status.OK) return { kind: 'ok', payload: answer.value };
  if (answer.code === grpc.status.UNAVAILABLE && answer.trailers.get('idempotency-error')[0] === 'STORE_UNAVAILABLE') {
    return { kind: 'store-unavailable' };
  }
  return { kind: 'other', detail: { code: answer.code, details: answer.details } };
}

describeWithDatabase('postgresql', 'database outage', () => {
  const run = randomUUID().replace(/-/g, '').slice(0, 12);
  const database = `rel_outage_${run}`;
  const storeApplicationName = `rel-outage-store-${run}`;
  let prisma: TestPrismaClient<'postgresql'>;
  let trpcServer: ServerProcess;
  let grpcServer: ServerProcess;
  let client: PaymentsClient;

  beforeAll(async () => {
    await admin(`CREATE DATABASE ${database}`);
    const url = new URL(ADMIN_URL);
    url.pathname = `/${database}`;
    const namespace: TestNamespace = { provider: 'postgresql', url: url.toString(), schema: 'public' };
    prisma = await createTestClient(namespace as TestNamespace & { provider: 'postgresql' });
    await applyIdempotencyMigrations(prisma);
    await createLedger(prisma);
    // A short lease: should a claim commit just as its connection dies (the caller then hears STORE_UNAVAILABLE),
    // the retry waits for that lease instead of the 30 s default.
    const common = {
      namespace,
      storeApplicationName,
      ledgerApplicationName: `rel-outage-ledger-${run}`,
      events: true,
      leaseMs: 3_000,
      renewIntervalMs: 1_000,
    };
    [trpcServer, grpcServer] = await Promise.all([
      spawnServer({ ...common, transport: 'trpc' }),
      spawnServer({ ...common, transport: 'grpc' }),
    ]);
    client = grpcClient(grpcServer.port);
  });

  afterAll(async () => {
    client?.close();
    await Promise.all([trpcServer?.stop(), grpcServer?.stop()]);
    await prisma?.$disconnect();
    await admin(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`).catch(() => undefined);
    await admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  });

  it('kills the store connections mid-flight: no double charge, clear STORE_UNAVAILABLE, recovery without restart', async () => {
    // Prepare: requests in flight on both transports. Four are held inside their handlers (claim done, result
    // not yet stored); twenty more work 200 ms, so their claims and completions straddle the kill.
    const held = ['trpc', 'trpc', 'grpc', 'grpc'].map((transport, index) => ({
      transport,
      key: `held-${index}-${randomUUID()}`,
      holdId: `outage-${index}`,
    }));
    const busy = Array.from({ length: 20 }, (_, index) => ({
      transport: index % 2 === 0 ? 'trpc' : 'grpc',
      key: `busy-${index}-${randomUUID()}`,
    }));
    const call = (transport: string, key: string, extra: { holdId?: string; delayMs?: number } = {}) =>
      transport === 'trpc'
        ? trpcCharge(trpcServer.port, key, { amount: 5, ...extra }).then(seenHttp)
        : grpcCharge(client, key, { amount: 5, ...extra }).then(seenGrpc);
    const heldCalls = held.map(({ transport, key, holdId }) => call(transport, key, { holdId }));
    await Promise.all(
      held.map(({ transport, holdId }) =>
        (transport === 'trpc' ? trpcServer : grpcServer).waitFor(
          (line) => line.type === 'entered' && line.holdId === holdId,
          `entered ${holdId}`,
        ),
      ),
    );
    const busyCalls = busy.map(({ transport, key }) => call(transport, key, { delayMs: 200 }));

    // Act 1: the outage. Refuse new connections to the database, then terminate the store's open ones.
    await admin(`ALTER DATABASE ${database} ALLOW_CONNECTIONS false`);
    // pg_terminate_backend in the select list, never in WHERE: there the planner may call it before the other
    // conditions have filtered the rows, and it would end every session on the server.
    const terminated = await admin<{ pid: number; terminated: boolean }>(
      'SELECT pid, pg_terminate_backend(pid) AS terminated FROM pg_stat_activity ' +
        'WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()',
      [database, storeApplicationName],
    );
    for (const { transport, holdId } of held)
      (transport === 'trpc' ? trpcServer : grpcServer).release(holdId, 'succeed');
    const heldSeen = await Promise.all(heldCalls);
    const busySeen = await Promise.all(busyCalls);
    // New calls during the outage: refused before anything runs.
    const during = Array.from({ length: 10 }, (_, index) => ({
      transport: index % 2 === 0 ? 'trpc' : 'grpc',
      key: `during-${index}-${randomUUID()}`,
    }));
    const duringSeen = await Promise.all(during.map(({ transport, key }) => call(transport, key)));
    const chargedDuring = await ledgerCounts(prisma);

    // Act 2: recovery. Allow connections again; retry what was refused, and send new calls.
    await admin(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`);
    const refused = [...busy, ...during].filter((_, index) => [...busySeen, ...duringSeen][index]?.kind !== 'ok');
    const retried = await Promise.all(
      refused.map(async ({ transport, key }) => {
        const answers =
          transport === 'trpc'
            ? (await untilSettled(() => trpcCharge(trpcServer.port, key, { amount: 5 }), trpcRetryAfter)).map(seenHttp)
            : (await untilSettled(() => grpcCharge(client, key, { amount: 5 }), grpcRetryAfter)).map(seenGrpc);
        return answers[answers.length - 1] as Seen;
      }),
    );
    const after = Array.from({ length: 6 }, (_, index) => ({
      transport: index % 2 === 0 ? 'trpc' : 'grpc',
      key: `after-${index}-${randomUUID()}`,
    }));
    const afterSeen = await Promise.all(after.map(({ transport, key }) => call(transport, key)));

    // Assess: the outage was real: store connections died and the servers noticed.
    expect(terminated.length).toBeGreaterThan(0);
    expect(terminated.every((row) => row.terminated)).toBe(true);
    const storeErrors = [trpcServer, grpcServer].flatMap((server) =>
      server.lines.filter((line) => line.type === 'event' && line.event.type === 'store-error'),
    );
    expect(storeErrors.length).toBeGreaterThan(0);
    // Held calls had run their handler: their callers got the real result although it could not be stored.
    expect(heldSeen.map((seen) => seen.kind)).toEqual(['ok', 'ok', 'ok', 'ok']);
    // In-flight calls: the real result or a clear STORE_UNAVAILABLE, nothing else (no hang, no 500).
    expect(busySeen.filter((seen) => seen.kind === 'other')).toEqual([]);
    // Calls during the outage: all refused, none charged.
    expect(duringSeen.map((seen) => seen.kind)).toEqual(Array(during.length).fill('store-unavailable'));
    for (const { key } of during) expect(chargedDuring.get(key), `charges of ${key} during the outage`).toBeUndefined();
    // A refused call charged nothing: only keys that answered ok had a ledger row before the recovery.
    [...busy].forEach(({ key }, index) => {
      expect(chargedDuring.get(key) ?? 0, `charges of ${key}`).toBe(busySeen[index]?.kind === 'ok' ? 1 : 0);
    });
    // Recovery: every retried and every new call succeeded, on the same server processes.
    expect(retried.map((seen) => seen.kind)).toEqual(Array(refused.length).fill('ok'));
    expect(afterSeen.map((seen) => seen.kind)).toEqual(Array(after.length).fill('ok'));
    expect(trpcServer.lines.filter((line) => line.type === 'ready')).toHaveLength(1);
    expect(grpcServer.lines.filter((line) => line.type === 'ready')).toHaveLength(1);
    // Exactly once across the whole story: every key charged once.
    const ledger = await ledgerCounts(prisma);
    for (const { key } of [...held, ...busy, ...during, ...after]) expect(ledger.get(key), `charges of ${key}`).toBe(1);
    // The documented window, as documented: a held call's completion failed, so its record still says
    // IN_PROGRESS (a retry after its lease would run again; the caller already has its result). It never
    // claims a result it does not hold.
    const stored = new Map((await records(prisma)).map((record) => [record.key, record.status]));
    for (const { key } of held) expect(stored.get(key), `record of ${key}`).toBe('IN_PROGRESS');
    console.info(
      `[reliability] outage: ${terminated.length} store connections terminated; in flight: ${
        busySeen.filter((seen) => seen.kind === 'ok').length
      } ok / ${busySeen.filter((seen) => seen.kind === 'store-unavailable').length} STORE_UNAVAILABLE; during: ${
        duringSeen.length
      } STORE_UNAVAILABLE; ${storeErrors.length} store-error events`,
    );
  });
});
