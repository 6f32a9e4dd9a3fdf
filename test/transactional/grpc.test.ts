// Transactional mode through gRPC, end to end: a real grpc-js server with idempotencyInterceptor and real
// grpc-js clients, on PostgreSQL and SQLite. The CreatePayment handler writes a demo ledger through the
// transaction client it gets from idempotencyTransaction(call).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type IdempotencyGrpcMethodOptions,
  idempotencyInterceptor,
  idempotencyTransaction,
  replayableService,
} from '../../src/grpc/index.js';
import { createIdempotencyService, createMemoryStore, type IdempotencyService } from '../../src/index.js';
import { createPrismaStore, type IdempotencyPrismaQueryable } from '../../src/stores/prisma/index.js';
import { createManualClock } from '../../src/testing/index.js';
import { deferred } from '../core/helpers.js';
import { createPayment, first, keyed, listRefunds } from '../grpc/helpers.js';
import {
  createClient,
  PATHS,
  type PaymentsClient,
  PaymentsService,
  startServer,
  stopServer,
} from '../grpc/payments.js';
import {
  createTestDatabase,
  describeWithDatabase,
  type TestDatabase,
  type TestProvider,
} from '../support/databases.js';
import { createLedger, readLedger, writeLedger } from './support/ledger.js';

type Behaviour = 'fail-once' | 'decline' | 'slow-once' | 'hold';

/** A CreatePayment handler that charges the demo ledger through the call's transaction. */
function ledgerHandler(provider: TestProvider, attempts: Map<string, number>) {
  return (
    call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ): void => {
    const request = call.request;
    const order = String((request.metadata as Record<string, string>).order);
    const behaviour = request.description as Behaviour | undefined;
    const attempt = (attempts.get(order) ?? 0) + 1;
    attempts.set(order, attempt);
    const run = async () => {
      const tx = idempotencyTransaction<IdempotencyPrismaQueryable>(call);
      const key = call.metadata.get('idempotency-key')[0];
      await writeLedger(tx, provider, {
        idempotencyKey: typeof key === 'string' ? key : `no key: ${order}`,
        entry: `charge ${request.amount} ${request.currency}`,
        writtenBy: `attempt ${attempt}`,
      });
      if (behaviour === 'hold') await sleep(150);
      if (behaviour === 'fail-once' && attempt === 1) {
        throw Object.assign(new Error('payment provider timed out'), { code: grpc.status.UNAVAILABLE });
      }
      if (behaviour === 'decline')
        throw Object.assign(new Error('card declined'), { code: grpc.status.FAILED_PRECONDITION });
      if (behaviour === 'slow-once' && attempt === 1) await sleep(700);
      return { id: `pay_${order}_${attempt}`, amount: request.amount, currency: request.currency, attempt };
    };
    run().then(
      (payment) => callback(null, payment),
      (error: Error & { code?: number }) =>
        callback({
          code: error.code ?? grpc.status.INTERNAL,
          details: error.message,
          name: error.name,
          message: error.message,
        }),
    );
  };
}

interface Served {
  readonly client: PaymentsClient;
  close(): Promise<void>;
}

async function serve(
  service: IdempotencyService,
  methods: Record<string, IdempotencyGrpcMethodOptions>,
  handlers: grpc.UntypedServiceImplementation,
  onError?: (error: unknown) => void,
): Promise<Served> {
  const { server, address } = await startServer(
    { interceptors: [idempotencyInterceptor({ service, methods, ...(onError ? { onError } : {}) })] },
    replayableService(PaymentsService),
    handlers,
  );
  const client = createClient(address);
  return {
    client,
    async close() {
      client.close();
      await stopServer(server);
    },
  };
}

const payment = (order: string, description?: Behaviour) => ({
  amount: '100',
  currency: 'EUR',
  metadata: { order },
  ...(description === undefined ? {} : { description }),
});

