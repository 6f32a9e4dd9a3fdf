// The demo's payments service: one createPayment procedure, exposed over tRPC (HTTP) and gRPC, charging into a
// ledger table on an embedded SQLite file. Both transports share one idempotency service and one Prisma store.
//
// Used by `npm run demo` (examples/demo/run.ts) and `npm start` (examples/demo/serve.ts).
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { initTRPC, TRPCError } from '@trpc/server';
import { type CreateHTTPContextOptions, createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { PrismaClient } from '../../prisma/generated/sqlite/client.js';
import { idempotencyInterceptor, replayableService } from '../../src/grpc/index.js';
import { createIdempotencyService, type IdempotencyEvent } from '../../src/index.js';
import { applyIdempotencyMigrations, configureSqlite, createPrismaStore } from '../../src/stores/prisma/index.js';
import { type IdempotencyTrpcMeta, idempotencyErrorData, idempotencyMiddleware } from '../../src/trpc/index.js';

/** The procedure identity of createPayment on each transport. */
export const TRPC_PROCEDURE = 'createPayment';
export const GRPC_METHOD = '/payments.v1.Payments/CreatePayment';

export interface PaymentRequest {
  /** The merchant's order this payment settles. */
  orderId: string;
  amountCents: number;
  currency: string;
  /** How long the (simulated) card network takes, so the demo can show a retry arriving mid-call. */
  processingMs?: number;
}

export interface Payment {
  paymentId: string;
  orderId: string;
  amountCents: bigint;
  currency: string;
  chargedAt: Date;
}

export interface LedgerRow {
  paymentId: string;
  orderId: string;
  amountCents: number;
  currency: string;
  transport: string;
}

/** Open (and on first run create) the SQLite file: WAL mode, the idempotency table, the ledger table. */
export async function openDatabase(file: string): Promise<PrismaClient> {
  mkdirSync(dirname(file), { recursive: true });
  const prisma = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: `file:${file}`, timeout: 5_000 }) });
  await configureSqlite(prisma);
  await applyIdempotencyMigrations(prisma, { provider: 'sqlite' });
  await prisma.$executeRawUnsafe(
    `CREATE TABLE IF NOT EXISTS demo_ledger (
       payment_id TEXT PRIMARY KEY,
       order_id TEXT NOT NULL,
       amount_cents INTEGER NOT NULL,
       currency TEXT NOT NULL,
       transport TEXT NOT NULL,
       charged_at TEXT NOT NULL
     )`,
  );
  return prisma;
}

/** Empty the ledger and the idempotency records, so every demo run starts from the same state. */
export async function resetDatabase(prisma: PrismaClient): Promise<void> {
  await prisma.$executeRawUnsafe('DELETE FROM demo_ledger');
  await prisma.$executeRawUnsafe('DELETE FROM idempotency_records');
}

export async function readLedger(prisma: PrismaClient): Promise<LedgerRow[]> {
  const rows = await prisma.$queryRawUnsafe<
    Array<{ payment_id: string; order_id: string; amount_cents: number | bigint; currency: string; transport: string }>
  >('SELECT payment_id, order_id, amount_cents, currency, transport FROM demo_ledger ORDER BY rowid');
  return rows.map((row) => ({
    paymentId: row.payment_id,
    orderId: row.order_id,
    amountCents: Number(row.amount_cents),
    currency: row.currency,
    transport: row.transport,
  }));
}

const PROTO_PATH = fileURLToPath(new URL('../../proto/payments.proto', import.meta.url));
const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});
export const PaymentsClient = (
  grpc.loadPackageDefinition(packageDefinition) as unknown as {
    payments: { v1: { Payments: grpc.ServiceClientConstructor } };
  }
).payments.v1.Payments;

/** The generated gRPC client, typed for the one method the demo calls. */
export interface DemoPaymentsClient {
  createPayment(
    request: object,
    metadata: grpc.Metadata,
    callback: (error: grpc.ServiceError | null, value?: { id: string; amount: string; currency: string }) => void,
  ): grpc.ClientUnaryCall;
  close(): void;
}

/** A gRPC client of the payments service at `address` (channel options such as a retry service config). */
export function createPaymentsClient(address: string, options: grpc.ClientOptions = {}): DemoPaymentsClient {
  return new PaymentsClient(address, grpc.credentials.createInsecure(), options) as unknown as DemoPaymentsClient;
}

export interface PaymentsServiceOptions {
  prisma: PrismaClient;
  /** false: the same service without rpc-idempotency, to show what it prevents. */
  idempotency: boolean;
  /** Receives every idempotency decision (executed, replayed, conflict, mismatch, ...). */
  onEvent?: (event: IdempotencyEvent) => void;
  /** Called each time the handler starts charging a card, with the key the request carried. */
  onCharge?: (row: LedgerRow, key: string) => void;
  /** Ports to listen on; 0 picks a free one. */
  httpPort?: number;
  grpcPort?: number;
}

export interface RunningPaymentsService {
  trpcUrl: string;
  grpcAddress: string;
  close(): Promise<void>;
}

