import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createTRPCClient,
  httpBatchLink,
  httpBatchStreamLink,
  httpLink,
  type Operation,
  retryLink,
  type TRPCClientError,
  type TRPCLink,
} from '@trpc/client';
import type { AnyTRPCRouter } from '@trpc/server';
import { fetchRequestHandler } from '@trpc/server/adapters/fetch';
import { incomingMessageToRequest } from '@trpc/server/adapters/node-http';
import { createHTTPServer } from '@trpc/server/adapters/standalone';
import superjson from 'superjson';
import { idempotencyHeaders, idempotencyLink } from '../../../src/trpc/client.js';
import type { TestContext, TestRouter } from './app.js';

export type Adapter = 'standalone' | 'fetch';
export const ADAPTERS: readonly Adapter[] = ['standalone', 'fetch'];

export interface RunningServer {
  readonly url: string;
  close(): Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

function closer(server: Server): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
}

const tenantOf = (value: string | string[] | null | undefined) =>
  (Array.isArray(value) ? value[0] : value) ?? 'tenant-a';

/**
 * Serve `router` on 127.0.0.1:0: through the standalone adapter (ctx `{ req, res }`), or through the fetch
 * adapter behind a plain node http server (ctx `{ req: Request, resHeaders, info }`).
 */
export async function startServer(router: AnyTRPCRouter, adapter: Adapter): Promise<RunningServer> {
  if (adapter === 'standalone') {
    const server = createHTTPServer({
      router,
      createContext: ({ req, res }): TestContext => ({ req, res, tenant: tenantOf(req.headers['x-tenant']) }),
    });
    const port = await listen(server);
    return { url: `http://127.0.0.1:${port}`, close: closer(server) };
  }
  const server = createServer(async (req, res) => {
    try {
      const request = incomingMessageToRequest(req, res, { maxBodySize: null });
      const response = await fetchRequestHandler({
        endpoint: '/trpc',
        req: request,
        router,
        createContext: ({ req: fetchReq, resHeaders, info }): TestContext => ({
          req: fetchReq,
          resHeaders,
          info,
          tenant: tenantOf(fetchReq.headers.get('x-tenant')),
        }),
      });
      res.writeHead(response.status, [...response.headers].flat());
      if (response.body) {
        for await (const chunk of response.body) res.write(chunk);
      }
      res.end();
    } catch (error) {
      res.statusCode = 500;
      res.end(String(error));
    }
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}/trpc`, close: closer(server) };
}

/** One HTTP exchange as the client's fetch saw it. */
export interface Exchange {
  readonly url: string;
  readonly requestHeaders: Headers;
  readonly status: number;
  readonly responseHeaders: Headers;
}

export interface TestClientOptions {
  /** The terminating link. @default 'http' */
  readonly link?: 'http' | 'batch' | 'stream';
  readonly tenant?: string;
  /** Put `retryLink` after `idempotencyLink`, retrying up to this many attempts on 5xx and network errors. */
  readonly retryAttempts?: number;
  /** Replace the idempotency headers (to send malformed ones). */
  readonly headers?: (opts: { op: Operation } | { opList: readonly Operation[] }) => Record<string, string>;
  /** Called with each response before the client sees it; throw to simulate a lost response. */
  readonly onResponse?: (exchange: Exchange, attempt: number) => void;
  /** Called once the response headers of a request arrived. */
  readonly onHeaders?: (exchange: Exchange) => void;
  /** Leave idempotencyLink out (for tests that send headers by hand). */
  readonly withoutLink?: boolean;
}

/** A real tRPC client with idempotencyLink (+ retryLink) and a fetch that records every exchange. */
export function createTestClient(url: string, options: TestClientOptions = {}) {
  const exchanges: Exchange[] = [];
  const tenant = options.tenant ?? 'tenant-a';
  // Typed loosely: tRPC's FetchEsque init type and Node's RequestInit disagree under exactOptionalPropertyTypes.
  const recordingFetch = async (input: string | URL, init?: { headers?: unknown }) => {
    const response = await fetch(input, init as RequestInit);
    const exchange: Exchange = {
      url: String(input),
      requestHeaders: new Headers(init?.headers as ConstructorParameters<typeof Headers>[0]),
      status: response.status,
      responseHeaders: response.headers,
    };
    exchanges.push(exchange);
    options.onHeaders?.(exchange);
    options.onResponse?.(exchange, exchanges.length);
    return response;
  };
  const headers = (opts: { op: Operation } | { opList: readonly Operation[] }) => ({
    'x-tenant': tenant,
    ...(options.headers ? options.headers(opts) : idempotencyHeaders(opts)),
  });
  const common = { url, transformer: superjson, fetch: recordingFetch } as const;
  const terminating: TRPCLink<TestRouter> =
    options.link === 'batch'
      ? httpBatchLink({ ...common, headers })
      : options.link === 'stream'
        ? httpBatchStreamLink({ ...common, headers })
        : httpLink({ ...common, headers });
  const links: TRPCLink<TestRouter>[] = [];
  if (!options.withoutLink) links.push(idempotencyLink());
  if (options.retryAttempts !== undefined) {
    const attempts = options.retryAttempts;
    links.push(
      retryLink({
        retry: ({ attempts: made, error }: { attempts: number; error: TRPCClientError<TestRouter> }) =>
          made < attempts && ((error.data as { httpStatus?: number } | undefined)?.httpStatus ?? 599) >= 500,
      }),
    );
  }
  links.push(terminating);
  const trpc = createTRPCClient<TestRouter>({ links });
  return { trpc, exchanges };
}
