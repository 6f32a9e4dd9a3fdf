/**
 * Real servers and clients for the transport benchmarks, all in this process on 127.0.0.1:0.
 *
 * tRPC: one standalone HTTP server whose router has the same trivial `create` mutation three times: `bare` (no
 * middleware), `idempotent` (the middleware on a service without cache) and `cached` (a service with the
 * in-process record cache). The client is a real tRPC client (idempotencyLink + httpLink + superjson).
 *
 * gRPC: three grpc-js servers on the same CreatePayment handler: bare (no interceptor, the plain service
 * definition), idempotent and cached (the interceptor, `replayableService`).
 *
 * Every call sends an idempotency key, the bare ones too (they ignore it), so the request bytes are the same
 * and `idempotent − bare` is the cost of idempotency alone. The handlers do no work of their own, so that
 * difference is not hidden in a slow procedure.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { createTRPCClient, httpLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { type CreateHTTPContextOptions, createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { idempotencyInterceptor, replayableService } from '../../src/grpc/index.js';
import type { IdempotencyService } from '../../src/index.js';
import { idempotencyHeaders, idempotencyLink } from '../../src/trpc/client.js';
import { type IdempotencyTrpcMeta, idempotencyMiddleware } from '../../src/trpc/index.js';
import { createClient, type PaymentsClient, PaymentsService } from '../../test/grpc/payments.js';

/** The mutation input both transports send. */
export const PAYMENT_INPUT = Object.freeze({ amount: 1250, currency: 'EUR' });
const CREATED_AT = new Date(1_764_763_200_000);

export type Transport = 'trpc' | 'grpc';
/** A keyed call on one transport: `bare` ignores the key, `idempotent` and `cached` honour it. */
export type CallTarget = 'bare' | 'idempotent' | 'cached';

/** Started servers and a client per target; `call(target, key)` resolves to the response's payment id. */
export interface TransportHarness {
  readonly transport: Transport;
  /** How often the handler ran, per target (a replay does not run it). */
  readonly runs: Record<CallTarget, number>;
  call(target: CallTarget, key: string): Promise<string>;
  close(): Promise<void>;
}

/** Start tRPC over HTTP with `services.idempotent` and `services.cached`. */
export async function startTrpc(services: {
  idempotent: IdempotencyService;
  cached: IdempotencyService;
}): Promise<TransportHarness> {
  const runs: Record<CallTarget, number> = { bare: 0, idempotent: 0, cached: 0 };
  const createContext = ({ req, res }: CreateHTTPContextOptions) => ({ req, res });
  type Context = Awaited<ReturnType<typeof createContext>>;
  const t = initTRPC.context<Context>().meta<IdempotencyTrpcMeta>().create({ transformer: superjson });
  const input = (raw: unknown) => {
    const value = raw as { amount?: unknown; currency?: unknown };
    if (typeof value?.amount !== 'number' || typeof value.currency !== 'string') {
      throw new Error('expected { amount: number, currency: string }');
    }
    return { amount: value.amount, currency: value.currency };
  };
  const handler = (target: CallTarget) => (opts: { input: { amount: number; currency: string } }) => {
    runs[target]++;
    return {
      id: `pay_${runs[target]}`,
      amount: opts.input.amount,
      currency: opts.input.currency,
      createdAt: CREATED_AT,
    };
  };
  const withService = (service: IdempotencyService) =>
    t.procedure.use(idempotencyMiddleware<Context>({ service, transformer: superjson }));
  const router = t.router({
    bare: t.router({ create: t.procedure.input(input).mutation(handler('bare')) }),
    idempotent: t.router({ create: withService(services.idempotent).input(input).mutation(handler('idempotent')) }),
    cached: t.router({ create: withService(services.cached).input(input).mutation(handler('cached')) }),
  });
  const server = createHTTPServer({ router, createContext });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const trpc = createTRPCClient<typeof router>({
    links: [idempotencyLink(), httpLink({ url, transformer: superjson, headers: idempotencyHeaders })],
  });
  return {
    transport: 'trpc',
    runs,
    async call(target, key) {
      const result = await trpc[target].create.mutate(PAYMENT_INPUT, { context: { idempotencyKey: key } });
      return result.id;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type CreatePayment = (
  call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
  callback: grpc.sendUnaryData<unknown>,
) => void;

/** Start three gRPC servers (bare, idempotent, cached) with a client each. */
export async function startGrpc(services: {
  idempotent: IdempotencyService;
  cached: IdempotencyService;
}): Promise<TransportHarness> {
  const runs: Record<CallTarget, number> = { bare: 0, idempotent: 0, cached: 0 };
  const handler =
    (target: CallTarget): CreatePayment =>
    (call, callback) => {
      runs[target]++;
      callback(null, {
        id: `pay_${runs[target]}`,
        amount: call.request.amount,
        currency: call.request.currency,
        status: 'PAYMENT_STATUS_SUCCEEDED',
        createdAt: { seconds: String(CREATED_AT.getTime() / 1000), nanos: 0 },
      });
    };
  const servers: grpc.Server[] = [];
  const clients = {} as Record<CallTarget, PaymentsClient>;
  for (const target of ['bare', 'idempotent', 'cached'] as const) {
    const service = target === 'bare' ? undefined : services[target];
    const server = new grpc.Server(service ? { interceptors: [idempotencyInterceptor({ service })] } : {});
    server.addService(service ? replayableService(PaymentsService) : PaymentsService, {
      createPayment: handler(target),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    servers.push(server);
    clients[target] = createClient(`127.0.0.1:${port}`);
  }
  const request = { amount: String(PAYMENT_INPUT.amount), currency: PAYMENT_INPUT.currency };
  return {
    transport: 'grpc',
    runs,
    call(target, key) {
      const metadata = new grpc.Metadata();
      metadata.set('idempotency-key', key);
      return new Promise((resolve, reject) => {
        clients[target].createPayment(request, metadata, {}, (error, response) => {
          if (error) reject(error);
          else resolve(String(response?.id));
        });
      });
    },
    async close() {
      for (const client of Object.values(clients)) client.close();
      for (const server of servers) server.forceShutdown();
    },
  };
}

/** A fresh key for a first execution. */
export const freshKey = (): string => randomUUID();
