import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdempotencyStore } from '../../src/index.js';
import { createPrismaStore } from '../../src/stores/prisma/index.js';
import { getIdempotencyErrorCode } from '../../src/trpc/client.js';
import { createTestApp, type TestApp, type TestRouter } from './support/app.js';
import { ADAPTERS, createTestClient, type RunningServer, startServer } from './support/http.js';

/** A store whose every operation fails as a database that refuses connections would. */
function refusingStore(): IdempotencyStore {
  const refuse = async (): Promise<never> => {
    throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  };
  return {
    name: 'refusing',
    claim: refuse,
    get: refuse,
    complete: refuse,
    release: refuse,
    renew: refuse,
    purgeExpired: refuse,
  };
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound once, then released). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A real Prisma store on a PostgreSQL client pointed at a port where no server listens. */
async function deadPostgresStore(): Promise<{ store: IdempotencyStore; close(): Promise<void> }> {
  const [{ PrismaPg }, { PrismaClient }] = await Promise.all([
    import('@prisma/adapter-pg'),
    import('../../prisma/generated/postgresql/client.js'),
  ]);
  const port = await deadPort();
  const prisma = new PrismaClient({
    adapter: new PrismaPg({
      connectionString: `postgresql://postgres@127.0.0.1:${port}/test`,
      connectionTimeoutMillis: 2_000,
    }),
  });
  return { store: createPrismaStore(prisma), close: () => prisma.$disconnect().catch(() => undefined) };
}

const backends = [
  ['a store whose methods throw', async () => ({ store: refusingStore(), close: async () => undefined })],
  ['a Prisma store on a dead PostgreSQL port', deadPostgresStore],
] as const;

describe.each(backends)('store unavailable: %s', (_, makeBackend) => {
  describe.each(ADAPTERS)('%s adapter', (adapter) => {
    let app: TestApp;
    let server: RunningServer;
    let close: () => Promise<void>;

    beforeAll(async () => {
      const backend = await makeBackend();
      close = backend.close;
      app = createTestApp(backend.store);
      server = await startServer(app.router, adapter);
    });
    afterAll(async () => {
      await server?.close();
      await close?.();
    });

    it('answers 503 SERVICE_UNAVAILABLE and does not run the mutation (fail closed)', async () => {
      const { trpc, exchanges } = createTestClient(server.url);

      const error = await trpc.payments.create
        .mutate({ amount: 1, currency: 'EUR' }, { context: { idempotencyKey: randomUUID() } })
        .then(
          () => undefined,
          (cause: unknown) => cause as TRPCClientError<TestRouter>,
        );

      expect(error).toBeInstanceOf(TRPCClientError);
      expect(error?.data?.code).toBe('SERVICE_UNAVAILABLE');
      expect(exchanges[0]?.status).toBe(503);
      expect(getIdempotencyErrorCode(error)).toBe('STORE_UNAVAILABLE');
      expect(error?.message).toContain('did not run');
      expect(app.runs('payments.create')).toBe(0);
      expect(app.events.map((e) => e.type)).toEqual(['store-error']);
    });

    it('still runs mutations that carry no key (the store is not consulted)', async () => {
      const { trpc } = createTestClient(server.url, { withoutLink: true });
      app.reset();

      await trpc.payments.create.mutate({ amount: 1, currency: 'EUR' });

      expect(app.runs('payments.create')).toBe(1);
    });
  });
});
