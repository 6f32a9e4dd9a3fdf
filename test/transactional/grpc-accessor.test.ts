// How a gRPC handler reaches its call's transaction, and why it is not AsyncLocalStorage.
//
// The interceptor opens the transaction after an async claim and then passes the request message on with
// next(message); grpc-js starts a unary handler once the half-close follows. These tests drive grpc-js with a
// raw HTTP/2 client that controls when END_STREAM (the half-close) is sent, and show:
// 1. an AsyncLocalStorage context entered around next(message) reaches the handler only when the half-close
//    was already there; when it arrives later, grpc-js starts the handler from the HTTP/2 stream's 'end'
//    event, outside that context;
// 2. idempotencyTransaction(call), which finds the transaction by the request metadata and message objects,
//    works in both cases.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotencyInterceptor, idempotencyTransaction, replayableService } from '../../src/grpc/index.js';
import {
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyStore,
  type IdempotencyTransactionalStore,
} from '../../src/index.js';
import { createPayment, keyed } from '../grpc/helpers.js';
import { createClient, PATHS, PaymentsService, startServer, stopServer } from '../grpc/payments.js';

interface FakeTransactionClient {
  readonly id: string;
}

/** A memory store with transaction(): the "client" is a token object, so a test can see which one arrived. */
function tokenTransactionalStore(inner: IdempotencyStore): IdempotencyTransactionalStore<FakeTransactionClient> {
  let opened = 0;
  return {
    ...inner,
    name: 'token-transactional',
    transaction: (work) => work({ client: { id: `tx-${++opened}` }, complete: (input) => inner.complete(input) }),
  };
}

const createRequest = PaymentsService.CreatePayment!;

interface RawResult {
  readonly status: number;
  readonly details: string;
  readonly message: Record<string, unknown> | undefined;
}

/**
 * One unary call over a bare HTTP/2 stream: the request message is written at once, END_STREAM after
 * `endAfter` resolves (grpc-js clients send both together).
 */
async function rawUnaryCall(
  address: string,
  request: object,
  metadata: Record<string, string>,
  endAfter: Promise<unknown>,
): Promise<RawResult> {
  const session = http2.connect(`http://${address}`);
  try {
    const body = createRequest.requestSerialize(request);
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': PATHS.createPayment,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...metadata,
    });
    stream.write(frame);
    void endAfter.then(() => stream.end());
    const chunks: Buffer[] = [];
    let statusHeaders: http2.IncomingHttpHeaders = {};
    stream.on('response', (headers) => {
      statusHeaders = headers;
    });
    stream.on('trailers', (trailers) => {
      statusHeaders = { ...statusHeaders, ...trailers };
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    await new Promise<void>((resolve, reject) => {
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    const data = Buffer.concat(chunks);
    return {
      status: Number(statusHeaders['grpc-status']),
      details: decodeURIComponent(String(statusHeaders['grpc-message'] ?? '')),
      message:
        data.length > 5 ? (createRequest.responseDeserialize(data.subarray(5)) as Record<string, unknown>) : undefined,
    };
  } finally {
    session.close();
  }
}

const request = { amount: '100', currency: 'EUR', metadata: { order: 'o-1' } };

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

async function serve(options: grpc.ServerOptions, implementation: grpc.UntypedServiceImplementation) {
  const { server, address } = await startServer(options, replayableService(PaymentsService), implementation);
  stops.push(() => stopServer(server));
  return address;
}

describe('AsyncLocalStorage across the interceptor (why the accessor does not use it)', () => {
  it('reaches the handler when the half-close came with the message, and not when it came later', async () => {
    // Prepare: an interceptor shaped like ours: an async gap (the claim), then next(message) inside a context.
    const als = new AsyncLocalStorage<string>();
    const seen: Array<string | undefined> = [];
    const passedOn: Array<() => void> = [];
    const interceptor: grpc.ServerInterceptor = (_descriptor, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onReceiveMessage(message, nextMessage) {
              setTimeout(() => {
                als.run('transaction', () => nextMessage(message));
                passedOn.shift()?.();
              }, 20);
            },
          }),
      });
    const address = await serve(
      { interceptors: [interceptor] },
      {
        createPayment: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => {
          seen.push(als.getStore());
          callback(null, { id: 'ok' });
        },
      },
    );
    const client = createClient(address);
    stops.push(async () => client.close());

    // Act: a grpc-js client (message and half-close together), then a raw client that half-closes only after
    // the interceptor passed the message on.
    await createPayment(client, request);
    const afterPassOn = new Promise<void>((resolve) => passedOn.push(resolve));
    const late = await rawUnaryCall(address, request, {}, afterPassOn);

    // Assess
    expect(late.status).toBe(grpc.status.OK);
    expect(seen).toEqual(['transaction', undefined]);
  });
});

