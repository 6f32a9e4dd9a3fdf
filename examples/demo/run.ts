// npm run demo: a retry storm against a payments service, with and without rpc-idempotency.
//
// One createPayment procedure is exposed over tRPC (HTTP) and gRPC, with one Prisma store on an embedded SQLite
// file (.data/demo.db, created on first run). Real clients drive it through an unreliable network: responses
// lost after the server charged, client timeouts, retries by tRPC's retryLink and grpc-js's retry policy,
// double submits, a key reused for a different amount, a retry arriving while the first call still runs.
// The same storm then runs against the same service without idempotency. The ledger shows the difference.
//
// Exit code 0 only if every order was charged exactly once with idempotency on, and the run without it
// double-charged at least once (the failure the library exists to prevent).
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { createTRPCClient, httpLink, retryLink, TRPCClientError } from '@trpc/client';
import superjson from 'superjson';
import { idempotencyKeyInterceptor, idempotentRetryServiceConfig } from '../../src/grpc/client.js';
import type { IdempotencyEvent } from '../../src/index.js';
import { getIdempotencyErrorCode, idempotencyHeaders, idempotencyLink } from '../../src/trpc/client.js';
import {
  createPaymentsClient,
  GRPC_METHOD,
  type LedgerRow,
  openDatabase,
  type PaymentRequest,
  PaymentsClient,
  readLedger,
  resetDatabase,
  startPaymentsService,
} from './payments-service.js';

const DB_FILE = process.env.DEMO_DB ?? fileURLToPath(new URL('../../.data/demo.db', import.meta.url));
const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, text: string) => (color ? `\u001b[${code}m${text}\u001b[0m` : text);
const dim = (text: string) => paint(2, text);
const green = (text: string) => paint(32, text);
const red = (text: string) => paint(31, text);
const bold = (text: string) => paint(1, text);

/** One line of the transcript: which attempt, which transport, which key, what happened. */
function line(attempt: number | string, transport: string, key: string, what: string) {
  const shortKey = key.length > 14 ? `${key.slice(0, 13)}…` : key;
  console.log(`  ${String(attempt).padStart(2)}  ${transport.padEnd(4)}  ${shortKey.padEnd(14)}  ${what}`);
}

interface Scenario {
  /** Shown as the scenario's heading and in the ledger. */
  title: string;
  orderId: string;
  /** The amount the order should be charged. */
  amountCents: number;
  run(clients: Clients): Promise<void>;
}

interface Clients {
  trpc(options?: { loseFirstResponse?: boolean; timeoutFirstAttemptMs?: number }): TrpcClient;
  grpcCall(request: PaymentRequest, options?: { key?: string; loseFirstResponse?: boolean }): Promise<string>;
}

type TrpcClient = {
  createPayment: {
    mutate(input: PaymentRequest, options?: { context?: Record<string, unknown> }): Promise<{ paymentId: string }>;
  };
};