/** The one business operation: charge the card, write the ledger row, return the payment. */
async function charge(
  prisma: PrismaClient,
  request: PaymentRequest,
  transport: string,
  key: string,
  onCharge: ((row: LedgerRow, key: string) => void) | undefined,
): Promise<Payment> {
  if (!Number.isInteger(request.amountCents) || request.amountCents <= 0) {
    throw new TRPCError({ code: 'BAD_REQUEST', message: 'amountCents must be a positive integer' });
  }
  const payment: Payment = {
    paymentId: `pay_${randomBytes(6).toString('hex')}`,
    orderId: request.orderId,
    amountCents: BigInt(request.amountCents),
    currency: request.currency,
    chargedAt: new Date(),
  };
  onCharge?.(
    {
      paymentId: payment.paymentId,
      orderId: payment.orderId,
      amountCents: request.amountCents,
      currency: payment.currency,
      transport,
    },
    key,
  );
  if (request.processingMs) await new Promise((resolve) => setTimeout(resolve, request.processingMs));
  await prisma.$executeRawUnsafe(
    'INSERT INTO demo_ledger (payment_id, order_id, amount_cents, currency, transport, charged_at) VALUES (?, ?, ?, ?, ?, ?)',
    payment.paymentId,
    payment.orderId,
    request.amountCents,
    payment.currency,
    transport,
    payment.chargedAt.toISOString(),
  );
  return payment;
}

function parsePaymentRequest(raw: unknown): PaymentRequest {
  const input = raw as Partial<PaymentRequest> | null;
  if (
    typeof input?.orderId !== 'string' ||
    typeof input.amountCents !== 'number' ||
    typeof input.currency !== 'string' ||
    (input.processingMs !== undefined && typeof input.processingMs !== 'number')
  ) {
    throw new TRPCError({
      code: 'BAD_REQUEST',
      message: 'expected { orderId: string, amountCents: number, currency: string, processingMs?: number }',
    });
  }
  return input as PaymentRequest;
}

/** Start the payments service on both transports. */
export async function startPaymentsService(options: PaymentsServiceOptions): Promise<RunningPaymentsService> {
  const { prisma } = options;
  const service = createIdempotencyService({
    store: createPrismaStore(prisma),
    // Short enough that a retry of a slow call sees IN_PROGRESS and comes back; long enough for the demo.
    retryAfterMs: 150,
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });

  // tRPC over HTTP.
  const createContext = ({ req, res }: CreateHTTPContextOptions) => ({ req, res });
  type Context = Awaited<ReturnType<typeof createContext>>;
  const t = initTRPC
    .context<Context>()
    .meta<IdempotencyTrpcMeta>()
    .create({
      transformer: superjson,
      errorFormatter: ({ shape, error }) => ({
        ...shape,
        data: { ...shape.data, idempotency: idempotencyErrorData(error) },
      }),
    });
  const mutationProcedure = options.idempotency
    ? t.procedure.use(idempotencyMiddleware<Context>({ service, transformer: superjson }))
    : t.procedure;
  const router = t.router({
    createPayment: mutationProcedure
      .meta({ idempotency: { required: true } })
      .input(parsePaymentRequest)
      .mutation(({ input, ctx }) =>
        charge(prisma, input, 'trpc', String(ctx.req.headers['idempotency-key'] ?? ''), options.onCharge),
      ),
  });
  const httpServer: HttpServer = createHTTPServer({ router, createContext });
  await new Promise<void>((resolve) => httpServer.listen(options.httpPort ?? 0, '127.0.0.1', resolve));

  // gRPC.
  const grpcServer = new grpc.Server({
    interceptors: options.idempotency
      ? [idempotencyInterceptor({ service, methods: { [GRPC_METHOD]: { required: true } } })]
      : [],
  });
  grpcServer.addService(replayableService(PaymentsClient.service), {
    createPayment(
      call: grpc.ServerUnaryCall<{ amount: string; currency: string; metadata: Record<string, string> }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) {
      const request: PaymentRequest = {
        orderId: call.request.metadata.order_id ?? '',
        amountCents: Number(call.request.amount),
        currency: call.request.currency,
        processingMs: Number(call.request.metadata.processing_ms ?? 0),
      };
      const key = String(call.metadata.get('idempotency-key')[0] ?? '');
      charge(prisma, request, 'grpc', key, options.onCharge).then(
        (payment) =>
          callback(null, {
            id: payment.paymentId,
            amount: String(payment.amountCents),
            currency: payment.currency,
            status: 'PAYMENT_STATUS_SUCCEEDED',
            metadata: { order_id: payment.orderId },
            createdAt: { seconds: String(Math.floor(payment.chargedAt.getTime() / 1000)), nanos: 0 },
          }),
        (error: unknown) =>
          callback({
            code: error instanceof TRPCError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL,
            details: error instanceof Error ? error.message : String(error),
          }),
      );
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(
      `127.0.0.1:${options.grpcPort ?? 0}`,
      grpc.ServerCredentials.createInsecure(),
      (error, port) => (error ? reject(error) : resolve(port)),
    ),
  );

  return {
    trpcUrl: `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`,
    grpcAddress: `127.0.0.1:${grpcPort}`,
    async close() {
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
    },
  };
}
