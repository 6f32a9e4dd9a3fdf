// gRPC quickstart: an idempotent CreatePayment over @grpc/grpc-js.
//
//   node --import tsx examples/grpc-quickstart.ts
//
// The server charges at most once per idempotency key; the client sends one key per logical call and lets
// grpc-js retry it safely. In your app, import from 'rpc-idempotency', 'rpc-idempotency/grpc' and
// 'rpc-idempotency/grpc/client' instead of the relative paths below. Exits 0 when every assertion holds.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { idempotencyKeyInterceptor, idempotentRetryServiceConfig } from '../src/grpc/client.js';
import { idempotencyInterceptor, replayableService } from '../src/grpc/index.js';
import { createIdempotencyService, createMemoryStore } from '../src/index.js';

// 1. Load the service. longs/enums as strings, bytes as Buffers, defaults and oneof names filled in.
const definition = protoLoader.loadSync(fileURLToPath(new URL('../proto/payments.proto', import.meta.url)), {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});
const { Payments } = (
  grpc.loadPackageDefinition(definition) as unknown as {
    payments: { v1: { Payments: grpc.ServiceClientConstructor } };
  }
).payments.v1;

// 2. The server: the interceptor in front of the handlers, the service wrapped for byte-exact replays.
const service = createIdempotencyService({ store: createMemoryStore() }); // use createPrismaStore(prisma) in production
let charges = 0;
let attempts = 0;
const server = new grpc.Server({
  interceptors: [
    idempotencyInterceptor({
      service,
      // Who owns a key. One global key space ('') is unsafe for multi-tenant services.
      scope: ({ metadata }) => String(metadata.get('x-tenant-id')[0] ?? ''),
      methods: { '/payments.v1.Payments/CreatePayment': { required: true } },
    }),
  ],
});
server.addService(replayableService(Payments.service), {
  createPayment(
    call: grpc.ServerUnaryCall<{ amount: string; currency: string }, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    attempts++;
    if (attempts === 1) {
      // A flaky dependency: the first attempt fails before charging. UNAVAILABLE releases the key.
      callback({ code: grpc.status.UNAVAILABLE, details: 'payment processor warming up' });
      return;
    }
    charges++;
    callback(null, {
      id: `pay_${charges}`,
      amount: call.request.amount,
      currency: call.request.currency,
      status: 'PAYMENT_STATUS_SUCCEEDED',
    });
  },
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
    error ? reject(error) : resolve(bound),
  ),
);

// 3. The client: one key per logical call, and grpc-js retries UNAVAILABLE / ABORTED with that same key.
const client = new Payments(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
  interceptors: [idempotencyKeyInterceptor()],
  'grpc.service_config': JSON.stringify(idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'] })),
});

interface Answer {
  payment: { id: string; amount: string } | undefined;
  replayed: boolean;
}
function createPayment(request: object, metadata = new grpc.Metadata()): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let replayed = false;
    const call = (
      client as unknown as {
        createPayment(
          r: object,
          m: grpc.Metadata,
          cb: (e: grpc.ServiceError | null, v?: Answer['payment']) => void,
        ): grpc.ClientUnaryCall;
      }
    ).createPayment(request, metadata, (error, payment) => (error ? reject(error) : resolve({ payment, replayed })));
    call.on('metadata', (headers: grpc.Metadata) => {
      replayed = headers.get('idempotent-replayed')[0] === 'true';
    });
  });
}

try {
  const tenant = new grpc.Metadata();
  tenant.set('x-tenant-id', 'acme');

  // The first attempt fails with UNAVAILABLE; grpc-js retries with the same key and the payment is made once.
  const first = await createPayment({ amount: '2500', currency: 'EUR' }, tenant);
  assert.equal(first.payment?.id, 'pay_1');
  assert.equal(attempts, 2);
  assert.equal(charges, 1);

  // A caller that retries on its own (say, after a crash) passes its stored key explicitly: the server
  // replays the first response and does not charge again.
  const retry = new grpc.Metadata();
  retry.set('x-tenant-id', 'acme');
  retry.set('idempotency-key', 'order-42-payment');
  const original = await createPayment({ amount: '990', currency: 'EUR' }, retry);
  const replay = await createPayment({ amount: '990', currency: 'EUR' }, retry);
  assert.deepEqual(replay.payment, original.payment);
  assert.equal(original.replayed, false);
  assert.equal(replay.replayed, true);
  assert.equal(charges, 2);

  console.log(`ok: ${charges} charges for 3 calls; the retried call was replayed (${replay.payment?.id}).`);
} finally {
  client.close();
  server.forceShutdown();
}