const DEMO_ORDERS: Scenario[] = [
  {
    title: 'tRPC: the response is lost after the server charged; retryLink retries',
    orderId: 'order-A',
    amountCents: 1_250,
    async run({ trpc }) {
      await trpc({ loseFirstResponse: true }).createPayment.mutate({
        orderId: 'order-A',
        amountCents: 1_250,
        currency: 'EUR',
      });
    },
  },
  {
    title: 'gRPC: the response is lost after the server charged; grpc-js retries (retryPolicy)',
    orderId: 'order-B',
    amountCents: 4_990,
    async run({ grpcCall }) {
      await grpcCall({ orderId: 'order-B', amountCents: 4_990, currency: 'EUR' }, { loseFirstResponse: true });
    },
  },
  {
    title: 'tRPC: the client times out while the card network is slow, then retries',
    orderId: 'order-C',
    amountCents: 19_900,
    async run({ trpc }) {
      await trpc({ timeoutFirstAttemptMs: 150 }).createPayment.mutate({
        orderId: 'order-C',
        amountCents: 19_900,
        currency: 'EUR',
        processingMs: 500,
      });
    },
  },
  {
    title: 'tRPC: a double-click submits the same order four times at once',
    orderId: 'order-D',
    amountCents: 7_500,
    async run({ trpc }) {
      const client = trpc();
      const key = `order-D-${randomUUID().slice(0, 8)}`; // the app's own key: one per checkout
      await Promise.all(
        Array.from({ length: 4 }, () =>
          client.createPayment.mutate(
            { orderId: 'order-D', amountCents: 7_500, currency: 'EUR', processingMs: 300 },
            { context: { idempotencyKey: key } },
          ),
        ),
      );
    },
  },
  {
    title: 'gRPC: three app servers submit the same order at once',
    orderId: 'order-E',
    amountCents: 2_000,
    async run({ grpcCall }) {
      const key = `order-E-${randomUUID().slice(0, 8)}`;
      await Promise.all(
        Array.from({ length: 3 }, () =>
          grpcCall({ orderId: 'order-E', amountCents: 2_000, currency: 'EUR', processingMs: 300 }, { key }),
        ),
      );
    },
  },
  {
    title: 'tRPC: a buggy client reuses the key of order F for a different amount',
    orderId: 'order-F',
    amountCents: 3_000,
    async run({ trpc }) {
      const client = trpc();
      const key = `order-F-${randomUUID().slice(0, 8)}`;
      await client.createPayment.mutate(
        { orderId: 'order-F', amountCents: 3_000, currency: 'EUR' },
        { context: { idempotencyKey: key } },
      );
      await client.createPayment
        .mutate({ orderId: 'order-F', amountCents: 30_000, currency: 'EUR' }, { context: { idempotencyKey: key } })
        .catch((error: unknown) => {
          if (getIdempotencyErrorCode(error) !== 'FINGERPRINT_MISMATCH') throw error;
        });
    },
  },
  {
    title: 'gRPC: a retry arrives while the first call is still running',
    orderId: 'order-G',
    amountCents: 12_000,
    async run({ grpcCall }) {
      const key = `order-G-${randomUUID().slice(0, 8)}`;
      const request = { orderId: 'order-G', amountCents: 12_000, currency: 'EUR', processingMs: 500 };
      const first = grpcCall(request, { key });
      await new Promise((resolve) => setTimeout(resolve, 100));
      await Promise.all([first, grpcCall(request, { key })]);
    },
  },
];

/**
 * The demo's unreliable network on the gRPC side: a gRPC hop (think load balancer) between client and service.
 * It forwards every call; for a call marked `x-demo-lose-response`, it drops the service's answer to the first
 * attempt after the service has charged, and tells the client `UNAVAILABLE` (trailers-only, so grpc-js's retry
 * policy retries it with the same metadata, key included).
 */
