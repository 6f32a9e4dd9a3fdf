// The gRPC adapter's behaviour suite, run once per record store (memory, SQLite, PostgreSQL): a real grpc-js
// server with idempotencyInterceptor on 127.0.0.1:0 and real grpc-js clients. Every test uses fresh random
// keys, so one store (one database namespace) serves the whole file.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotencyKeyInterceptor, idempotentRetryServiceConfig } from '../../src/grpc/client.js';
import {
  type IdempotencyGrpcOptions,
  IdempotencyGrpcStatusPolicy,
  idempotencyInterceptor,
  replayableService,
} from '../../src/grpc/index.js';
import {
  createIdempotencyService,
  type IdempotencyEvent,
  type IdempotencyServiceOptions,
  type IdempotencyStore,
} from '../../src/index.js';
import {
  brokenStore,
  type CallResult,
  countingStore,
  createPayment,
  type Deferred,
  deferred,
  first,
  keyed,
  listRefunds,
  metadataObject,
  metadataWith,
  type StoreCounts,
  waitUntil,
  withoutMarker,
} from './helpers.js';
import { createClient, PATHS, type PaymentsClient, PaymentsService, startServer, stopServer } from './payments.js';

/** A record store to run the suite against. */
export interface GrpcSuiteBackend {
  readonly name: string;
  /** Create the store the file's tests share; `close` tears it down. */
  open(): Promise<{ store: IdempotencyStore; close(): Promise<void> }>;
  /** A store of this kind whose database cannot be reached (e.g. a dead port), for the store-down test. */
  openUnreachable?(): Promise<{ store: IdempotencyStore; close(): Promise<void> }>;
}

type Handler = (
  call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
  callback: grpc.sendUnaryData<unknown>,
) => void;
type StreamHandler = (call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) => void;

interface Handlers {
  createPayment: Handler;
  listRefunds: StreamHandler;
}

interface ServeOptions {
  readonly interceptor?: Omit<Partial<IdempotencyGrpcOptions>, 'service'>;
  /** Interceptors placed before ours (closer to the network). */
  readonly before?: readonly grpc.ServerInterceptor[];
  readonly service?: Omit<Partial<IdempotencyServiceOptions>, 'store'>;
  readonly store?: IdempotencyStore;
  readonly handlers?: Partial<Handlers>;
  readonly replayable?: boolean;
  readonly clientOptions?: grpc.ClientOptions;
}

interface Served {
  readonly client: PaymentsClient;
  readonly address: string;
  readonly store: IdempotencyStore;
  readonly counts: StoreCounts;
  readonly events: IdempotencyEvent[];
  /** How often each handler started, and the metadata each saw. */
  readonly runs: { createPayment: number; listRefunds: number; uploadReceipt: number; negotiateRate: number };
  readonly seen: grpc.Metadata[];
  /** Resolves once `predicate` holds; re-checked after every store operation and event. */
  until(predicate: () => boolean): Promise<void>;
  /** Resolves when an event of `type` has been emitted `count` times in total. */
  event(type: IdempotencyEvent['type'], count?: number): Promise<void>;
  newClient(options?: grpc.ClientOptions): PaymentsClient;
}

export const REQUEST = Object.freeze({
  amount: '9223372036854775807',
  currency: 'EUR',
  metadata: { order: '42', channel: 'web' },
  card: { token: 'tok_visa', last4: '4242', expMonth: 12, expYear: 2030 },
  lineItems: [
    { sku: 'SKU-1', quantity: 3, unitPrice: { amountMinor: '1999', currency: 'EUR' } },
    { sku: 'SKU-2', quantity: 1, unitPrice: { amountMinor: '0', currency: 'EUR' } },
  ],
  authorization: Buffer.from([0x00, 0x01, 0xfe, 0xff]),
  customer: {
    id: 'cus_1',
    email: 'ada@example.com',
    billingAddress: { line1: 'Main St 1', city: 'Zürich', country: 'CH' },
  },
  description: 'Order #42',
});

/** A response that uses every field kind of payments.v1.Payment, derived from the request and the run count. */
export function samplePayment(request: Record<string, unknown>, attempt: number): Record<string, unknown> {
  return {
    id: `pay_${attempt}`,
    amount: request.amount,
    currency: request.currency,
    status: 'PAYMENT_STATUS_SUCCEEDED',
    metadata: { ...(request.metadata as object), 'ünïcode-ключ': 'värde ✓' },
    bank: { iban: 'DE89370400440532013000', bic: 'COBADEFFXXX' },
    lineItems: request.lineItems,
    receipt: Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f, 0x00]),
    createdAt: { seconds: '1764763200', nanos: 123_456_789 },
    sequence: '18446744073709551615',
    balanceDelta: '-9223372036854775808',
    ledgerEntry: '9007199254740993',
    fxRate: 1.0842,
    feeRatio: 0.25,
    captured: false,
    description: 'Thanks — see you',
    tags: ['first', '', 'last'],
    itemsBySku: { 'SKU-1': { sku: 'SKU-1', quantity: 3, unitPrice: { amountMinor: '1999', currency: 'EUR' } } },
    history: ['PAYMENT_STATUS_PENDING', 'PAYMENT_STATUS_SUCCEEDED'],
    customer: request.customer,
    riskScore: -17,
    attempt,
  };
}

const status = grpc.status;

