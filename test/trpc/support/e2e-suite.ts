import { randomUUID } from 'node:crypto';
import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { IdempotencyStore } from '../../../src/index.js';
import { getIdempotencyErrorCode } from '../../../src/trpc/client.js';
import { countdown } from '../../support/deferred.js';
import { createTestApp, type TestApp, type TestRouter } from './app.js';
import { ADAPTERS, createTestClient, type RunningServer, startServer, type TestClientOptions } from './http.js';

/** One store for one server; `cleanup` runs after the server closed. */
export interface TrpcSuiteBackend {
  readonly store: IdempotencyStore;
  cleanup?(): Promise<void>;
}

export interface TrpcSuiteOptions {
  /** Shown in the describe title, e.g. `memory` or `prisma:postgresql`. */
  readonly name: string;
  /** Make a store on empty records; called once per adapter. */
  createBackend(): Promise<TrpcSuiteBackend>;
  /** Wraps the suite, e.g. `describeWithDatabase(provider, ...)` to skip when the server is down. */
  readonly describe?: (name: string, fn: () => void) => void;
}

type ClientError = TRPCClientError<TestRouter>;

async function rejection(promise: Promise<unknown>): Promise<ClientError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof TRPCClientError) return error as ClientError;
    throw error;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * The tRPC end-to-end suite: a real @trpc/server over HTTP (standalone adapter, and fetch adapter behind a node
 * http server) and a real @trpc/client, on the store `createBackend` makes. Every store runs all of it.
 */
