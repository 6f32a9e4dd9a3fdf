// Many server processes, one database: 2 tRPC and 2 gRPC server processes share one PostgreSQL namespace and
// charge into one ledger table. Hundreds of concurrent duplicates are spread over the processes of each key's
// transport; the ledger must show every key's effect exactly once and every caller must see the same answer.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PaymentsClient } from '../grpc/payments.js';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '../support/databases.js';
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

const KEYS = 50;
const DUPLICATES = 8;

describeWithDatabase('postgresql', 'many processes, one database', () => {
  let db: TestDatabase<'postgresql'>;
  const servers: ServerProcess[] = [];
  const clients: PaymentsClient[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('postgresql');
    await createLedger(db.prisma);
    const run = randomUUID().slice(0, 8);
    const started = await Promise.all(
      (['trpc', 'trpc', 'grpc', 'grpc'] as const).map((transport, index) =>
        spawnServer({
          transport,
          namespace: db.namespace,
          storeApplicationName: `rel-mp-store-${run}-${index}`,
          ledgerApplicationName: `rel-mp-ledger-${run}-${index}`,
        }),
      ),
    );
    servers.push(...started);
    for (const server of servers.filter((s) => s.transport === 'grpc')) clients.push(grpcClient(server.port));
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await Promise.all(servers.map((server) => server.stop()));
    await db?.drop();
  });

  it(`runs each of ${KEYS} keys exactly once under ${DUPLICATES} concurrent duplicates across 4 processes, and answers every duplicate alike`, async () => {
    // Prepare: half the keys go to tRPC, half to gRPC; a key's duplicates alternate between its transport's two
    // processes. The handler works 30 ms before charging, so duplicates arrive while the first one runs.
    const trpcServers = servers.filter((server) => server.transport === 'trpc');
    const keys = Array.from({ length: KEYS }, (_, index) => ({
      key: `mp-${index}-${randomUUID()}`,
      // Which process gets a key's first duplicate alternates too, so both processes run first executions.
      offset: Math.floor(index / 2),
      transport: index % 2 === 0 ? ('trpc' as const) : ('grpc' as const),
      amount: 100 + index,
    }));
    interface Final {
      key: string;
      transport: 'trpc' | 'grpc';
      ok: boolean;
      replayed: boolean;
      payload: unknown;
      attempts: number;
      conflicts: number;
    }

    // Act: all duplicates at once; a duplicate told IN_PROGRESS retries after the server's hint.
    const finals = await Promise.all(
      keys.flatMap(({ key, transport, amount, offset }) =>
        Array.from({ length: DUPLICATES }, async (_, duplicate): Promise<Final> => {
          const input = { amount, delayMs: 30 };
          if (transport === 'trpc') {
            const port = (trpcServers[(duplicate + offset) % 2] as ServerProcess).port;
            const answers = await untilSettled<HttpAnswer>(() => trpcCharge(port, key, input), trpcRetryAfter);
            const last = answers[answers.length - 1] as HttpAnswer;
            return {
              key,
              transport,
              ok: last.status === 200,
              replayed: last.headers.get('idempotent-replayed') === 'true',
              payload: last.body.result?.data ?? last.body,
              attempts: answers.length,
              conflicts: answers.filter((answer) => answer.status === 409).length,
            };
          }
          const client = clients[(duplicate + offset) % 2] as PaymentsClient;
          const answers = await untilSettled<GrpcAnswer>(() => grpcCharge(client, key, input), grpcRetryAfter);
          const last = answers[answers.length - 1] as GrpcAnswer;
          return {
            key,
            transport,
            ok: last.code === grpc.status.OK,
            replayed:
              last.headers?.get('idempotent-replayed')[0] === 'true' ||
              last.trailers.get('idempotent-replayed')[0] === 'true',
            payload: last.value ?? { code: last.code, details: last.details },
            attempts: answers.length,
            conflicts: answers.filter((answer) => answer.code === grpc.status.ABORTED).length,
          };
        }),
      ),
    );

    // Assess: the ledger first. Every key charged exactly once, nothing else charged.
    const ledger = await ledgerCounts(db.prisma);
    expect(ledger.size).toBe(KEYS);
    for (const { key } of keys) expect(ledger.get(key), `ledger rows of ${key}`).toBe(1);

    // Every caller got a success, and all callers of one key got the same response, naming that ledger row.
    expect(finals.filter((final) => !final.ok)).toEqual([]);
    for (const { key, transport } of keys) {
      const answers = finals.filter((final) => final.key === key);
      expect(answers).toHaveLength(DUPLICATES);
      for (const answer of answers) expect(answer.payload, `response to ${key}`).toEqual(answers[0]?.payload);
      // Exactly one caller saw the first execution; the other seven were replays.
      expect(
        answers.filter((answer) => !answer.replayed),
        `first executions of ${key}`,
      ).toHaveLength(1);
      const payload = answers[0]?.payload as { ledgerId?: string; id?: string };
      const ledgerId = transport === 'trpc' ? payload.ledgerId : payload.id?.replace(/^led_/, '');
      const row = await db.prisma.$queryRawUnsafe<{ idem_key: string }[]>(
        'SELECT idem_key FROM ledger WHERE id = $1::bigint',
        String(ledgerId),
      );
      expect(row.map((r) => r.idem_key)).toEqual([key]);
    }

    // The records: one finished record per key, nothing left IN_PROGRESS.
    const stored = await records(db.prisma);
    expect(stored).toHaveLength(KEYS);
    expect(stored.filter((record) => record.status !== 'SUCCEEDED')).toEqual([]);

    // For the report: how the work spread over the processes.
    const conflicts = finals.reduce((sum, final) => sum + final.conflicts, 0);
    const chargedBy = await db.prisma.$queryRawUnsafe<{ server: string; n: bigint }[]>(
      'SELECT server, COUNT(*) AS n FROM ledger GROUP BY server ORDER BY server',
    );
    console.info(
      `[reliability] ${finals.length} calls over 4 processes: ${conflicts} IN_PROGRESS answers retried; charges per process: ${chargedBy
        .map((row) => `${row.server}=${row.n}`)
        .join(', ')}`,
    );
  });
});