async function startLossyGrpcHop(
  backendAddress: string,
  log: (transport: string, key: string, what: string) => void,
): Promise<{ address: string; close(): void }> {
  const backend = createPaymentsClient(backendAddress);
  const hop = new grpc.Server();
  hop.addService(PaymentsClient.service, {
    createPayment(call: grpc.ServerUnaryCall<object, object>, callback: grpc.sendUnaryData<object>) {
      const metadata = call.metadata.clone();
      const key = String(metadata.get('idempotency-key')[0] ?? '');
      // grpc-js marks its retries with grpc-previous-rpc-attempts: only the first attempt's answer is lost.
      const lose =
        metadata.get('x-demo-lose-response')[0] === '1' && metadata.get('grpc-previous-rpc-attempts').length === 0;
      metadata.remove('grpc-previous-rpc-attempts');
      backend.createPayment(call.request, metadata, (error, payment) => {
        if (lose) {
          log('grpc', key, red('response lost in the network (the card was charged)'));
          callback({ code: grpc.status.UNAVAILABLE, details: 'connection reset by peer (simulated)' });
        } else if (error) {
          callback({ code: error.code, details: error.details, metadata: error.metadata });
        } else {
          callback(null, payment);
        }
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    hop.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    close() {
      backend.close();
      hop.forceShutdown();
    },
  };
}

interface RunResult {
  ledger: LedgerRow[];
}

async function runStorm(idempotency: boolean): Promise<RunResult> {
  const prisma = await openDatabase(DB_FILE);
  await resetDatabase(prisma);
  const attempts = new Map<string, number>();
  const nextAttempt = (key: string) => {
    const n = (attempts.get(key) ?? 0) + 1;
    attempts.set(key, n);
    return n;
  };
  const log = (transport: string, key: string, what: string) => line(nextAttempt(key), transport, key, what);
  const describe: Record<string, string> = {
    executed: green('   … charged; the payment is stored for retries'),
    replayed: green('replayed the stored payment (no charge)'),
    conflict: 'conflict: still running, client told to retry',
    mismatch: red('rejected: key reused with a different request'),
    released: 'released: failed before charging, retry may run',
    'taken-over': 'took over an abandoned claim',
    'store-error': red('store error'),
    'not-storable': red('result not storable'),
  };
  const onEvent = (event: IdempotencyEvent) => {
    if (event.type === 'executed' && event.ok === false) return;
    const transport = event.procedure === GRPC_METHOD ? 'grpc' : 'trpc';
    // The attempt that ran the procedure was numbered when it started charging (onCharge).
    if (event.type === 'executed') line('', transport, event.key, describe.executed ?? '');
    else log(transport, event.key, describe[event.type] ?? event.type);
  };
  const service = await startPaymentsService({
    prisma,
    idempotency,
    onCharge: (row, key) =>
      log(
        row.transport,
        key,
        idempotency ? 'runs the procedure: charging the card' : red('charging the card (no idempotency check)'),
      ),
    ...(idempotency ? { onEvent } : {}),
  });
  const hop = await startLossyGrpcHop(service.grpcAddress, log);

  const trpc: Clients['trpc'] = (options = {}) => {
    let firstResponse = true;
    let firstAttempt = true;
    const unreliableFetch = async (input: string | URL, requestInit?: { headers?: unknown }) => {
      const init = requestInit as RequestInit | undefined;
      const key = new Headers(init?.headers).get('idempotency-key') ?? '';
      if (options.timeoutFirstAttemptMs !== undefined && firstAttempt) {
        firstAttempt = false;
        const timeout = AbortSignal.timeout(options.timeoutFirstAttemptMs);
        try {
          return await fetch(input, { ...init, signal: timeout });
        } catch (error) {
          log('trpc', key, red(`client gave up after ${options.timeoutFirstAttemptMs} ms (the server keeps going)`));
          throw error;
        }
      }
      const response = await fetch(input, init);
      if (options.loseFirstResponse && firstResponse) {
        firstResponse = false;
        await response.arrayBuffer();
        log('trpc', key, red('response lost in the network (the card was charged)'));
        throw new TypeError('fetch failed: connection reset by peer');
      }
      return response;
    };
    return createTRPCClient({
      links: [
        idempotencyLink(),
        retryLink({
          retry: ({ op, attempts: tries, error }) =>
            op.type === 'mutation' &&
            tries < 6 &&
            getIdempotencyErrorCode(error) !== 'FINGERPRINT_MISMATCH' &&
            (error.data?.httpStatus ?? 503) >= 409,
          retryDelayMs: () => 200,
        }),
        httpLink({ url: service.trpcUrl, transformer: superjson, fetch: unreliableFetch, headers: idempotencyHeaders }),
      ],
    }) as unknown as TrpcClient;
  };

  const grpcClient = createPaymentsClient(hop.address, {
    interceptors: [idempotencyKeyInterceptor()],
    'grpc.service_config': JSON.stringify(
      idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'], maxAttempts: 5, initialBackoffMs: 150 }),
    ),
  });
  const grpcCall: Clients['grpcCall'] = (request, options = {}) =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      if (options.key) metadata.set('idempotency-key', options.key);
      if (options.loseFirstResponse) metadata.set('x-demo-lose-response', '1');
      grpcClient.createPayment(
        {
          amount: String(request.amountCents),
          currency: request.currency,
          metadata: { order_id: request.orderId, processing_ms: String(request.processingMs ?? 0) },
        },
        metadata,
        (error, payment) => (error ? reject(error) : resolve(payment?.id ?? '')),
      );
    });

  try {
    for (const scenario of DEMO_ORDERS) {
      console.log(`\n${bold(scenario.orderId)}  ${scenario.title}`);
      try {
        await scenario.run({ trpc, grpcCall });
      } catch (error) {
        const message = error instanceof TRPCClientError || error instanceof Error ? error.message : String(error);
        console.log(`      ${red(`the client gave up: ${message}`)}`);
      }
    }
    return { ledger: await readLedger(prisma) };
  } finally {
    grpcClient.close();
    hop.close();
    await service.close();
    await prisma.$disconnect();
  }
}

function chargesPerOrder(ledger: LedgerRow[]): Map<string, LedgerRow[]> {
  const byOrder = new Map<string, LedgerRow[]>(DEMO_ORDERS.map((scenario) => [scenario.orderId, []]));
  for (const row of ledger) byOrder.get(row.orderId)?.push(row);
  return byOrder;
}

const started = Date.now();
console.log(bold('rpc-idempotency demo: a retry storm against a payments service'));
console.log(dim(`SQLite file: ${DB_FILE}`));
console.log(dim('columns: attempt (per key), transport, idempotency key, what happened'));

console.log(bold('\n=== with rpc-idempotency ==='));
const on = await runStorm(true);
console.log(bold('\n=== the same storm without rpc-idempotency ==='));
const off = await runStorm(false);

const onCharges = chargesPerOrder(on.ledger);
const offCharges = chargesPerOrder(off.ledger);
const euros = (cents: number) => `${(cents / 100).toFixed(2)} EUR`;
console.log(bold('\n=== ledger ==='));
console.log(`  ${'order'.padEnd(9)}  ${'expected'.padEnd(10)}  ${'with rpc-idempotency'.padEnd(22)}  without`);
let failures = 0;
let doubleCharges = 0;
for (const scenario of DEMO_ORDERS) {
  const withRows = onCharges.get(scenario.orderId) ?? [];
  const withoutRows = offCharges.get(scenario.orderId) ?? [];
  const exactlyOnce = withRows.length === 1 && withRows[0]?.amountCents === scenario.amountCents;
  if (!exactlyOnce) failures++;
  const extra = Math.max(0, withoutRows.length - 1);
  doubleCharges += extra;
  const withText = `${withRows.length} charge${withRows.length === 1 ? '' : 's'}`;
  const withoutText = `${withoutRows.length} charge${withoutRows.length === 1 ? '' : 's'} (${euros(
    withoutRows.reduce((sum, row) => sum + row.amountCents, 0),
  )})`;
  console.log(
    `  ${scenario.orderId.padEnd(9)}  ${euros(scenario.amountCents).padEnd(10)}  ${exactlyOnce ? green(withText.padEnd(22)) : red(withText.padEnd(22))}  ${extra > 0 ? red(withoutText) : withoutText}`,
  );
}
const total = (rows: LedgerRow[]) => euros(rows.reduce((sum, row) => sum + row.amountCents, 0));
console.log(
  `  ${'total'.padEnd(9)}  ${euros(DEMO_ORDERS.reduce((sum, s) => sum + s.amountCents, 0)).padEnd(10)}  ${total(on.ledger).padEnd(22)}  ${total(off.ledger)}`,
);
console.log(
  `\nwith rpc-idempotency: ${on.ledger.length} charges for ${DEMO_ORDERS.length} orders, ${
    failures === 0 ? green('every order charged exactly once') : red(`${failures} orders charged wrongly`)
  }`,
);
console.log(`without:              ${off.ledger.length} charges, ${red(`${doubleCharges} double charges`)}`);
console.log(dim(`finished in ${((Date.now() - started) / 1000).toFixed(1)} s`));
if (failures > 0 || doubleCharges === 0) {
  console.error(red('\ninvariants violated: see the ledger above'));
  process.exitCode = 1;
}