export function runTrpcEndToEndSuite(options: TrpcSuiteOptions): void {
  const wrap = options.describe ?? describe;
  wrap(`tRPC end to end: ${options.name}`, () => {
    describe.each(ADAPTERS)('%s adapter', (adapter) => {
      let app: TestApp;
      let server: RunningServer | undefined;
      let backend: TrpcSuiteBackend | undefined;

      beforeAll(async () => {
        backend = await options.createBackend();
        app = createTestApp(backend.store);
        server = await startServer(app.router, adapter);
      });
      afterAll(async () => {
        await server?.close();
        await backend?.cleanup?.();
      });
      beforeEach(() => app.reset());

      const client = (clientOptions: TestClientOptions = {}) => createTestClient(server!.url, clientOptions);
      const payment = (amount = 42) => ({ amount, currency: 'EUR' });

      describe('replay', () => {
        it('runs a mutation once per key and replays identical typed data, marked Idempotent-Replayed', async () => {
          // Prepare
          const { trpc, exchanges } = client();
          const key = randomUUID();

          // Act
          const first = await trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });
          const second = await trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });

          // Assess
          expect(app.runs('payments.create')).toBe(1);
          expect(second).toEqual(first);
          expect(second.createdAt).toBeInstanceOf(Date);
          expect(second.createdAt.getTime()).toBe(first.createdAt.getTime());
          expect(typeof second.amountMinor).toBe('bigint');
          expect(second.amountMinor).toBe(4_200n);
          expect(second.ledger).toBeInstanceOf(Map);
          expect(second.ledger.get('debit')).toBe(42);
          expect(second.tags).toBeInstanceOf(Set);
          expect([...second.tags]).toEqual(['card', 'EUR']);
          expect(exchanges.map((e) => e.requestHeaders.get('idempotency-key'))).toEqual([key, key]);
          expect(exchanges.map((e) => e.responseHeaders.get('idempotent-replayed'))).toEqual([null, 'true']);
          expect(app.events.map((e) => e.type)).toEqual(['executed', 'replayed']);
        });

        it('gives every mutation call its own fresh UUID v4 key when the caller passes none', async () => {
          const { trpc, exchanges } = client();

          await trpc.payments.create.mutate(payment());
          await trpc.payments.create.mutate(payment());

          const keys = exchanges.map((e) => e.requestHeaders.get('idempotency-key'));
          expect(keys).toHaveLength(2);
          for (const key of keys) expect(key).toMatch(UUID_V4);
          expect(keys[0]).not.toBe(keys[1]);
          expect(app.runs('payments.create')).toBe(2);
        });

        it('passes queries through untouched, even when they carry a key', async () => {
          const key = randomUUID();
          const { trpc, exchanges } = client({ headers: () => ({ 'Idempotency-Key': key }) });

          await trpc.ping.query({ n: 1 });
          await trpc.ping.query({ n: 1 });

          expect(app.runs('ping')).toBe(2);
          expect(app.store.claims).toBe(0);
          expect(exchanges.every((e) => e.responseHeaders.get('idempotent-replayed') === null)).toBe(true);
        });

        it('leaves a mutation with meta idempotency: false alone', async () => {
          const { trpc } = client();
          const key = randomUUID();

          const first = await trpc.optOut.mutate({ n: 1 }, { context: { idempotencyKey: key } });
          const second = await trpc.optOut.mutate({ n: 1 }, { context: { idempotencyKey: key } });

          expect([first.execution, second.execution]).toEqual([1, 2]);
          expect(app.store.claims).toBe(0);
        });
      });

      describe('concurrent calls with one key', () => {
        it('reject policy: 50 calls run the mutation once; the others get CONFLICT with Retry-After', async () => {
          // Prepare: hold the one execution until the 49 others have been answered.
          const { trpc, exchanges } = client();
          const key = randomUUID();
          const gate = app.hold(key);
          const input = { ...payment(), hold: key };
          const answered = countdown(49);

          // Act
          const calls = Array.from({ length: 50 }, () =>
            trpc.payments.create.mutate(input, { context: { idempotencyKey: key } }).then(
              (value) => ({ ok: true as const, value }),
              (error: ClientError) => {
                answered.tick();
                return { ok: false as const, error };
              },
            ),
          );
          await answered.reached;
          gate.resolve();
          const results = await Promise.all(calls);

          // Assess
          expect(app.runs('payments.create')).toBe(1);
          const successes = results.filter((r) => r.ok);
          const failures = results.flatMap((r) => (r.ok ? [] : [r.error]));
          expect(successes).toHaveLength(1);
          expect(failures).toHaveLength(49);
          for (const error of failures) {
            expect(error.data?.code).toBe('CONFLICT');
            expect(error.data?.httpStatus).toBe(409);
            expect(getIdempotencyErrorCode(error)).toBe('IN_PROGRESS');
          }
          const conflicts = exchanges.filter((e) => e.status === 409);
          expect(conflicts).toHaveLength(49);
          for (const exchange of conflicts) expect(exchange.responseHeaders.get('retry-after')).toBe('1');

          // A retry after the first finished gets its result.
          const retry = await trpc.payments.create.mutate(input, { context: { idempotencyKey: key } });
          expect(retry).toEqual(successes[0]?.value);
          expect(app.runs('payments.create')).toBe(1);
        });

        it('wait policy: 50 calls all receive the result of one execution', async () => {
          // Prepare: hold the execution until all 50 calls have reached the store.
          const { trpc, exchanges } = client();
          const key = randomUUID();
          const gate = app.hold(key);
          const input = { ...payment(), hold: key };
          const claimed = countdown(50);
          const stop = app.store.onClaim(() => claimed.tick());

          // Act
          const calls = Array.from({ length: 50 }, () =>
            trpc.payments.createWaiting.mutate(input, { context: { idempotencyKey: key } }),
          );
          await claimed.reached;
          stop();
          gate.resolve();
          const results = await Promise.all(calls);

          // Assess
          expect(app.runs('payments.createWaiting')).toBe(1);
          for (const result of results) expect(result).toEqual(results[0]);
          expect(results[0]?.createdAt).toBeInstanceOf(Date);
          const replayed = exchanges.filter((e) => e.responseHeaders.get('idempotent-replayed') === 'true');
          expect(replayed).toHaveLength(49);
        });
      });

      describe('key reuse', () => {
        it('refuses the same key with another input: 422 UNPROCESSABLE_CONTENT, nothing runs', async () => {
          const { trpc } = client();
          const key = randomUUID();
          await trpc.payments.create.mutate(payment(10), { context: { idempotencyKey: key } });

          const error = await rejection(trpc.payments.create.mutate(payment(11), { context: { idempotencyKey: key } }));

          expect(error.data?.code).toBe('UNPROCESSABLE_CONTENT');
          expect(error.data?.httpStatus).toBe(422);
          expect(getIdempotencyErrorCode(error)).toBe('FINGERPRINT_MISMATCH');
          expect(error.message).toContain(key);
          expect(app.runs('payments.create')).toBe(1);
        });

        it('refuses the same key on another procedure: 422, nothing runs', async () => {
          const { trpc } = client();
          const key = randomUUID();
          await trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });

          const error = await rejection(trpc.payments.refund.mutate(payment(), { context: { idempotencyKey: key } }));

          expect(error.data?.httpStatus).toBe(422);
          expect(getIdempotencyErrorCode(error)).toBe('FINGERPRINT_MISMATCH');
          expect(error.message).toContain('payments.create');
          expect(app.runs('payments.refund')).toBe(0);
        });
      });

      describe('procedure errors', () => {
        it('replays a final error with the same code and message, without running again', async () => {
          const { trpc, exchanges } = client();
          const key = randomUUID();
          const input = { code: 'BAD_REQUEST' as const, message: 'amount must be positive' };

          const first = await rejection(trpc.fail.mutate(input, { context: { idempotencyKey: key } }));
          const second = await rejection(trpc.fail.mutate(input, { context: { idempotencyKey: key } }));

          expect(app.runs('fail')).toBe(1);
          expect(second.data?.code).toBe('BAD_REQUEST');
          expect(second.message).toBe('amount must be positive');
          expect(second.message).toBe(first.message);
          expect(second.data?.httpStatus).toBe(first.data?.httpStatus);
          // A replayed procedure error is the procedure's own, not an idempotency error.
          expect(getIdempotencyErrorCode(second)).toBeUndefined();
          expect(exchanges.map((e) => e.responseHeaders.get('idempotent-replayed'))).toEqual([null, 'true']);
        });

        it.each([
          ['INTERNAL_SERVER_ERROR', 'INTERNAL_SERVER_ERROR'],
          ['PLAIN', 'INTERNAL_SERVER_ERROR'],
          ['UNAUTHORIZED', 'UNAUTHORIZED'],
        ] as const)('releases the key after a retryable %s so a retry runs again', async (code, expected) => {
          const { trpc, exchanges } = client();
          const key = randomUUID();
          const input = { code, message: `transient ${code}` };

          const first = await rejection(trpc.fail.mutate(input, { context: { idempotencyKey: key } }));
          const second = await rejection(trpc.fail.mutate(input, { context: { idempotencyKey: key } }));

          expect(app.runs('fail')).toBe(2);
          expect([first.data?.code, second.data?.code]).toEqual([expected, expected]);
          expect(exchanges.every((e) => e.responseHeaders.get('idempotent-replayed') === null)).toBe(true);
          expect(app.events.filter((e) => e.type === 'released')).toHaveLength(2);
        });
      });

      describe('missing and invalid keys', () => {
        it('answers 400 KEY_MISSING where meta requires a key, and neither runs nor stores anything', async () => {
          const { trpc } = client({ withoutLink: true });

          const error = await rejection(trpc.requireKey.mutate({ n: 1 }));

          expect(error.data?.code).toBe('BAD_REQUEST');
          expect(error.data?.httpStatus).toBe(400);
          expect(getIdempotencyErrorCode(error)).toBe('KEY_MISSING');
          expect(error.message).toContain('requireKey');
          expect(app.runs('requireKey')).toBe(0);
          expect(app.store.claims).toBe(0);
        });

        it.each([
          ['empty', ''],
          ['256 characters long', 'k'.repeat(256)],
          ['with a control character (tab)', 'order\t42'],
        ])('answers 400 KEY_INVALID for a key %s, and neither runs nor stores anything', async (_, key) => {
          const { trpc } = client();

          const error = await rejection(trpc.requireKey.mutate({ n: 1 }, { context: { idempotencyKey: key } }));

          expect(error.data?.httpStatus).toBe(400);
          expect(getIdempotencyErrorCode(error)).toBe('KEY_INVALID');
          expect(app.runs('requireKey')).toBe(0);
          // Records are only ever created by a claim: no claim, nothing stored.
          expect(app.store.claims).toBe(0);
        });

        it('runs a mutation without a key normally where no key is required', async () => {
          const { trpc } = client({ withoutLink: true });

          await trpc.payments.create.mutate(payment());
          await trpc.payments.create.mutate(payment());

          expect(app.runs('payments.create')).toBe(2);
          expect(app.store.claims).toBe(0);
        });
      });

      describe('scope', () => {
        it("never replays tenant A's result to tenant B, even with the same key and input", async () => {
          const a = client({ tenant: 'tenant-a' });
          const b = client({ tenant: 'tenant-b' });
          const key = randomUUID();

          const fromA = await a.trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });
          const fromB = await b.trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });
          const againA = await a.trpc.payments.create.mutate(payment(), { context: { idempotencyKey: key } });

          expect(app.runs('payments.create')).toBe(2);
          expect(fromA.tenant).toBe('tenant-a');
          expect(fromB.tenant).toBe('tenant-b');
          expect(fromB.execution).not.toBe(fromA.execution);
          expect(b.exchanges[0]?.responseHeaders.get('idempotent-replayed')).toBeNull();
          expect(againA).toEqual(fromA);
        });
      });

      describe('retries through retryLink', () => {
        it('sends one key on every attempt after a retryable failure, and the effect happens once', async () => {
          const { trpc, exchanges } = client({ retryAttempts: 3 });
          const order = randomUUID();
          app.failNext(order, 1);

          const result = await trpc.flaky.mutate({ order });

          expect(result.charged).toBe(1);
          expect(exchanges.map((e) => e.status)).toEqual([500, 200]);
          const keys = exchanges.map((e) => e.requestHeaders.get('idempotency-key'));
          expect(keys[0]).toMatch(UUID_V4);
          expect(keys[1]).toBe(keys[0]);
          expect(app.runs('flaky')).toBe(2);
          expect(app.charges.get(order)).toBe(1);
        });

        it('answers a retry whose first response was lost with the stored result, not a second effect', async () => {
          const { trpc, exchanges } = client({
            retryAttempts: 3,
            onResponse: (_, attempt) => {
              if (attempt === 1) throw new TypeError('fetch failed: socket hang up');
            },
          });
          const order = randomUUID();

          const result = await trpc.flaky.mutate({ order });

          expect(result).toEqual({ order, charged: 1, at: new Date(1_764_763_200_000) });
          expect(exchanges).toHaveLength(2);
          expect(exchanges[1]?.requestHeaders.get('idempotency-key')).toBe(
            exchanges[0]?.requestHeaders.get('idempotency-key'),
          );
          expect(exchanges[1]?.responseHeaders.get('idempotent-replayed')).toBe('true');
          expect(app.runs('flaky')).toBe(1);
          expect(app.charges.get(order)).toBe(1);
        });
      });

      describe('batching (httpBatchLink)', () => {
        it('gives each mutation of a batch its own key and its own record', async () => {
          const { trpc, exchanges } = client({ link: 'batch' });
          const keys = [randomUUID(), randomUUID(), randomUUID()] as const;
          const batch = () =>
            Promise.all([
              trpc.payments.create.mutate(payment(1), { context: { idempotencyKey: keys[0] } }),
              trpc.payments.create.mutate(payment(2), { context: { idempotencyKey: keys[1] } }),
              trpc.payments.refund.mutate(payment(3), { context: { idempotencyKey: keys[2] } }),
            ]);

          const first = await batch();
          const second = await batch();

          expect(exchanges).toHaveLength(2);
          expect(exchanges[0]?.requestHeaders.get('idempotency-key')).toBeNull();
          expect(JSON.parse(exchanges[0]?.requestHeaders.get('idempotency-keys') ?? '')).toEqual(keys);
          expect(first.map((r) => r.ledger.get('debit'))).toEqual([1, 2, 3]);
          expect(second).toEqual(first);
          expect(app.runs('payments.create')).toBe(2);
          expect(app.runs('payments.refund')).toBe(1);
          expect(exchanges[0]?.responseHeaders.get('idempotent-replayed-indexes')).toBeNull();
          expect(exchanges[1]?.responseHeaders.get('idempotent-replayed-indexes')).toBe('0,1,2');
          expect(exchanges[1]?.responseHeaders.get('idempotent-replayed')).toBeNull();
        });

        it('runs two identical mutations of one batch once per key (a shared key would run one)', async () => {
          const { trpc, exchanges } = client({ link: 'batch' });
          const replayedKey = randomUUID();
          await trpc.payments.create.mutate(payment(7), { context: { idempotencyKey: replayedKey } });

          const [a, b, c] = await Promise.all([
            trpc.payments.create.mutate(payment(7)),
            trpc.payments.create.mutate(payment(7), { context: { idempotencyKey: replayedKey } }),
            trpc.payments.create.mutate(payment(7)),
          ]);

          expect(exchanges).toHaveLength(2);
          expect(app.runs('payments.create')).toBe(3);
          expect(new Set([a.id, b.id, c.id]).size).toBe(3);
          expect(b.execution).toBe(1);
          expect(exchanges[1]?.responseHeaders.get('idempotent-replayed-indexes')).toBe('1');
        });

        it.each([
          ['not JSON', { 'Idempotency-Keys': '{oops' }],
          ['an object, not an array', { 'Idempotency-Keys': '{"0":"k0","1":"k1"}' }],
          ['a number entry', { 'Idempotency-Keys': '["k0",1]' }],
          ['one key twice', { 'Idempotency-Keys': '["same","same"]' }],
          ['fewer entries than calls', { 'Idempotency-Keys': '["k0"]' }],
          ['a single Idempotency-Key on a batch', { 'Idempotency-Key': 'k0' }],
        ])('refuses a batch whose keys header is malformed (%s) with 400, running nothing', async (_, headers) => {
          const { trpc, exchanges } = client({ link: 'batch', headers: () => headers });

          const results = await Promise.allSettled([
            trpc.payments.create.mutate(payment(1)),
            trpc.payments.create.mutate(payment(2)),
          ]);

          expect(exchanges).toHaveLength(1);
          for (const result of results) {
            expect(result.status).toBe('rejected');
            const error = (result as PromiseRejectedResult).reason as ClientError;
            expect(error.data?.httpStatus).toBe(400);
            expect(getIdempotencyErrorCode(error)).toBe('KEY_INVALID');
          }
          expect(app.runs('payments.create')).toBe(0);
          expect(app.store.claims).toBe(0);
        });

        it('validates each key of a batch on its own (control characters and non-ASCII arrive escaped)', async () => {
          const { trpc, exchanges } = client({ link: 'batch' });

          const [control, unicode, valid] = await Promise.allSettled([
            trpc.payments.create.mutate(payment(1), { context: { idempotencyKey: 'order\u000142' } }),
            trpc.payments.create.mutate(payment(2), { context: { idempotencyKey: 'заказ-42' } }),
            trpc.payments.create.mutate(payment(3), { context: { idempotencyKey: randomUUID() } }),
          ]);

          expect(exchanges).toHaveLength(1);
          for (const result of [control, unicode]) {
            expect(result?.status).toBe('rejected');
            expect(getIdempotencyErrorCode((result as PromiseRejectedResult).reason)).toBe('KEY_INVALID');
          }
          expect(valid?.status).toBe('fulfilled');
          expect(app.runs('payments.create')).toBe(1);
        });

        it('refuses Idempotency-Keys on a non-batched request with 400', async () => {
          const { trpc } = client({ headers: () => ({ 'Idempotency-Keys': '["k0"]' }) });

          const error = await rejection(trpc.payments.create.mutate(payment()));

          expect(error.data?.httpStatus).toBe(400);
          expect(getIdempotencyErrorCode(error)).toBe('KEY_INVALID');
          expect(app.runs('payments.create')).toBe(0);
        });
      });

      describe('results too large to store', () => {
        it('gives the first caller its result; a retry gets INTERNAL_SERVER_ERROR RESULT_NOT_STORABLE', async () => {
          const { trpc } = client();
          const key = randomUUID();

          const first = await trpc.big.mutate({ size: 5_000 }, { context: { idempotencyKey: key } });
          const error = await rejection(trpc.big.mutate({ size: 5_000 }, { context: { idempotencyKey: key } }));

          expect(first.blob).toHaveLength(5_000);
          expect(error.data?.code).toBe('INTERNAL_SERVER_ERROR');
          expect(getIdempotencyErrorCode(error)).toBe('RESULT_NOT_STORABLE');
          expect(app.runs('big')).toBe(1);
          expect(app.events.map((e) => e.type)).toContain('not-storable');
        });
      });
    });
  });
}