export function runGrpcSuite(backend: GrpcSuiteBackend): void {
  // 15 s per test: generous for 50-way races on a busy database, short enough that a hang fails fast.
  describe(`gRPC adapter [${backend.name}]`, { timeout: 15_000 }, () => {
    let shared: { store: IdempotencyStore; close(): Promise<void> };
    const cleanups: (() => Promise<void> | void)[] = [];

    beforeAll(async () => {
      shared = await backend.open();
    });
    afterAll(async () => {
      await shared?.close();
    });
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    async function serve(options: ServeOptions = {}): Promise<Served> {
      const events: IdempotencyEvent[] = [];
      const listeners = new Set<() => void>();
      const notify = () => {
        for (const listener of listeners) listener();
      };
      const { store, counts } = countingStore(options.store ?? shared.store, notify);
      const service = createIdempotencyService({
        store,
        onEvent: (event) => {
          events.push(event);
          notify();
        },
        ...options.service,
      });
      const until = (predicate: () => boolean) => {
        const waiter = waitUntil(predicate);
        listeners.add(waiter.check);
        waiter.check();
        return waiter.promise.finally(() => listeners.delete(waiter.check));
      };
      const runs = { createPayment: 0, listRefunds: 0, uploadReceipt: 0, negotiateRate: 0 };
      const seen: grpc.Metadata[] = [];
      const handlers: Handlers = {
        createPayment(call, callback) {
          const headers = new grpc.Metadata();
          headers.set('x-payment-region', 'eu-west-1');
          headers.set('x-trace-bin', Buffer.from([0x00, 0x01, 0xfe, 0xff]));
          call.sendMetadata(headers);
          const trailers = new grpc.Metadata();
          trailers.set('x-ledger-entry', `L-${runs.createPayment}`);
          trailers.set('x-signature-bin', Buffer.from([0xde, 0xad, 0xbe, 0xef]));
          callback(null, samplePayment(call.request, runs.createPayment), trailers);
        },
        listRefunds(call) {
          const headers = new grpc.Metadata();
          headers.set('x-page', '1');
          headers.set('x-cursor-bin', Buffer.from([0xca, 0xfe]));
          call.sendMetadata(headers);
          const limit = Number(call.request.limit);
          for (let i = 0; i < limit; i++) {
            call.write({
              id: `re_${runs.listRefunds}_${i}`,
              paymentId: call.request.paymentId,
              amount: String(-100 * (i + 1)),
              createdAt: { seconds: String(1_764_763_200 + i), nanos: i },
              payload: Buffer.alloc(64, i),
            });
          }
          const trailers = new grpc.Metadata();
          trailers.set('x-total', String(limit));
          call.end(trailers);
        },
        ...options.handlers,
      };
      const implementation: grpc.UntypedServiceImplementation = {
        createPayment(
          call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
          callback: grpc.sendUnaryData<unknown>,
        ) {
          runs.createPayment++;
          seen.push(call.metadata);
          handlers.createPayment(call, callback);
        },
        listRefunds(call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) {
          runs.listRefunds++;
          seen.push(call.metadata);
          handlers.listRefunds(call);
        },
        uploadReceipt(
          call: grpc.ServerReadableStream<Record<string, unknown>, unknown>,
          callback: grpc.sendUnaryData<unknown>,
        ) {
          runs.uploadReceipt++;
          let received = 0;
          call.on('data', (chunk: { data: Buffer }) => {
            received += chunk.data.length;
          });
          call.on('end', () => callback(null, { bytesReceived: String(received) }));
        },
        negotiateRate(call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) {
          runs.negotiateRate++;
          call.on('data', (offer: { pair: string; rate: number }) =>
            call.write({ pair: offer.pair, rate: offer.rate * 0.99 }),
          );
          call.on('end', () => call.end());
        },
      };
      const definition = options.replayable === false ? PaymentsService : replayableService(PaymentsService);
      const { server, address } = await startServer(
        {
          interceptors: [
            ...(options.before ?? []),
            idempotencyInterceptor({ service, onError: () => {}, ...options.interceptor }),
          ],
        },
        definition,
        implementation,
      );
      const clients: PaymentsClient[] = [];
      const newClient = (clientOptions: grpc.ClientOptions = {}) => {
        const client = createClient(address, clientOptions);
        clients.push(client);
        return client;
      };
      cleanups.push(async () => {
        for (const client of clients) client.close();
        await stopServer(server);
      });
      return {
        client: newClient(options.clientOptions),
        address,
        store,
        counts,
        events,
        runs,
        seen,
        newClient,
        until,
        event: (type, count = 1) => until(() => events.filter((event) => event.type === type).length >= count),
      };
    }

    /** A createPayment handler that parks each run until the test releases it. */
    function holdRuns() {
      const gates: Deferred<void>[] = [];
      const listeners = new Set<() => void>();
      const handler: Handler = (call, callback) => {
        const gate = deferred();
        gates.push(gate);
        const attempt = gates.length;
        for (const listener of listeners) listener();
        void gate.promise.then(() => callback(null, samplePayment(call.request, attempt)));
      };
      cleanups.push(() => {
        for (const gate of gates) gate.resolve();
      });
      return {
        handler,
        /** Resolves once `count` runs have started. */
        started(count = 1): Promise<void> {
          const waiter = waitUntil(() => gates.length >= count);
          listeners.add(waiter.check);
          waiter.check();
          return waiter.promise.finally(() => listeners.delete(waiter.check));
        },
        release(index: number): void {
          gates[index]?.resolve();
        },
        releaseAll(): void {
          for (const gate of gates) gate.resolve();
        },
      };
    }

    describe('unary replay', () => {
      it('runs a duplicate once and replays its response, headers and trailers, marked as a replay', async () => {
        const s = await serve();
        const key = randomUUID();

        const original = await createPayment(s.client, REQUEST, keyed(key));
        const replayed = await createPayment(s.client, REQUEST, keyed(key));

        expect(original.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(1);
        expect(replayed.status.code).toBe(status.OK);
        expect(replayed.value).toEqual(original.value);
        expect(replayed.status.details).toBe(original.status.details);
        expect(withoutMarker(replayed.headers)).toEqual(withoutMarker(original.headers));
        expect(withoutMarker(replayed.status.metadata)).toEqual(withoutMarker(original.status.metadata));
        expect(first(original.headers, 'x-trace-bin')).toEqual(Buffer.from([0x00, 0x01, 0xfe, 0xff]));
        expect(first(original.status.metadata, 'x-signature-bin')).toEqual(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
        // Only the replay carries the marker, in headers and trailers.
        expect(first(original.headers, 'idempotent-replayed')).toBeUndefined();
        expect(first(original.status.metadata, 'idempotent-replayed')).toBeUndefined();
        expect(first(replayed.headers, 'idempotent-replayed')).toBe('true');
        expect(first(replayed.status.metadata, 'idempotent-replayed')).toBe('true');
        expect(s.events.map((event) => event.type)).toEqual(['executed', 'replayed']);
      });

      it('replays every protobuf field kind exactly: the same bytes on the wire and equal decoded objects', async () => {
        const s = await serve();
        const key = randomUUID();
        const method = PaymentsService.CreatePayment as grpc.MethodDefinition<object, Record<string, unknown>>;
        // A raw client that keeps the response bytes as they came off the wire.
        const raw = new grpc.Client(s.address, grpc.credentials.createInsecure());
        cleanups.push(() => raw.close());
        const rawCall = () =>
          new Promise<Buffer>((resolve, reject) => {
            raw.makeUnaryRequest(
              method.path,
              method.requestSerialize,
              (bytes: Buffer) => bytes,
              REQUEST,
              keyed(key),
              {},
              (error, value) => (error ? reject(error) : resolve(value as Buffer)),
            );
          });

        const originalBytes = await rawCall();
        const replayedBytes = await rawCall();

        expect(s.runs.createPayment).toBe(1);
        expect(Buffer.compare(replayedBytes, originalBytes)).toBe(0);
        const decoded = method.responseDeserialize(replayedBytes);
        expect(decoded).toEqual(method.responseDeserialize(originalBytes));
        expect(decoded).toMatchObject({
          amount: '9223372036854775807',
          sequence: '18446744073709551615',
          balanceDelta: '-9223372036854775808',
          ledgerEntry: '9007199254740993',
          fxRate: 1.0842,
          feeRatio: 0.25,
          captured: false,
          attempt: 1,
          riskScore: -17,
          status: 'PAYMENT_STATUS_SUCCEEDED',
          history: ['PAYMENT_STATUS_PENDING', 'PAYMENT_STATUS_SUCCEEDED'],
          method: 'bank',
          bank: { iban: 'DE89370400440532013000', bic: 'COBADEFFXXX' },
          createdAt: { seconds: '1764763200', nanos: 123_456_789 },
          metadata: { order: '42', channel: 'web', 'ünïcode-ключ': 'värde ✓' },
          tags: ['first', '', 'last'],
          itemsBySku: { 'SKU-1': { sku: 'SKU-1', quantity: 3, unitPrice: { amountMinor: '1999', currency: 'EUR' } } },
          customer: REQUEST.customer,
          description: 'Thanks — see you',
        });
        expect(decoded).not.toHaveProperty('card');
        expect(decoded.receipt).toEqual(Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f, 0x00]));
        expect(decoded.lineItems).toEqual(REQUEST.lineItems);

        // Generated clients (proto-loader objects) see equal objects, too.
        const viaClient = await createPayment(s.client, REQUEST, keyed(key));
        expect(viaClient.value).toEqual(decoded);
      });

      it('sends the status only after the record is stored, so a retry right after the answer replays', async () => {
        const order: string[] = [];
        const recording: IdempotencyStore = {
          name: shared.store.name,
          claim: (input) => shared.store.claim(input),
          get: (scope, key) => shared.store.get(scope, key),
          complete: async (input) => {
            const done = await shared.store.complete(input);
            order.push('stored');
            return done;
          },
          release: (scope, key, token) => shared.store.release(scope, key, token),
          renew: (scope, key, token, until) => shared.store.renew(scope, key, token, until),
          purgeExpired: (input) => shared.store.purgeExpired(input),
        };
        const network: grpc.ServerInterceptor = (_descriptor, call) =>
          new grpc.ServerInterceptingCall(call, {
            sendStatus(sent, next) {
              order.push(`status ${grpc.status[sent.code]}`);
              next(sent);
            },
          });
        const s = await serve({ store: recording, before: [network] });
        const key = randomUUID();

        await createPayment(s.client, REQUEST, keyed(key));
        const immediate = await createPayment(s.client, REQUEST, keyed(key));

        expect(order).toEqual(['stored', 'status OK', 'status OK']);
        expect(first(immediate.headers, 'idempotent-replayed')).toBe('true');
      });

      it('shows interceptors closer to the network a replayed message as a decoded object', async () => {
        const sent: unknown[] = [];
        const network: grpc.ServerInterceptor = (_descriptor, call) =>
          new grpc.ServerInterceptingCall(call, {
            sendMessage(message, next) {
              sent.push(message);
              next(message);
            },
          });
        const s = await serve({ before: [network] });
        const key = randomUUID();

        await createPayment(s.client, REQUEST, keyed(key));
        await createPayment(s.client, REQUEST, keyed(key));

        expect(sent).toHaveLength(2);
        expect(sent[1]).toMatchObject({ id: 'pay_1', amount: REQUEST.amount, ledgerEntry: '9007199254740993' });
      });

      it('keeps scopes apart: the same key in two tenants runs once per tenant', async () => {
        const s = await serve({
          interceptor: { scope: ({ metadata }) => String(metadata.get('x-tenant')[0] ?? '') },
        });
        const key = randomUUID();

        const a1 = await createPayment(s.client, REQUEST, keyed(key, { 'x-tenant': 'tenant-a' }));
        const b1 = await createPayment(s.client, REQUEST, keyed(key, { 'x-tenant': 'tenant-b' }));
        const a2 = await createPayment(s.client, REQUEST, keyed(key, { 'x-tenant': 'tenant-a' }));

        expect(s.runs.createPayment).toBe(2);
        expect(a1.value?.attempt).toBe(1);
        expect(b1.value?.attempt).toBe(2);
        expect(a2.value).toEqual(a1.value);
        expect(first(b1.headers, 'idempotent-replayed')).toBeUndefined();
        expect(first(a2.headers, 'idempotent-replayed')).toBe('true');
      });

      it('lets calls without a key through untouched: no store access, no marker', async () => {
        const s = await serve();

        const one = await createPayment(s.client, REQUEST);
        const two = await createPayment(s.client, REQUEST);

        expect(s.runs.createPayment).toBe(2);
        expect(s.counts.claims).toBe(0);
        expect([one.value?.attempt, two.value?.attempt]).toEqual([1, 2]);
        expect(first(two.headers, 'idempotent-replayed')).toBeUndefined();
      });
    });

    describe('concurrent duplicates', () => {
      it('runs 50 concurrent duplicates once; the other 49 get ABORTED (IN_PROGRESS) trailers-only with a pushback', async () => {
        const held = holdRuns();
        const s = await serve({ handlers: { createPayment: held.handler }, service: { retryAfterMs: 250 } });
        const key = randomUUID();

        const calls = Array.from({ length: 50 }, () => createPayment(s.client, REQUEST, keyed(key)));
        await s.until(() => s.counts.lostClaims >= 49);
        held.releaseAll();
        const results = await Promise.all(calls);

        expect(s.runs.createPayment).toBe(1);
        const ok = results.filter((result) => result.status.code === status.OK);
        const aborted = results.filter((result) => result.status.code === status.ABORTED);
        expect(ok).toHaveLength(1);
        expect(aborted).toHaveLength(49);
        for (const result of aborted) {
          expect(result.headers).toBeUndefined();
          expect(first(result.status.metadata, 'idempotency-error')).toBe('IN_PROGRESS');
          const pushback = Number(first(result.status.metadata, 'grpc-retry-pushback-ms'));
          expect(pushback).toBeGreaterThan(0);
          expect(pushback).toBeLessThanOrEqual(250);
          expect(result.status.details).toMatch(/still running/);
        }
        const later = await createPayment(s.client, REQUEST, keyed(key));
        expect(later.value).toEqual(ok[0]?.value);
        expect(s.runs.createPayment).toBe(1);
      });

      it('with the wait policy, 50 concurrent duplicates all get the one response', async () => {
        const held = holdRuns();
        const s = await serve({
          handlers: { createPayment: held.handler },
          service: { inFlight: { wait: true, timeoutMs: 20_000, pollIntervalMs: 50 } },
        });
        const key = randomUUID();

        const calls = Array.from({ length: 50 }, () => createPayment(s.client, REQUEST, keyed(key)));
        await s.until(() => s.counts.lostClaims >= 49);
        held.releaseAll();
        const results = await Promise.all(calls);

        expect(s.runs.createPayment).toBe(1);
        for (const result of results) {
          expect(result.status.code).toBe(status.OK);
          expect(result.value).toEqual(results[0]?.value);
        }
        expect(results.filter((result) => first(result.headers, 'idempotent-replayed') === 'true')).toHaveLength(49);
      });

      it("lets grpc-js's retryPolicy turn IN_PROGRESS into the replay, waiting the server's pushback", async () => {
        const held = holdRuns();
        const s = await serve({ handlers: { createPayment: held.handler }, service: { retryAfterMs: 20 } });
        const retrying = s.newClient({
          'grpc.service_config': JSON.stringify(idempotentRetryServiceConfig({ initialBackoffMs: 10 })),
        });
        const key = randomUUID();
        const firstCall = createPayment(s.client, REQUEST, keyed(key));
        await held.started(1);

        const retried = createPayment(retrying, REQUEST, keyed(key));
        await s.event('conflict');
        held.release(0);
        const [a, b] = await Promise.all([firstCall, retried]);

        expect(s.runs.createPayment).toBe(1);
        expect(b.status.code).toBe(status.OK);
        expect(b.value).toEqual(a.value);
        expect(first(b.headers, 'idempotent-replayed')).toBe('true');
        expect(s.events.filter((event) => event.type === 'conflict').length).toBeGreaterThanOrEqual(1);
      });
    });

    describe('server streaming', () => {
      it.each([3, 0])(
        'replays a stream of %i messages: headers, messages in order, status and trailers',
        async (limit) => {
          const s = await serve();
          const key = randomUUID();
          const request = { paymentId: 'pay_1', limit };

          const original = await listRefunds(s.client, request, keyed(key));
          const replayed = await listRefunds(s.client, request, keyed(key));

          expect(s.runs.listRefunds).toBe(1);
          expect(original.status.code).toBe(status.OK);
          expect(original.value).toHaveLength(limit);
          expect(replayed.value).toEqual(original.value);
          expect(replayed.status.code).toBe(original.status.code);
          expect(replayed.status.details).toBe(original.status.details);
          expect(withoutMarker(replayed.headers)).toEqual(withoutMarker(original.headers));
          expect(withoutMarker(replayed.status.metadata)).toEqual(withoutMarker(original.status.metadata));
          expect(first(replayed.headers, 'idempotent-replayed')).toBe('true');
          expect(first(replayed.status.metadata, 'idempotent-replayed')).toBe('true');
          expect(first(original.headers, 'x-cursor-bin')).toEqual(Buffer.from([0xca, 0xfe]));
        },
      );

      it('replays a stream that ended with a final error after some messages', async () => {
        const s = await serve({
          handlers: {
            listRefunds(call) {
              call.write({ id: 're_1', amount: '-100' });
              call.write({ id: 're_2', amount: '-200' });
              const trailers = new grpc.Metadata();
              trailers.set('x-reason', 'voided');
              call.emit('error', {
                code: status.FAILED_PRECONDITION,
                details: 'payment pay_1 was voided',
                metadata: trailers,
              });
            },
          },
        });
        const key = randomUUID();

        const original = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));
        const replayed = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));

        expect(s.runs.listRefunds).toBe(1);
        expect(original.value?.map((refund) => refund.id)).toEqual(['re_1', 're_2']);
        expect(original.status.code).toBe(status.FAILED_PRECONDITION);
        expect(replayed.value).toEqual(original.value);
        expect(replayed.status.code).toBe(status.FAILED_PRECONDITION);
        expect(replayed.status.details).toBe('payment pay_1 was voided');
        expect(first(replayed.status.metadata, 'x-reason')).toBe('voided');
        expect(first(replayed.status.metadata, 'idempotent-replayed')).toBe('true');
        expect(replayed.error?.code).toBe(status.FAILED_PRECONDITION);
      });

      it('releases a stream that ended with a retryable error, so a retry streams again', async () => {
        let failures = 1;
        const s = await serve({
          handlers: {
            listRefunds(call) {
              call.write({ id: `re_${failures}` });
              if (failures-- > 0) call.emit('error', { code: status.UNAVAILABLE, details: 'ledger busy' });
              else call.end();
            },
          },
        });
        const key = randomUUID();

        const failed = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));
        const retried = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));

        expect(failed.status.code).toBe(status.UNAVAILABLE);
        expect(retried.status.code).toBe(status.OK);
        expect(s.runs.listRefunds).toBe(2);
        expect(first(retried.headers, 'idempotent-replayed')).toBeUndefined();
      });

      it.each([
        ['the method option', { interceptor: { methods: { [PATHS.listRefunds]: { maxResultBytes: 1_000 } } } }],
        ["the service's default", { service: { maxResultBytes: 1_000 } }],
      ] as const)(
        'gives the first caller a stream larger than maxResultBytes (%s) whole; retries get RESULT_NOT_STORABLE',
        async (_name, options) => {
          const s = await serve(options);
          const key = randomUUID();

          const original = await listRefunds(s.client, { paymentId: 'pay_1', limit: 40 }, keyed(key));
          const retried = await listRefunds(s.client, { paymentId: 'pay_1', limit: 40 }, keyed(key));

          expect(original.status.code).toBe(status.OK);
          expect(original.value).toHaveLength(40);
          expect(s.runs.listRefunds).toBe(1);
          expect(retried.status.code).toBe(status.INTERNAL);
          expect(retried.value).toHaveLength(0);
          expect(first(retried.status.metadata, 'idempotency-error')).toBe('RESULT_NOT_STORABLE');
          expect(first(retried.status.metadata, 'idempotent-replayed')).toBe('true');
          const notStorable = s.events.find((event) => event.type === 'not-storable');
          expect(String(notStorable?.error)).toMatch(/maxResultBytes \(1000 bytes\)/);
        },
      );

      it('releases a stream the client cancels after its first message', async () => {
        const gate = deferred();
        const s = await serve({
          handlers: {
            listRefunds(call) {
              call.write({ id: 're_1' });
              void gate.promise.then(() => call.end());
            },
          },
        });
        cleanups.push(() => gate.resolve());
        const key = randomUUID();
        const call = s.client.listRefunds({ paymentId: 'pay_1' }, keyed(key));
        const cancelled = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
        call.on('error', () => {});
        call.once('data', () => call.cancel());

        expect((await cancelled).code).toBe(status.CANCELLED);
        await s.event('released');
        gate.resolve();
        const retried = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));

        expect(retried.status.code).toBe(status.OK);
        expect(s.runs.listRefunds).toBe(2);
      });
    });

    describe('errors', () => {
      it('stores a final error (sent trailers-only) and replays its code, details and trailers', async () => {
        const s = await serve({
          handlers: {
            createPayment(_call, callback) {
              const trailers = new grpc.Metadata();
              trailers.set('x-field', 'amount');
              trailers.set('x-violation-bin', Buffer.from([1, 2, 3]));
              callback({ code: status.INVALID_ARGUMENT, details: 'amount must be positive', metadata: trailers });
            },
          },
        });
        const key = randomUUID();

        const original = await createPayment(s.client, REQUEST, keyed(key));
        const replayed = await createPayment(s.client, REQUEST, keyed(key));

        expect(s.runs.createPayment).toBe(1);
        expect(original.status.code).toBe(status.INVALID_ARGUMENT);
        expect(original.headers).toBeUndefined();
        expect(replayed.status.code).toBe(status.INVALID_ARGUMENT);
        expect(replayed.status.details).toBe('amount must be positive');
        expect(replayed.headers).toBeUndefined();
        expect(withoutMarker(replayed.status.metadata)).toEqual(withoutMarker(original.status.metadata));
        expect(first(replayed.status.metadata, 'x-violation-bin')).toEqual(Buffer.from([1, 2, 3]));
        expect(first(replayed.status.metadata, 'idempotent-replayed')).toBe('true');
        const record = await s.store.get('', key);
        expect(record).toMatchObject({ status: 'FAILED', resultCode: 'INVALID_ARGUMENT' });
      });

      it.each([
        [
          'UNAVAILABLE from the callback',
          (callback: grpc.sendUnaryData<unknown>) => callback({ code: status.UNAVAILABLE, details: 'try again' }),
        ],
        [
          'INTERNAL from the callback',
          (callback: grpc.sendUnaryData<unknown>) => callback({ code: status.INTERNAL, details: 'bug' }),
        ],
        [
          'a thrown Error (UNKNOWN)',
          () => {
            throw new Error('database exploded');
          },
        ],
      ])('releases a retryable error (%s), so a retry runs the handler again', async (_name, fail) => {
        let attempt = 0;
        const s = await serve({
          handlers: {
            createPayment(call, callback) {
              if (attempt++ === 0) fail(callback);
              else callback(null, samplePayment(call.request, attempt));
            },
          },
        });
        const key = randomUUID();

        const failed = await createPayment(s.client, REQUEST, keyed(key));
        const retried = await createPayment(s.client, REQUEST, keyed(key));
        const replayed = await createPayment(s.client, REQUEST, keyed(key));

        expect(failed.status.code).not.toBe(status.OK);
        expect(IdempotencyGrpcStatusPolicy[grpc.status[failed.status.code] as 'UNKNOWN']).toBe('retryable');
        expect(retried.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(2);
        expect(replayed.value).toEqual(retried.value);
        expect(first(replayed.headers, 'idempotent-replayed')).toBe('true');
      });

      it('applies status policy overrides, globally and per method', async () => {
        const codes = [status.NOT_FOUND, status.PERMISSION_DENIED];
        const s = await serve({
          interceptor: {
            statusPolicy: { NOT_FOUND: 'retryable' },
            methods: { [PATHS.createPayment]: { statusPolicy: { PERMISSION_DENIED: 'final' } } },
          },
          handlers: {
            createPayment(call, callback) {
              const code = codes[Number(call.request.currency === 'USD')] as grpc.status;
              callback({ code, details: grpc.status[code] });
            },
          },
        });
        const notFoundKey = randomUUID();
        const deniedKey = randomUUID();

        await createPayment(s.client, REQUEST, keyed(notFoundKey));
        const notFoundAgain = await createPayment(s.client, REQUEST, keyed(notFoundKey));
        const usd = { ...REQUEST, currency: 'USD' };
        await createPayment(s.client, usd, keyed(deniedKey));
        const deniedAgain = await createPayment(s.client, usd, keyed(deniedKey));

        expect(s.runs.createPayment).toBe(3);
        expect(notFoundAgain.status.code).toBe(status.NOT_FOUND);
        expect(first(notFoundAgain.status.metadata, 'idempotent-replayed')).toBeUndefined();
        expect(deniedAgain.status.code).toBe(status.PERMISSION_DENIED);
        expect(first(deniedAgain.status.metadata, 'idempotent-replayed')).toBe('true');
      });

      it('refuses the same key with another request (FAILED_PRECONDITION, FINGERPRINT_MISMATCH); nothing runs', async () => {
        const s = await serve();
        const key = randomUUID();
        await createPayment(s.client, REQUEST, keyed(key));

        const otherInput = await createPayment(s.client, { ...REQUEST, amount: '100' }, keyed(key));
        const otherMethod = await listRefunds(s.client, { paymentId: 'pay_1' }, keyed(key));

        expect(s.runs).toMatchObject({ createPayment: 1, listRefunds: 0 });
        for (const result of [otherInput, otherMethod]) {
          expect(result.status.code).toBe(status.FAILED_PRECONDITION);
          expect(first(result.status.metadata, 'idempotency-error')).toBe('FINGERPRINT_MISMATCH');
          expect(result.headers).toBeUndefined();
        }
        expect(otherInput.status.details).toMatch(/different input/);
        expect(otherMethod.status.details).toMatch(/CreatePayment, not .*ListRefunds/);
      });

      it('fingerprints with a custom function per method (here: ignoring a field)', async () => {
        const s = await serve({
          interceptor: {
            methods: {
              [PATHS.createPayment]: {
                fingerprint: (request) => ({ ...(request as object), description: undefined }),
              },
            },
          },
        });
        const key = randomUUID();

        await createPayment(s.client, REQUEST, keyed(key));
        const sameButDescription = await createPayment(s.client, { ...REQUEST, description: 'retry #2' }, keyed(key));
        const otherAmount = await createPayment(s.client, { ...REQUEST, amount: '1' }, keyed(key));

        expect(s.runs.createPayment).toBe(1);
        expect(first(sameButDescription.headers, 'idempotent-replayed')).toBe('true');
        expect(otherAmount.status.code).toBe(status.FAILED_PRECONDITION);
      });
    });

    describe('client interceptor and grpc-js retries', () => {
      it('sends one key on every attempt of a retried call (UNAVAILABLE first), with one effect', async () => {
        let effects = 0;
        const s = await serve({
          handlers: {
            createPayment(call, callback) {
              if (s.runs.createPayment === 1) {
                callback({ code: status.UNAVAILABLE, details: 'warming up' });
                return;
              }
              effects++;
              callback(null, samplePayment(call.request, s.runs.createPayment));
            },
          },
        });
        const client = s.newClient({
          interceptors: [idempotencyKeyInterceptor()],
          'grpc.service_config': JSON.stringify(
            idempotentRetryServiceConfig({ methods: ['payments.v1.Payments'], initialBackoffMs: 10 }),
          ),
        });

        const result = await createPayment(client, REQUEST);

        expect(result.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(2);
        expect(effects).toBe(1);
        const keys = s.seen.map((metadata) => metadata.get('idempotency-key')[0]);
        expect(keys[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(keys[1]).toBe(keys[0]);
        expect(s.seen[1]?.get('grpc-previous-rpc-attempts')).toEqual(['1']);
        // The same key later (a restarted client replaying its own request) gets the stored response.
        const again = await createPayment(s.client, REQUEST, keyed(String(keys[0])));
        expect(again.value).toEqual(result.value);
        expect(effects).toBe(1);
      });

      it('retries a call that hit a store outage (UNAVAILABLE, nothing ran) with the same key', async () => {
        let outages = 1;
        const flaky: IdempotencyStore = {
          name: shared.store.name,
          claim: async (input) => {
            if (outages-- > 0) throw new Error('connection reset (test outage)');
            return shared.store.claim(input);
          },
          get: (scope, key) => shared.store.get(scope, key),
          complete: (input) => shared.store.complete(input),
          release: (scope, key, token) => shared.store.release(scope, key, token),
          renew: (scope, key, token, until) => shared.store.renew(scope, key, token, until),
          purgeExpired: (input) => shared.store.purgeExpired(input),
        };
        const s = await serve({ store: flaky });
        const client = s.newClient({
          interceptors: [idempotencyKeyInterceptor()],
          'grpc.service_config': JSON.stringify(idempotentRetryServiceConfig({ initialBackoffMs: 10 })),
        });

        const result = await createPayment(client, REQUEST);

        expect(result.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(1);
        expect(s.counts.claims).toBe(2);
      });

      it("makes a fresh key per logical call and never writes into the caller's metadata", async () => {
        const s = await serve();
        const client = s.newClient({ interceptors: [idempotencyKeyInterceptor()] });
        const reused = metadataWith({ 'x-tenant': 'tenant-a' });

        const one = await createPayment(client, REQUEST, reused);
        const two = await createPayment(client, REQUEST, reused);

        expect(s.runs.createPayment).toBe(2);
        expect([one.value?.attempt, two.value?.attempt]).toEqual([1, 2]);
        const [k1, k2] = s.seen.map((metadata) => metadata.get('idempotency-key')[0]);
        expect(k1).not.toBe(k2);
        expect(reused.get('idempotency-key')).toEqual([]);
        expect(metadataObject(reused)).toEqual({ 'x-tenant': ['tenant-a'] });
      });

      it('keeps a key the caller set, and adds none to client-streaming calls', async () => {
        const s = await serve();
        const client = s.newClient({ interceptors: [idempotencyKeyInterceptor()] });
        const key = randomUUID();

        await createPayment(client, REQUEST, keyed(key));
        const upload = await new Promise<grpc.StatusObject>((resolve) => {
          const call = client.uploadReceipt(new grpc.Metadata(), {}, () => {});
          call.on('status', resolve);
          call.write({ paymentId: 'pay_1', data: Buffer.from('receipt') });
          call.end();
        });

        expect(s.seen[0]?.get('idempotency-key')).toEqual([key]);
        expect(upload.code).toBe(status.OK);
        expect(s.runs.uploadReceipt).toBe(1);
      });
    });

    describe('bad key metadata', () => {
      const cases: [string, () => grpc.Metadata, RegExp][] = [
        ['missing on a method that requires one', () => new grpc.Metadata(), /requires an idempotency key/],
        ['empty', () => keyed(''), /empty/],
        ['256 characters', () => keyed('k'.repeat(256)), /256 characters/],
        [
          'binary (idempotency-key-bin)',
          () => metadataWith({ 'idempotency-key-bin': Buffer.from('abc') }),
          /binary metadata/,
        ],
        ['sent twice', () => metadataWith({ 'idempotency-key': ['key-a', 'key-b'] }), /exactly one/],
      ];

      it.each(cases)(
        'refuses a key that is %s with INVALID_ARGUMENT; nothing runs or is stored',
        async (_name, metadata, message) => {
          const s = await serve({ interceptor: { methods: { [PATHS.createPayment]: { required: true } } } });

          const result = await createPayment(s.client, REQUEST, metadata());

          expect(result.status.code).toBe(status.INVALID_ARGUMENT);
          expect(result.status.details).toMatch(message);
          expect(['KEY_MISSING', 'KEY_INVALID']).toContain(first(result.status.metadata, 'idempotency-error'));
          expect(result.headers).toBeUndefined();
          expect(s.runs.createPayment).toBe(0);
          expect(s.counts.claims).toBe(0);
          // Keys the store can hold at all (it rejects empty and over-long ones itself): none was written.
          for (const key of ['key-a', 'key-b', 'key-a, key-b', 'abc']) {
            expect(await s.store.get('', key)).toBeNull();
          }
        },
      );
    });

    describe('cancellation', () => {
      it('releases the record when the deadline passes mid-handler, so a later retry runs', async () => {
        const held = holdRuns();
        const s = await serve({
          handlers: {
            createPayment(call, callback) {
              if (s.runs.createPayment === 1) held.handler(call, callback);
              else callback(null, samplePayment(call.request, s.runs.createPayment));
            },
          },
        });
        const key = randomUUID();

        const timedOut = await createPayment(s.client, REQUEST, keyed(key), { deadline: Date.now() + 150 });
        await s.event('released');
        const retried = await createPayment(s.client, REQUEST, keyed(key));

        expect(timedOut.status.code).toBe(status.DEADLINE_EXCEEDED);
        expect(retried.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(2);
        expect(first(retried.headers, 'idempotent-replayed')).toBeUndefined();
        // The first handler finishing late changes nothing: the retry's result stays the record.
        held.release(0);
        const replayed = await createPayment(s.client, REQUEST, keyed(key));
        expect(replayed.value).toEqual(retried.value);
      });

      it('releases the record when the client cancels mid-handler, so a later retry runs', async () => {
        const held = holdRuns();
        const s = await serve({ handlers: { createPayment: held.handler } });
        const key = randomUUID();

        const cancelled = await createPayment(s.client, REQUEST, keyed(key), {}, (call) => {
          void held.started(1).then(() => call.cancel());
        });
        await s.event('released');
        const retry = createPayment(s.client, REQUEST, keyed(key));
        await held.started(2);
        held.release(1);

        expect(cancelled.status.code).toBe(status.CANCELLED);
        expect((await retry).status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(2);
      });
    });

    describe('store unavailable', () => {
      it('answers UNAVAILABLE (STORE_UNAVAILABLE) when every store call throws; the handler does not run', async () => {
        const s = await serve({ store: brokenStore() });

        const keyedCall = await createPayment(s.client, REQUEST, keyed(randomUUID()));
        const unkeyed = await createPayment(s.client, REQUEST);

        expect(keyedCall.status.code).toBe(status.UNAVAILABLE);
        expect(first(keyedCall.status.metadata, 'idempotency-error')).toBe('STORE_UNAVAILABLE');
        expect(keyedCall.headers).toBeUndefined();
        expect(keyedCall.status.details).toMatch(/did not run/);
        // Calls without a key never touch the store.
        expect(unkeyed.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(1);
      });

      const openUnreachable = backend.openUnreachable;
      if (openUnreachable) {
        it(`answers UNAVAILABLE when the ${backend.name} database is unreachable; the handler does not run`, async () => {
          const unreachable = await openUnreachable();
          cleanups.push(() => unreachable.close());
          const s = await serve({ store: unreachable.store });

          const result = await createPayment(s.client, REQUEST, keyed(randomUUID()));

          expect(result.status.code).toBe(status.UNAVAILABLE);
          expect(first(result.status.metadata, 'idempotency-error')).toBe('STORE_UNAVAILABLE');
          expect(s.runs.createPayment).toBe(0);
        });
      }
    });

    describe('streaming requests', () => {
      function upload(client: PaymentsClient, metadata: grpc.Metadata): Promise<CallResult<Record<string, unknown>>> {
        return new Promise((resolve) => {
          let error: grpc.ServiceError | null = null;
          let value: Record<string, unknown> | undefined;
          const call = client.uploadReceipt(metadata, {}, (err, response) => {
            error = err;
            value = response;
          });
          call.on('status', (received: grpc.StatusObject) =>
            resolve({ error, value, headers: undefined, status: received }),
          );
          call.write({ paymentId: 'pay_1', data: Buffer.from('part one') });
          call.write({ paymentId: 'pay_1', data: Buffer.from('part two') });
          call.end();
        });
      }

      function negotiate(
        client: PaymentsClient,
        metadata: grpc.Metadata,
      ): Promise<CallResult<Record<string, unknown>[]>> {
        return new Promise((resolve) => {
          const messages: Record<string, unknown>[] = [];
          let error: grpc.ServiceError | null = null;
          const call = client.negotiateRate(metadata);
          call.on('data', (message: Record<string, unknown>) => messages.push(message));
          call.on('error', (err: grpc.ServiceError) => {
            error = err;
          });
          call.on('status', (received: grpc.StatusObject) =>
            setImmediate(() => resolve({ error, value: messages, headers: undefined, status: received })),
          );
          call.write({ pair: 'EUR/CHF', rate: 0.94 });
          call.end();
        });
      }

      it('refuses a client-streaming call with a key (UNIMPLEMENTED, STREAMING_NOT_SUPPORTED); without a key it runs', async () => {
        const s = await serve();

        const withKey = await upload(s.client, keyed(randomUUID()));
        const withoutKey = await upload(s.client, new grpc.Metadata());

        expect(withKey.status.code).toBe(status.UNIMPLEMENTED);
        expect(first(withKey.status.metadata, 'idempotency-error')).toBe('STREAMING_NOT_SUPPORTED');
        expect(withKey.status.details).toMatch(
          /client-streaming method; idempotency keys are supported for unary and server-streaming/,
        );
        expect(withoutKey.status.code).toBe(status.OK);
        expect(withoutKey.value).toEqual({ bytesReceived: '16' });
        expect(s.runs.uploadReceipt).toBe(1);
        expect(s.counts.claims).toBe(0);
      });

      it('refuses a bidi call with a key the same way; without a key it runs', async () => {
        const s = await serve();

        const withKey = await negotiate(s.client, keyed(randomUUID()));
        const withoutKey = await negotiate(s.client, new grpc.Metadata());

        expect(withKey.status.code).toBe(status.UNIMPLEMENTED);
        expect(withKey.status.details).toMatch(/bidirectional-streaming/);
        expect(first(withKey.status.metadata, 'idempotency-error')).toBe('STREAMING_NOT_SUPPORTED');
        expect(withoutKey.status.code).toBe(status.OK);
        expect(withoutKey.value).toEqual([{ pair: 'EUR/CHF', rate: expect.closeTo(0.9306, 6) }]);
        expect(s.runs.negotiateRate).toBe(1);
      });

      it('refuses a streaming-request method configured as required, rather than demanding a key it would refuse', async () => {
        const s = await serve({ interceptor: { required: true } });

        const result = await upload(s.client, new grpc.Metadata());

        expect(result.status.code).toBe(status.UNIMPLEMENTED);
        expect(s.runs.uploadReceipt).toBe(0);
      });
    });

    describe('configuration', () => {
      it('refuses keyed calls to a service registered without replayableService (INTERNAL), before anything runs', async () => {
        const s = await serve({ replayable: false });

        const keyedCall = await createPayment(s.client, REQUEST, keyed(randomUUID()));
        const unkeyed = await createPayment(s.client, REQUEST);

        expect(keyedCall.status.code).toBe(status.INTERNAL);
        expect(first(keyedCall.status.metadata, 'idempotency-error')).toBe('SERVICE_NOT_REPLAYABLE');
        expect(keyedCall.status.details).toMatch(/replayableService\(/);
        expect(s.counts.claims).toBe(0);
        expect(unkeyed.status.code).toBe(status.OK);
        expect(s.runs.createPayment).toBe(1);
      });

      it('leaves methods alone that the options turn off (methods: false, unlistedMethods: ignore)', async () => {
        const s = await serve({
          interceptor: {
            unlistedMethods: 'ignore',
            methods: { [PATHS.createPayment]: false, [PATHS.listRefunds]: {} },
          },
        });
        const key = randomUUID();
        const streamKey = randomUUID();

        await createPayment(s.client, REQUEST, keyed(key));
        await createPayment(s.client, REQUEST, keyed(key));
        await listRefunds(s.client, { limit: 1 }, keyed(streamKey));
        const replayedStream = await listRefunds(s.client, { limit: 1 }, keyed(streamKey));

        expect(s.runs.createPayment).toBe(2);
        expect(s.runs.listRefunds).toBe(1);
        expect(first(replayedStream.headers, 'idempotent-replayed')).toBe('true');
        expect(s.counts.claims).toBe(2);
      });

      it('answers with the status a scope option throws, and INTERNAL when it fails otherwise', async () => {
        const errors: unknown[] = [];
        const s = await serve({
          interceptor: {
            scope: ({ metadata }) => {
              const tenant = metadata.get('x-tenant')[0];
              if (tenant === 'broken') throw new Error('tenant directory timed out');
              if (tenant === undefined) throw { code: status.UNAUTHENTICATED, details: 'x-tenant is missing' };
              return String(tenant);
            },
            onError: (error) => errors.push(error),
          },
        });

        const anonymous = await createPayment(s.client, REQUEST, keyed(randomUUID()));
        const broken = await createPayment(s.client, REQUEST, keyed(randomUUID(), { 'x-tenant': 'broken' }));

        expect(anonymous.status.code).toBe(status.UNAUTHENTICATED);
        expect(anonymous.status.details).toBe('x-tenant is missing');
        expect(broken.status.code).toBe(status.INTERNAL);
        expect(broken.status.details).not.toMatch(/tenant directory/);
        expect(broken.status.details).toMatch(/did not run/);
        expect(errors).toHaveLength(1);
        expect(s.runs.createPayment).toBe(0);
      });
    });
  });
}
