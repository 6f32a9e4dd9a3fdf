// One procedure, two transports, one key space: CreatePayment over gRPC and `createPayment` over tRPC share a
// store, a scope and a key space, so a key used on one transport replays (or mismatches) on the other.
//
// What makes the records compatible:
// - the same procedure identity: the gRPC method's `procedure` option is set to the tRPC path;
// - the same fingerprint input: the gRPC `fingerprint` option maps the request to the tRPC input's shape;
// - the same codec for results: the tRPC router has no transformer (core `jsonCodec`), and the gRPC method
//   stores `fromResponse(message)` with `jsonCodec` and replays `toResponse(value)`;
// - final errors in the shared form (code name + `{ message }` JSON) that both adapters read.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { createTRPCClient, httpLink, type TRPCClientError } from '@trpc/client';
import { initTRPC, TRPCError } from '@trpc/server';
import { createHTTPServer } from '@trpc/server/adapters/standalone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotencyInterceptor, replayableService } from '../../src/grpc/index.js';
import {
  createIdempotencyService,
  type IdempotencyService,
  type IdempotencyStore,
  jsonCodec,
} from '../../src/index.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { idempotencyHeaders, idempotencyLink } from '../../src/trpc/client.js';
import { idempotencyMiddleware } from '../../src/trpc/index.js';
import { createTestDatabase, describeWithDatabase } from '../support/databases.js';
import { createPayment, first, keyed } from './helpers.js';
import { createClient, PATHS, type PaymentsClient, PaymentsService, startServer, stopServer } from './payments.js';

interface PaymentInput {
  amount: number;
  currency: string;
}
interface Payment extends PaymentInput {
  id: string;
  status: 'SUCCEEDED';
}

class ValidationError extends Error {}

/** The business logic both transports expose. */
function createDomain() {
  const effects: Payment[] = [];
  return {
    effects,
    create(input: PaymentInput): Payment {
      if (input.amount <= 0) throw new ValidationError(`amount must be positive, received ${input.amount}`);
      const payment: Payment = {
        id: `pay_${effects.length + 1}`,
        amount: input.amount,
        currency: input.currency,
        status: 'SUCCEEDED',
      };
      effects.push(payment);
      return payment;
    },
  };
}

interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  tenant: string;
}

const t = initTRPC.context<Context>().create();

/** tRPC: the procedure at path `createPayment`, no transformer (results stored with core jsonCodec). */
function buildRouter(service: IdempotencyService, domain: ReturnType<typeof createDomain>) {
  return t.router({
    createPayment: t.procedure
      .use(idempotencyMiddleware<Context>({ service, scope: (ctx) => ctx.tenant }))
      .input((raw: unknown) => {
        const input = raw as PaymentInput;
        if (typeof input?.amount !== 'number' || typeof input.currency !== 'string') throw new Error('bad input');
        return input;
      })
      .mutation(({ input }) => {
        try {
          return domain.create(input);
        } catch (error) {
          if (error instanceof ValidationError) throw new TRPCError({ code: 'BAD_REQUEST', message: error.message });
          throw error;
        }
      }),
  });
}
type AppRouter = ReturnType<typeof buildRouter>;

/** A real tRPC client: explicit keys through idempotencyLink, and the replay header of every response. */
function createTrpcClient(url: string, replayedHeaders: string[]) {
  return createTRPCClient<AppRouter>({
    links: [
      idempotencyLink(),
      httpLink({
        url,
        headers: (opts) => ({ ...idempotencyHeaders(opts), 'x-tenant': 'acme' }),
        fetch: async (input, init) => {
          const response = await fetch(input as string | URL | Request, init as RequestInit);
          replayedHeaders.push(response.headers.get('idempotent-replayed') ?? 'false');
          return response;
        },
      }),
    ],
  });
}

