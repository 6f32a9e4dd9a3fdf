// Regression: a repeated Idempotency-Key header was accepted as one merged key.
//
// Node's http server joins repeated headers into one value ("k1, k2"), which is printable ASCII and passed as a
// third key, so the middleware's own check for a header sent twice never fired. A proxy or client library
// that adds the header a second time on some attempts would then change the key between retries and run the
// procedure twice. Found by the reliability fuzz run (test/reliability/fuzz.test.ts).
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../src/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { type RunningServer, startServer } from './support/http.js';

function post(url: string, keys: string[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/payments.create`,
      // An array value makes node send one header line per entry.
      { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': keys } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ json: { amount: 5, currency: 'EUR' } }));
  });
}

describe('a repeated Idempotency-Key header (standalone adapter)', () => {
  let app: TestApp;
  let server: RunningServer;

  beforeAll(async () => {
    app = createTestApp(createMemoryStore());
    server = await startServer(app.router, 'standalone');
  });

  afterAll(() => server.close());

  it.each([
    ['two different keys', ['key-a', 'key-b']],
    ['the same key twice', ['key-c', 'key-c']],
  ])('is refused with 400 KEY_INVALID and runs nothing (%s)', async (_, keys) => {
    const [runs, claims] = [app.runs('payments.create'), app.store.claims];

    const answer = await post(server.url, keys);

    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).error.json.data.idempotency.code).toBe('KEY_INVALID');
    expect(app.runs('payments.create')).toBe(runs);
    expect(app.store.claims).toBe(claims);
  });

  it('still accepts one header whose key contains a comma', async () => {
    const before = app.runs('payments.create');

    const answer = await post(server.url, ['order 42, attempt 1']);

    expect(answer.status).toBe(200);
    expect(app.runs('payments.create')).toBe(before + 1);
  });
});
