import type { IncomingMessage, ServerResponse } from 'node:http';
import { initTRPC, type TRPC_ERROR_CODE_KEY, TRPCError } from '@trpc/server';
import superjson from 'superjson';
import type { IdempotencyEvent, IdempotencyStore } from '../../../src/index.js';
import {
  type IdempotencyTrpcMeta,
  type IdempotencyTrpcMiddlewareOptions,
  idempotencyErrorData,
  idempotencyMiddleware,
} from '../../../src/trpc/index.js';
import { type Deferred, deferred } from '../../support/deferred.js';

/** What both adapters' createContext return: the usual shapes (`req` + `res`, or `req` + `resHeaders`). */
export interface TestContext {
  req: IncomingMessage | Request;
  res?: ServerResponse;
  resHeaders?: Headers;
  info?: unknown;
  tenant: string;
}

export interface PaymentInput {
  amount: number;
  currency: string;
  /** Name of a gate (see `TestApp.hold`) the resolver waits on before returning. */
  hold?: string;
}

export interface Execution {
  path: string;
  tenant: string;
  input: unknown;
}

/** A store wrapper that reports every claim, so a test can wait until N callers have reached the store. */
export interface ObservedStore extends IdempotencyStore {
  /** How many claims reached the store so far. */
  readonly claims: number;
  resetClaims(): void;
  onClaim(listener: () => void): () => void;
}

export function observeStore(inner: IdempotencyStore): ObservedStore {
  const listeners = new Set<() => void>();
  let claims = 0;
  return {
    name: inner.name,
    get claims() {
      return claims;
    },
    resetClaims() {
      claims = 0;
    },
    async claim(input) {
      claims++;
      const result = await inner.claim(input);
      for (const listener of listeners) listener();
      return result;
    },
    get: (scope, key) => inner.get(scope, key),
    complete: (input) => inner.complete(input),
    release: (scope, key, token) => inner.release(scope, key, token),
    renew: (scope, key, token, lockedUntil) => inner.renew(scope, key, token, lockedUntil),
    purgeExpired: (input) => inner.purgeExpired(input),
    onClaim(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

const asPayment = (value: unknown): PaymentInput => {
  const input = value as PaymentInput;
  if (typeof input?.amount !== 'number' || typeof input.currency !== 'string') {
    throw new Error(`expected { amount: number, currency: string }, received ${JSON.stringify(value)}`);
  }
  return input;
};

/** Build the router the end-to-end tests run against, on `store`. */
export function createTestApp(
  store: IdempotencyStore,
  middlewareOptions: Partial<IdempotencyTrpcMiddlewareOptions<TestContext>> = {},
) {
  const observed = observeStore(store);
  const executions: Execution[] = [];
  const events: IdempotencyEvent[] = [];
  const gates = new Map<string, Deferred>();
  /** Per order id: how many more attempts of `flaky` fail before one succeeds. */
  const failuresLeft = new Map<string, number>();
  /** Effects of `flaky` (applied only on success): order id -> times charged. */
  const charges = new Map<string, number>();

  const t = initTRPC
    .context<TestContext>()
    .meta<IdempotencyTrpcMeta>()
    .create({
      transformer: superjson,
      errorFormatter: ({ shape, error }) => ({
        ...shape,
        data: { ...shape.data, idempotency: idempotencyErrorData(error) },
      }),
    });

  const idempotent = t.procedure.use(
    idempotencyMiddleware<TestContext>({
      store: observed,
      transformer: superjson,
      scope: (ctx) => ctx.tenant,
      onEvent: (event) => events.push(event),
      ...middlewareOptions,
    }),
  );

  const record = (path: string, tenant: string, input: unknown) => {
    executions.push({ path, tenant, input });
    return executions.filter((execution) => execution.path === path).length;
  };

  const pay = async (path: string, tenant: string, raw: unknown) => {
    const input = asPayment(raw);
    const n = record(path, tenant, input);
    if (input.hold !== undefined) await gates.get(input.hold)?.promise;
    return {
      id: `pay_${n}`,
      tenant,
      execution: n,
      amountMinor: BigInt(input.amount) * 100n,
      createdAt: new Date(1_764_763_200_000 + n),
      tags: new Set(['card', input.currency]),
      ledger: new Map<string, number>([['debit', input.amount]]),
    };
  };

  const router = t.router({
    ping: idempotent
      .input((v) => v as { n: number })
      .query(({ input, ctx }) => {
        record('ping', ctx.tenant, input);
        return { pong: input.n };
      }),
    payments: t.router({
      create: idempotent.input(asPayment).mutation(({ input, ctx }) => pay('payments.create', ctx.tenant, input)),
      refund: idempotent.input(asPayment).mutation(({ input, ctx }) => pay('payments.refund', ctx.tenant, input)),
      createWaiting: idempotent
        .meta({ idempotency: { inFlight: { wait: true, timeoutMs: 20_000 } } })
        .input(asPayment)
        .mutation(({ input, ctx }) => pay('payments.createWaiting', ctx.tenant, input)),
    }),
    fail: idempotent
      .input((v) => v as { code: TRPC_ERROR_CODE_KEY | 'PLAIN'; message: string })
      .mutation(({ input, ctx }) => {
        record('fail', ctx.tenant, input);
        if (input.code === 'PLAIN') throw new Error(input.message);
        throw new TRPCError({ code: input.code, message: input.message, cause: new Error('internal detail') });
      }),
    flaky: idempotent
      .input((v) => v as { order: string })
      .mutation(({ input, ctx }) => {
        record('flaky', ctx.tenant, input);
        const left = failuresLeft.get(input.order) ?? 0;
        if (left > 0) {
          failuresLeft.set(input.order, left - 1);
          throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'database hiccup' });
        }
        const charged = (charges.get(input.order) ?? 0) + 1;
        charges.set(input.order, charged);
        return { order: input.order, charged, at: new Date(1_764_763_200_000) };
      }),
    requireKey: idempotent
      .meta({ idempotency: { required: true } })
      .input((v) => v as { n: number })
      .mutation(({ input, ctx }) => {
        record('requireKey', ctx.tenant, input);
        return { n: input.n };
      }),
    optOut: idempotent
      .meta({ idempotency: false })
      .input((v) => v as { n: number })
      .mutation(({ input, ctx }) => ({ n: input.n, execution: record('optOut', ctx.tenant, input) })),
    big: idempotent
      .meta({ idempotency: { maxResultBytes: 2_048 } })
      .input((v) => v as { size: number })
      .mutation(({ input, ctx }) => {
        record('big', ctx.tenant, input);
        return { blob: 'x'.repeat(input.size) };
      }),
  });

  return {
    router,
    store: observed,
    executions,
    events,
    charges,
    /** How many times the resolver of `path` ran. */
    runs: (path: string) => executions.filter((execution) => execution.path === path).length,
    /** Create a gate; mutations whose input names it wait until it is opened. */
    hold(name: string): Deferred {
      const gate = deferred();
      gates.set(name, gate);
      return gate;
    },
    failNext(order: string, times: number) {
      failuresLeft.set(order, times);
    },
    reset() {
      executions.length = 0;
      events.length = 0;
      observed.resetClaims();
    },
  };
}

export type TestApp = ReturnType<typeof createTestApp>;
export type TestRouter = TestApp['router'];
