import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../src/index.js';
import { deferred } from '../support/deferred.js';
import { createTestApp, type TestApp } from './support/app.js';
import { ADAPTERS, createTestClient, type RunningServer, startServer } from './support/http.js';

// httpBatchStreamLink: the response headers go out before the calls finish, so a replay that resolves after
// them cannot add Idempotent-Replayed-Indexes. Setting it then would throw (standalone: ERR_HTTP_HEADERS_SENT)
// or be dropped (fetch); the middleware must skip it silently and the stream must still deliver every result.
describe.each(ADAPTERS)('streamed batches (httpBatchStreamLink), %s adapter', (adapter) => {
  let app: TestApp;
  let server: RunningServer;
  /** Replays wait on this before their scope is known, i.e. before they touch the store or headers. */
  let headersSent = deferred();

  beforeAll(async () => {
    app = createTestApp(createMemoryStore(), {
      scope: async (ctx, info) => {
        if (info.batchIndex === 1) await headersSent.promise;
        return ctx.tenant;
      },
    });
    server = await startServer(app.router, adapter);
  });
  afterAll(() => server.close());

  it('replays a call whose outcome arrives after the headers were sent, without breaking the stream', async () => {
    // Prepare: store a result under `replayedKey` with a non-streamed call.
    const replayedKey = randomUUID();
    await createTestClient(server.url).trpc.payments.create.mutate(
      { amount: 5, currency: 'EUR' },
      { context: { idempotencyKey: replayedKey } },
    );
    headersSent = deferred();
    const { trpc, exchanges } = createTestClient(server.url, {
      link: 'stream',
      onHeaders: () => headersSent.resolve(),
    });

    // Act: call 0 runs fresh, call 1 replays once the response has started streaming.
    const [fresh, replayed] = await Promise.all([
      trpc.payments.create.mutate({ amount: 6, currency: 'EUR' }, { context: { idempotencyKey: randomUUID() } }),
      trpc.payments.create.mutate({ amount: 5, currency: 'EUR' }, { context: { idempotencyKey: replayedKey } }),
    ]);

    // Assess
    expect(exchanges).toHaveLength(1);
    expect(exchanges[0]?.responseHeaders.get('transfer-encoding')).toBe('chunked');
    expect(exchanges[0]?.responseHeaders.get('idempotent-replayed-indexes')).toBeNull();
    expect(fresh.ledger.get('debit')).toBe(6);
    expect(replayed.execution).toBe(1);
    expect(replayed.createdAt).toBeInstanceOf(Date);
    expect(app.runs('payments.create')).toBe(2);
    expect(app.events.filter((e) => e.type === 'replayed')).toHaveLength(1);
  });
});
