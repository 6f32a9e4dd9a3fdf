import type { Metadata } from '@grpc/grpc-js';
import { describeValue } from '../core/errors.js';

// How a handler finds the transaction the interceptor opened for its call.
//
// The interceptor opens the transaction, then passes the request message on with `next(message)`; grpc-js
// starts a unary handler when the half-close follows. An AsyncLocalStorage context entered around `next(message)`
// reaches the handler only when the half-close had already arrived: if the client's END_STREAM comes after the
// interceptor passed the message on, grpc-js starts the handler from the HTTP/2 stream's 'end' event, outside
// that context (test/transactional/grpc-accessor.test.ts shows both cases with a raw HTTP/2 client). So the
// transaction is keyed instead by objects grpc-js hands unchanged from the interceptor to the handler: the
// request metadata (`call.metadata`) and the request message (`call.request`).

interface OpenTransaction {
  readonly client: unknown;
  readonly path: string;
  open: boolean;
}

const transactions = new WeakMap<object, OpenTransaction>();

/**
 * The part of a handler's call object that {@link idempotencyTransaction} reads: grpc-js's `ServerUnaryCall`
 * fits (and `ServerWritableStream`, though transactional mode is for unary methods only).
 *
 * @example
 * ```ts
 * function createPayment(call: grpc.ServerUnaryCall<Request, Payment>, callback: grpc.sendUnaryData<Payment>) {
 *   const tx = idempotencyTransaction<Tx>(call); // call fits IdempotencyGrpcHandlerCall
 * }
 * ```
 */
export interface IdempotencyGrpcHandlerCall {
  readonly metadata: Metadata;
  readonly request?: unknown;
  getPath?(): string;
}

/**
 * Open a call's transaction for its handler (internal to the interceptor): registered under the request metadata
 * and message objects the handler will see. Returns a function that closes it once the transaction ended.
 *
 * @example
 * ```ts
 * const close = openTransaction(tx, path, [requestMetadata, message]);
 * try { next(message); } finally { close(); }
 * ```
 */
export function openTransaction(client: unknown, path: string, keys: readonly unknown[]): () => void {
  const entry: OpenTransaction = { client, path, open: true };
  for (const key of keys) {
    if ((typeof key === 'object' && key !== null) || typeof key === 'function') transactions.set(key, entry);
  }
  return () => {
    entry.open = false;
  };
}

function lookup(call: IdempotencyGrpcHandlerCall): OpenTransaction | undefined {
  for (const key of [call.metadata, call.request]) {
    if ((typeof key === 'object' && key !== null) || typeof key === 'function') {
      const entry = transactions.get(key);
      if (entry) return entry;
    }
  }
  return undefined;
}

/**
 * Inside a unary handler of a method in transactional mode (`methods: { [path]: { transaction: true } }` on
 * {@link idempotencyInterceptor}), the transaction client of this call: for the Prisma store, the `tx` of
 * Prisma's interactive transaction. Every write that must happen exactly once goes through it, **before** the
 * handler answers: the handler's writes and the idempotency record then commit together or not at all, and the
 * response reaches the client only after the commit.
 *
 * Pass the handler's own `call`. The type parameter is your transaction client type; for Prisma use
 * `IdempotencyPrismaTransactionClientOf<PrismaClient>` from `rpc-idempotency/prisma` (or
 * `Prisma.TransactionClient`). Throws an `Error` saying what to change when the call has no transaction (the
 * method is not in transactional mode, the interceptor is missing, or the transaction already ended). Calls
 * without a key of a transactional method run in a transaction too.
 *
 * It works by identity, not by async context: see the note at the top of this file for why AsyncLocalStorage
 * is not reliable here. Interceptors placed after `idempotencyInterceptor` must pass the request metadata or
 * message object on unchanged (put `idempotencyInterceptor` last if one replaces both).
 *
 * @param call the handler's call object
 * @returns the transaction client
 * @example
 * ```ts
 * import type { IdempotencyPrismaTransactionClientOf } from 'rpc-idempotency/prisma';
 * type Tx = IdempotencyPrismaTransactionClientOf<PrismaClient>;
 *
 * server.addService(replayableService(Payments.service), {
 *   createPayment(call, callback) {
 *     const tx = idempotencyTransaction<Tx>(call);
 *     tx.payment
 *       .create({ data: { amount: Number(call.request.amount) } })
 *       .then((payment) => callback(null, toMessage(payment)), (error) => callback(error));
 *   },
 * });
 * ```
 */
export function idempotencyTransaction<TTransaction = unknown>(call: IdempotencyGrpcHandlerCall): TTransaction {
  if (typeof call !== 'object' || call === null) {
    throw new TypeError(
      `idempotencyTransaction: expected the handler's call object (grpc.ServerUnaryCall), received ${describeValue(call)}.`,
    );
  }
  const entry = lookup(call);
  const path = entry?.path ?? (typeof call.getPath === 'function' ? call.getPath() : 'this method');
  if (entry === undefined) {
    throw new Error(
      `idempotencyTransaction: ${path} has no idempotency transaction: expected the idempotency interceptor to run this call in transactional mode, but it did not open a transaction for it. Set methods['${path}'] = { transaction: true } in idempotencyInterceptor({ ... }), register the interceptor with new grpc.Server({ interceptors: [...] }), and pass the handler's own call. Interceptors after idempotencyInterceptor must not replace both the request metadata and the message.`,
    );
  }
  if (!entry.open) {
    throw new Error(
      `idempotencyTransaction: the transaction of this call to ${path} already ended (committed or rolled back). Use the transaction client only while the handler runs, before it answers (callback or end).`,
    );
  }
  return entry.client as TTransaction;
}