for (const provider of ['postgresql', 'sqlite'] as const) {
  describeWithDatabase(provider, 'transactional mode through gRPC (real server, real client)', () => {
    let db: TestDatabase;
    let service: IdempotencyService;
    const attempts = new Map<string, number>();
    const servers: Served[] = [];
    let main: Served;
    let quick: Served;

    beforeAll(async () => {
      db = await createTestDatabase(provider);
      await createLedger(db.prisma, provider);
      service = createIdempotencyService({
        store: createPrismaStore(db.prisma),
        inFlight: { wait: true, timeoutMs: 20_000 },
      });
      const handlers = { createPayment: ledgerHandler(provider, attempts) };
      main = await serve(service, { [PATHS.createPayment]: { transaction: true } }, handlers);
      quick = await serve(service, { [PATHS.createPayment]: { transaction: { timeoutMs: 250 } } }, handlers);
      servers.push(main, quick);
    });
    afterAll(async () => {
      await Promise.all(servers.map((served) => served.close()));
      await db?.drop();
    });

    const ledger = (key: string) => readLedger(db.prisma, provider, key);

    it('commits the handler’s ledger row with the record; a retry replays it without writing again', async () => {
      const key = randomUUID();
      const order = randomUUID();

      const firstCall = await createPayment(main.client, payment(order), keyed(key));
      const retry = await createPayment(main.client, payment(order), keyed(key));

      expect(firstCall.error).toBeNull();
      expect(firstCall.value).toMatchObject({ id: `pay_${order}_1`, attempt: 1 });
      expect(retry.value).toEqual(firstCall.value);
      expect(first(retry.headers, 'idempotent-replayed')).toBe('true');
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 1']);
    });

    it('a retryable status rolls the handler’s writes back; the retry with the same key runs cleanly', async () => {
      const key = randomUUID();
      const order = randomUUID();

      const failed = await createPayment(main.client, payment(order, 'fail-once'), keyed(key));
      const afterFailure = await ledger(key);
      const retry = await createPayment(main.client, payment(order, 'fail-once'), keyed(key));

      expect(failed.status.code).toBe(grpc.status.UNAVAILABLE);
      expect(failed.status.details).toBe('payment provider timed out');
      expect(afterFailure).toEqual([]);
      expect(retry.value).toMatchObject({ attempt: 2 });
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 2']);
    });

    it('a final status rolls the writes back and is replayed, marked, without running again', async () => {
      const key = randomUUID();
      const order = randomUUID();

      const declined = await createPayment(main.client, payment(order, 'decline'), keyed(key));
      const replay = await createPayment(main.client, payment(order, 'decline'), keyed(key));

      expect(declined.status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(replay.status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(replay.status.details).toBe('card declined');
      expect(first(replay.status.metadata, 'idempotent-replayed')).toBe('true');
      expect(attempts.get(order)).toBe(1);
      expect(await ledger(key)).toEqual([]);
    });

    it('10 concurrent duplicates write one ledger row and all receive its response', async () => {
      const key = randomUUID();
      const order = randomUUID();

      const results = await Promise.all(
        Array.from({ length: 10 }, () => createPayment(main.client, payment(order, 'hold'), keyed(key))),
      );

      expect(results.map((result) => result.status.code)).toEqual(Array(10).fill(grpc.status.OK));
      expect(new Set(results.map((result) => JSON.stringify(result.value)))).toHaveProperty('size', 1);
      expect(attempts.get(order)).toBe(1);
      expect(await ledger(key)).toHaveLength(1);
    });

    it('a transaction that times out under a slow handler ends in ABORTED (TRANSACTION_FAILED), not OK; the retry runs', async () => {
      const key = randomUUID();
      const order = randomUUID();

      const timedOut = await createPayment(quick.client, payment(order, 'slow-once'), keyed(key));
      const afterTimeout = await ledger(key);
      const retry = await createPayment(quick.client, payment(order, 'slow-once'), keyed(key));

      expect(timedOut.status.code).toBe(grpc.status.ABORTED);
      expect(timedOut.value).toBeUndefined();
      expect(first(timedOut.status.metadata, 'idempotency-error')).toBe('TRANSACTION_FAILED');
      expect(timedOut.status.details).toMatch(
        new RegExp(
          `^The transaction of ${PATHS.createPayment} \\(idempotency key "${key}"\\) failed after the procedure returned, so everything it wrote through the transaction was rolled back and no result was stored \\(.+\\)\\. Retry the request with the same key\\. If the procedure needs more time, raise transaction\\.timeoutMs`,
        ),
      );
      expect(afterTimeout).toEqual([]);
      expect(retry.value).toMatchObject({ attempt: 2 });
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['attempt 2']);
    });

    it('a stale owner whose lease was taken over gets ABORTED (IN_PROGRESS), not its OK; its writes vanish', async () => {
      // Prepare: two servers, as two processes, on one clock we move; the second has its own client.
      const clock = createManualClock(Date.now());
      const other = await db.createClient();
      const started = deferred();
      const resume = deferred();
      let calls = 0;
      const handler = (
        call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => {
        const tx = idempotencyTransaction<IdempotencyPrismaQueryable>(call);
        const writtenBy = ++calls === 1 ? 'stale owner' : 'new owner';
        const write = () => writeLedger(tx, provider, { idempotencyKey: key, entry: 'charge', writtenBy });
        void (async () => {
          // SQLite has one writer at a time: there the stale owner writes after the new owner's commit.
          if (writtenBy === 'new owner' || provider !== 'sqlite') await write();
          if (writtenBy === 'stale owner') {
            started.resolve();
            await resume.promise;
            if (provider === 'sqlite') await write();
          }
          callback(null, { id: writtenBy });
        })();
      };
      const methods = { [PATHS.createPayment]: { transaction: true } };
      const stale = await serve(createIdempotencyService({ store: createPrismaStore(db.prisma), clock }), methods, {
        createPayment: handler,
      });
      const thief = await serve(createIdempotencyService({ store: createPrismaStore(other), clock }), methods, {
        createPayment: handler,
      });
      servers.push(stale, thief);
      const key = randomUUID();
      const request = payment(randomUUID());

      // Act
      const staleCall = createPayment(stale.client, request, keyed(key));
      await started.promise;
      await clock.advance(60_000);
      const taken = await createPayment(thief.client, request, keyed(key));
      resume.resolve();
      const staleResult = await staleCall;

      // Assess
      expect(taken.value).toMatchObject({ id: 'new owner' });
      expect(staleResult.status.code).toBe(grpc.status.ABORTED);
      expect(staleResult.value).toBeUndefined();
      expect(first(staleResult.status.metadata, 'idempotency-error')).toBe('IN_PROGRESS');
      expect(staleResult.status.details).toMatch(/lapsed and another caller took it over, so this run was rolled back/);
      expect((await ledger(key)).map((row) => row.writtenBy)).toEqual(['new owner']);
    });

    it('runs a call without a key in a transaction too: its writes roll back with its error', async () => {
      const ok = randomUUID();
      const declined = randomUUID();

      const okCall = await createPayment(main.client, payment(ok));
      const declinedCall = await createPayment(main.client, payment(declined, 'decline'));

      expect(okCall.status.code).toBe(grpc.status.OK);
      expect(declinedCall.status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(await ledger(`no key: ${ok}`)).toHaveLength(1);
      expect(await ledger(`no key: ${declined}`)).toEqual([]);
    });

    it('tells a handler of a method that is not transactional what to configure', async () => {
      const plain = await serve(
        service,
        {},
        {
          createPayment: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
            try {
              idempotencyTransaction(call);
              callback(null, {});
            } catch (error) {
              callback({ code: grpc.status.INTERNAL, details: (error as Error).message } as grpc.ServiceError);
            }
          },
        },
      );
      servers.push(plain);

      const result = await createPayment(plain.client, payment(randomUUID()), keyed(randomUUID()));

      expect(result.status.code).toBe(grpc.status.INTERNAL);
      expect(result.status.details).toBe(
        `idempotencyTransaction: ${PATHS.createPayment} has no idempotency transaction: expected the idempotency interceptor to run this call in transactional mode, but it did not open a transaction for it. Set methods['${PATHS.createPayment}'] = { transaction: true } in idempotencyInterceptor({ ... }), register the interceptor with new grpc.Server({ interceptors: [...] }), and pass the handler's own call. Interceptors after idempotencyInterceptor must not replace both the request metadata and the message.`,
      );
    });

    it('refuses a streaming method configured as transactional, before its handler runs', async () => {
      let runs = 0;
      const reported: unknown[] = [];
      const streaming = await serve(
        service,
        { [PATHS.listRefunds]: { transaction: true } },
        {
          listRefunds: (call: grpc.ServerWritableStream<unknown, unknown>) => {
            runs++;
            call.end();
          },
        },
        (error) => reported.push(error),
      );
      servers.push(streaming);

      const result = await listRefunds(streaming.client, { paymentId: 'pay_1', limit: 1 }, keyed(randomUUID()));

      expect(result.status.code).toBe(grpc.status.INTERNAL);
      expect(result.status.details).toMatch(
        /ListRefunds is configured with transaction, but it is a server-streaming method; transactional mode supports unary methods only/,
      );
      expect(runs).toBe(0);
      expect(reported).toEqual([expect.objectContaining({ message: result.status.details })]);
    });
  });
}

describe('transactional mode configuration (gRPC)', () => {
  const memory = createIdempotencyService({ store: createMemoryStore() });

  it('refuses a transactional method on a store that cannot do it, when the interceptor is created', () => {
    expect(() =>
      idempotencyInterceptor({ service: memory, methods: { [PATHS.createPayment]: { transaction: true } } }),
    ).toThrow(
      `idempotencyInterceptor: methods["${PATHS.createPayment}"]: transactional mode needs a store that can run transactions, but the service's store "memory" cannot.`,
    );
  });

  it('refuses transaction as a server-wide option, pointing to the per-method one', () => {
    expect(() => idempotencyInterceptor({ service: memory, transaction: true } as never)).toThrow(
      /transaction is a per-method option .* methods: \{ '\/payments\.v1\.Payments\/CreatePayment': \{ transaction: true \} \}/,
    );
  });

  it('refuses a malformed transaction option with what to write', () => {
    expect(() =>
      idempotencyInterceptor({
        service: memory,
        methods: { [PATHS.createPayment]: { transaction: { timeoutMs: 0 } } },
      }),
    ).toThrow(/expected transaction\.timeoutMs to be a positive integer of milliseconds, received number 0/);
  });
});
