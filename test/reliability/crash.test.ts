// Crash mid-handler and stale owners, with real processes and signals.
//
//   SIGKILL: the owner of a claim dies inside its handler. Its lease stops being renewed; once it lapses, a
//            retry on another process takes the record over and runs the procedure once.
//   SIGSTOP: the owner is frozen (a GC pause, a stalled VM) past its lease; another process takes over and
//            finishes. When the frozen owner wakes up (SIGCONT) its writes are fenced by owner token: it can
//            neither complete nor release the new owner's record.
//
// Leases are short here (1.5 s, renewed every 0.5 s) so a lapse takes a moment; nothing waits on a clock:
// the retries simply follow the servers' IN_PROGRESS hints until the record can be taken over.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
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
  type ServerLine,
  type ServerProcess,
  spawnServer,
  trpcCharge,
  trpcRetryAfter,
  untilSettled,
} from './support.js';

const LEASE = { leaseMs: 1_500, renewIntervalMs: 500 } as const;

describeWithDatabase('postgresql', 'crash mid-handler and stale owners', () => {
  let db: TestDatabase<'postgresql'>;
  const started: ServerProcess[] = [];
  const clients: PaymentsClient[] = [];
  const run = randomUUID().slice(0, 8);

  const start = async (transport: 'trpc' | 'grpc') => {
    const server = await spawnServer({
      transport,
      namespace: db.namespace,
      storeApplicationName: `rel-crash-store-${run}-${started.length}`,
      ledgerApplicationName: `rel-crash-ledger-${run}-${started.length}`,
      events: true,
      ...LEASE,
    });
    started.push(server);
    return server;
  };
  const client = (server: ServerProcess) => {
    const created = grpcClient(server.port);
    clients.push(created);
    return created;
  };
  const recordOf = async (key: string) => (await records(db.prisma)).find((record) => record.key === key);
  const eventFor = (key: string, type: string, operation?: string) => (line: ServerLine) =>
    line.type === 'event' &&
    line.event.key === key &&
    line.event.type === type &&
    (operation === undefined || line.event.operation === operation);

  beforeAll(async () => {
    db = await createTestDatabase('postgresql');
    await createLedger(db.prisma);
  });

  afterEach(async () => {
    for (const created of clients.splice(0)) created.close();
    await Promise.all(started.splice(0).map((server) => server.stop()));
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('SIGKILL of the owner inside its handler: duplicates get IN_PROGRESS, a retry after the lease runs once', async () => {
    // Prepare: A claims the key and waits inside the handler, before its effect.
    const [a, b] = [await start('trpc'), await start('trpc')] as [ServerProcess, ServerProcess];
    const key = `crash-${randomUUID()}`;
    const input = { amount: 4_200 };
    const firstCall = trpcCharge(a.port, key, { ...input, holdId: 'h-kill' }).then(
      (answer) => ({ answer }),
      (error: unknown) => ({ error }),
    );
    await a.waitFor((line) => line.type === 'entered' && line.holdId === 'h-kill', 'entered h-kill');
    const claimed = await recordOf(key);

    // A duplicate on B while A is alive: refused at once, nothing runs.
    const duplicate = await trpcCharge(b.port, key, input);

    // Act: kill A inside its handler, then retry on B until the lease has lapsed.
    a.signal('SIGKILL');
    expect(await a.exited).toBe('SIGKILL');
    const retries = await untilSettled<HttpAnswer>(() => trpcCharge(b.port, key, input), trpcRetryAfter);
    const final = retries[retries.length - 1] as HttpAnswer;
    const replay = await trpcCharge(b.port, key, input);

    // Assess
    expect(claimed?.status).toBe('IN_PROGRESS');
    expect(duplicate.status).toBe(409);
    expect(duplicate.body.error?.data?.idempotency?.code).toBe('IN_PROGRESS');
    expect('error' in (await firstCall)).toBe(true); // A's caller lost its connection: it must retry
    expect(final.status).toBe(200);
    expect(final.headers.get('idempotent-replayed')).toBeNull(); // B ran it: a takeover, not a replay
    expect(b.lines.some(eventFor(key, 'taken-over'))).toBe(true);
    expect(replay.status).toBe(200);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.result?.data).toEqual(final.body.result?.data);
    expect((await ledgerCounts(db.prisma)).get(key)).toBe(1);
    const finished = await recordOf(key);
    expect(finished?.status).toBe('SUCCEEDED');
    expect(finished?.owner_token).not.toBe(claimed?.owner_token);
  });

  for (const outcome of ['succeed', 'fail'] as const) {
    const verb = outcome === 'succeed' ? 'complete' : 'release';
    it(`a stale owner frozen past its lease (SIGSTOP/SIGCONT) cannot ${verb} the new owner's record`, async () => {
      // Prepare: A claims and waits in its handler; then A is frozen and its lease lapses.
      const [a, b] = [await start('grpc'), await start('grpc')] as [ServerProcess, ServerProcess];
      const [clientA, clientB] = [client(a), client(b)];
      const key = `stale-${verb}-${randomUUID()}`;
      // The fingerprint covers `amount` only, so A's input (held, no effect) and B's are the same request.
      const staleCall = grpcCharge(clientA, key, { amount: 77, holdId: `h-${verb}`, effect: false });
      await a.waitFor((line) => line.type === 'entered' && line.holdId === `h-${verb}`, `entered h-${verb}`);
      const claimed = await recordOf(key);
      // While A is alive (and renewing), B is refused.
      const refused = await grpcCharge(clientB, key, { amount: 77 });
      a.signal('SIGSTOP');

      // Frozen, A renews no more: B is refused while A's last lease lasts, then takes the record over, charges
      // once and completes.
      const retries = await untilSettled<GrpcAnswer>(() => grpcCharge(clientB, key, { amount: 77 }), grpcRetryAfter);
      const taken = retries[retries.length - 1] as GrpcAnswer;
      const before = await recordOf(key);

      // Act: wake A up and let its handler finish (succeed: it completes; fail: a retryable error, it releases).
      a.signal('SIGCONT');
      a.release(`h-${verb}`, outcome);
      const stale = await staleCall;
      const fenced = await a.waitFor(
        (line) =>
          line.type === 'event' &&
          line.event.key === key &&
          (line.event.type === 'released' || (line.event.type === 'store-error' && line.event.operation === verb)),
        `the stale ${verb} of ${key}`,
      );
      const replayA = await grpcCharge(clientA, key, { amount: 77 });
      const replayB = await grpcCharge(clientB, key, { amount: 77 });

      // Assess: B's takeover
      expect(claimed?.status).toBe('IN_PROGRESS');
      expect(refused.code).toBe(grpc.status.ABORTED);
      expect(refused.trailers.get('idempotency-error')[0]).toBe('IN_PROGRESS');
      expect(retries.slice(0, -1).every((answer) => answer.code === grpc.status.ABORTED)).toBe(true);
      expect(taken.code).toBe(grpc.status.OK);
      expect(b.lines.some(eventFor(key, 'taken-over'))).toBe(true);
      expect(before?.status).toBe('SUCCEEDED');
      expect(before?.owner_token).not.toBe(claimed?.owner_token);
      // A's late write was refused by the fence, and A says so in its events.
      expect(fenced).toMatchObject({ type: 'event', event: { type: 'store-error', operation: verb } });
      expect((fenced as { event: { error?: string } }).event.error).toMatch(/fenced|taken over/);
      // The record is still exactly B's: same owner, same status, same stored response bytes.
      const after = await recordOf(key);
      expect(after?.status).toBe('SUCCEEDED');
      expect(after?.owner_token).toBe(before?.owner_token);
      expect(Buffer.from(after?.result ?? [])).toEqual(Buffer.from(before?.result ?? []));
      // Every later caller, on either process, gets B's response; the ledger has B's one charge.
      for (const replay of [replayA, replayB]) {
        expect(replay.code).toBe(grpc.status.OK);
        expect(replay.value).toEqual(taken.value);
        expect(replay.trailers.get('idempotent-replayed')[0] ?? replay.headers?.get('idempotent-replayed')[0]).toBe(
          'true',
        );
      }
      expect((await ledgerCounts(db.prisma)).get(key)).toBe(1);
      // A's own caller: a stale success still gets its own (effect-free) result; a stale failure its error.
      if (outcome === 'succeed') {
        expect(stale.code).toBe(grpc.status.OK);
        expect(stale.value?.id).toBe('none');
      } else {
        expect(stale.code).toBe(grpc.status.UNAVAILABLE);
      }
    });
  }
});