describe('idempotencyTransaction(call)', () => {
  const transactional = (store: IdempotencyStore, onTransaction: (tx: FakeTransactionClient) => void) =>
    serve(
      {
        interceptors: [
          idempotencyInterceptor({
            service: createIdempotencyService({ store }),
            methods: { [PATHS.createPayment]: { transaction: true } },
          }),
        ],
      },
      {
        createPayment: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const tx = idempotencyTransaction<FakeTransactionClient>(call);
          onTransaction(tx);
          callback(null, { id: tx.id });
        },
      },
    );

  it('finds the transaction with a grpc-js client, and when the half-close arrives after the claim', async () => {
    const received: FakeTransactionClient[] = [];
    const store = tokenTransactionalStore(createMemoryStore());
    const address = await transactional(store, (tx) => received.push(tx));
    const client = createClient(address);
    stops.push(async () => client.close());
    const lateKey = randomUUID();
    let handlerRunsBeforeEnd = -1;

    const normal = await createPayment(client, request, keyed(randomUUID()));
    // END_STREAM only once the interceptor claimed the key and passed the message on inside the transaction:
    // the handler then starts from the stream's 'end' event.
    const late = await rawUnaryCall(
      address,
      request,
      { 'idempotency-key': lateKey },
      (async () => {
        while ((await store.get('', lateKey)) === null) await new Promise((resolve) => setTimeout(resolve, 5));
        await new Promise((resolve) => setTimeout(resolve, 50));
        handlerRunsBeforeEnd = received.length;
      })(),
    );

    expect(normal.value).toMatchObject({ id: 'tx-1' });
    expect(handlerRunsBeforeEnd).toBe(1); // the late call's handler had not started before END_STREAM
    expect(late).toMatchObject({ status: grpc.status.OK, message: { id: 'tx-2' } });
    expect(received.map((tx) => tx.id)).toEqual(['tx-1', 'tx-2']);
  });

  it('refuses after the transaction ended, saying to use it before answering', async () => {
    let kept: grpc.ServerUnaryCall<unknown, unknown> | undefined;
    const address = await serve(
      {
        interceptors: [
          idempotencyInterceptor({
            service: createIdempotencyService({ store: tokenTransactionalStore(createMemoryStore()) }),
            methods: { [PATHS.createPayment]: { transaction: true } },
          }),
        ],
      },
      {
        createPayment: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          kept = call;
          callback(null, { id: idempotencyTransaction<FakeTransactionClient>(call).id });
        },
      },
    );
    const client = createClient(address);
    stops.push(async () => client.close());

    const result = await createPayment(client, request, keyed(randomUUID()));

    expect(result.value).toMatchObject({ id: 'tx-1' });
    expect(() => idempotencyTransaction(kept!)).toThrow(
      `idempotencyTransaction: the transaction of this call to ${PATHS.createPayment} already ended (committed or rolled back). Use the transaction client only while the handler runs, before it answers (callback or end).`,
    );
  });

  it('refuses a call object the interceptor never saw, naming the method when it can', () => {
    const call = { metadata: new grpc.Metadata(), request: {}, getPath: () => PATHS.createPayment };
    expect(() => idempotencyTransaction(call)).toThrow(
      /^idempotencyTransaction: \/payments\.v1\.Payments\/CreatePayment has no idempotency transaction: expected the idempotency interceptor to run this call in transactional mode/,
    );
    expect(() => idempotencyTransaction(null as never)).toThrow(
      "idempotencyTransaction: expected the handler's call object (grpc.ServerUnaryCall), received null.",
    );
  });
});