function runSharedSuite(name: string, openStore: () => Promise<{ store: IdempotencyStore; close(): Promise<void> }>) {
  describe(`one key space for tRPC and gRPC [${name}]`, () => {
    const domain = createDomain();
    let closeStore: () => Promise<void>;
    let grpcServer: grpc.Server;
    let grpcClient: PaymentsClient;
    let closeTrpc: () => Promise<void>;
    let trpc: ReturnType<typeof createTrpcClient>;
    const replayedHeaders: string[] = [];

    beforeAll(async () => {
      const opened = await openStore();
      closeStore = opened.close;
      const service = createIdempotencyService({ store: opened.store });

      const router = buildRouter(service, domain);
      const http = createHTTPServer({
        router,
        createContext: ({ req, res }): Context => ({ req, res, tenant: String(req.headers['x-tenant'] ?? '') }),
      });
      await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()));
      const address = http.address() as { port: number };
      closeTrpc = () =>
        new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        });
      trpc = createTrpcClient(`http://127.0.0.1:${address.port}`, replayedHeaders);

      // gRPC: CreatePayment stores and replays the domain object, under the tRPC procedure's identity.
      const started = await startServer(
        {
          interceptors: [
            idempotencyInterceptor({
              service,
              scope: ({ metadata }) => String(metadata.get('x-tenant')[0] ?? ''),
              methods: {
                [PATHS.createPayment]: {
                  procedure: 'createPayment',
                  fingerprint: (request) => {
                    const message = request as { amount: string; currency: string };
                    return { amount: Number(message.amount), currency: message.currency };
                  },
                  result: {
                    codec: jsonCodec,
                    fromResponse: (message) => {
                      const m = message as { id: string; amount: string; currency: string };
                      return { id: m.id, amount: Number(m.amount), currency: m.currency, status: 'SUCCEEDED' };
                    },
                    toResponse: (value) => {
                      const payment = value as Payment;
                      return { ...payment, amount: String(payment.amount), status: 'PAYMENT_STATUS_SUCCEEDED' };
                    },
                  },
                },
              },
            }),
          ],
        },
        replayableService(PaymentsService),
        {
          createPayment(
            call: grpc.ServerUnaryCall<{ amount: string; currency: string }, unknown>,
            callback: grpc.sendUnaryData<unknown>,
          ) {
            try {
              const payment = domain.create({ amount: Number(call.request.amount), currency: call.request.currency });
              callback(null, { ...payment, amount: String(payment.amount), status: 'PAYMENT_STATUS_SUCCEEDED' });
            } catch (error) {
              if (error instanceof ValidationError)
                callback({ code: grpc.status.INVALID_ARGUMENT, details: error.message });
              else callback(error as Error);
            }
          },
        },
      );
      grpcServer = started.server;
      grpcClient = createClient(started.address);
    });

    afterAll(async () => {
      grpcClient?.close();
      if (grpcServer) await stopServer(grpcServer);
      await closeTrpc?.();
      await closeStore?.();
    });

    const tenant = (key: string) => keyed(key, { 'x-tenant': 'acme' });

    it('replays over tRPC a payment first made over gRPC with the same key, and the reverse; each ran once', async () => {
      const grpcFirst = randomUUID();
      const viaGrpc = await createPayment(grpcClient, { amount: '2500', currency: 'EUR' }, tenant(grpcFirst));
      const sameOverTrpc = await trpc.createPayment.mutate(
        { amount: 2500, currency: 'EUR' },
        { context: { idempotencyKey: grpcFirst } },
      );

      expect(viaGrpc.status.code).toBe(grpc.status.OK);
      expect(sameOverTrpc).toEqual({ id: viaGrpc.value?.id, amount: 2500, currency: 'EUR', status: 'SUCCEEDED' });
      expect(replayedHeaders.at(-1)).toBe('true');

      const trpcFirst = randomUUID();
      const viaTrpc = await trpc.createPayment.mutate(
        { amount: 990, currency: 'CHF' },
        { context: { idempotencyKey: trpcFirst } },
      );
      const sameOverGrpc = await createPayment(grpcClient, { amount: '990', currency: 'CHF' }, tenant(trpcFirst));

      expect(sameOverGrpc.status.code).toBe(grpc.status.OK);
      expect(sameOverGrpc.value).toMatchObject({
        id: viaTrpc.id,
        amount: '990',
        currency: 'CHF',
        status: 'PAYMENT_STATUS_SUCCEEDED',
      });
      expect(first(sameOverGrpc.headers, 'idempotent-replayed')).toBe('true');
      expect(first(sameOverGrpc.status.metadata, 'idempotent-replayed')).toBe('true');
      expect(domain.effects.map((payment) => payment.id)).toEqual([viaGrpc.value?.id, viaTrpc.id]);
    });

    it('refuses the same key with another input on the other transport (mismatch); nothing runs', async () => {
      const key = randomUUID();
      await trpc.createPayment.mutate({ amount: 100, currency: 'EUR' }, { context: { idempotencyKey: key } });
      const before = domain.effects.length;

      const other = await createPayment(grpcClient, { amount: '200', currency: 'EUR' }, tenant(key));

      expect(other.status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(first(other.status.metadata, 'idempotency-error')).toBe('FINGERPRINT_MISMATCH');
      expect(domain.effects.length).toBe(before);
    });

    it('replays a final error stored by one transport as the matching error on the other', async () => {
      const trpcKey = randomUUID();
      const trpcError = await trpc.createPayment
        .mutate({ amount: -5, currency: 'EUR' }, { context: { idempotencyKey: trpcKey } })
        .catch((error: TRPCClientError<AppRouter>) => error);
      const overGrpc = await createPayment(grpcClient, { amount: '-5', currency: 'EUR' }, tenant(trpcKey));

      expect((trpcError as TRPCClientError<AppRouter>).data?.code).toBe('BAD_REQUEST');
      expect(overGrpc.status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(overGrpc.status.details).toBe('amount must be positive, received -5');
      expect(first(overGrpc.status.metadata, 'idempotent-replayed')).toBe('true');

      const grpcKey = randomUUID();
      const grpcError = await createPayment(grpcClient, { amount: '-7', currency: 'EUR' }, tenant(grpcKey));
      const overTrpc = await trpc.createPayment
        .mutate({ amount: -7, currency: 'EUR' }, { context: { idempotencyKey: grpcKey } })
        .catch((error: TRPCClientError<AppRouter>) => error);

      expect(grpcError.status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect((overTrpc as TRPCClientError<AppRouter>).data?.code).toBe('BAD_REQUEST');
      expect((overTrpc as TRPCClientError<AppRouter>).message).toBe('amount must be positive, received -7');
      expect(replayedHeaders.at(-1)).toBe('true');
      expect(domain.effects.every((payment) => payment.amount > 0)).toBe(true);
    });
  });
}

runSharedSuite('memory', async () => {
  const { createMemoryStore } = await import('../../src/index.js');
  return { store: createMemoryStore(), close: async () => {} };
});

describeWithDatabase('postgresql', 'shared key space on the Prisma store', () => {
  runSharedSuite('postgresql', async () => {
    const db = await createTestDatabase('postgresql');
    return { store: createPrismaStore(db.prisma), close: () => db.drop() };
  });
});
