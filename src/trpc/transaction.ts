import { describeValue } from '../core/errors.js';

/**
 * What {@link idempotencyMiddleware} adds to the context of every procedure built on it, as `ctx.idempotency`.
 *
 * `tx` is the transaction client of the call in transactional mode (`.meta({ idempotency: { transaction: true }
 * })`): for the Prisma store, the `tx` of Prisma's interactive transaction, typed as your client's transaction
 * client. Every write that must happen exactly once goes through it; it commits together with the idempotency
 * record or not at all. It is `undefined` for queries, for procedures that are not in transactional mode, and
 * for procedures that opted out (`idempotency: false`); {@link requireTransaction} returns it or says why not.
 *
 * @example
 * ```ts
 * createPayment: idempotent
 *   .meta({ idempotency: { transaction: true } })
 *   .mutation(async ({ ctx, input }) => {
 *     const tx = requireTransaction(ctx); // Prisma.TransactionClient
 *     return tx.payment.create({ data: { amount: input.amount, idempotencyKey: ctx.idempotency.key ?? null } });
 *   }),
 * ```
 */
export interface IdempotencyTrpcContext<TTransaction = unknown> {
  /** The procedure's path, e.g. `payments.create`. */
  readonly procedure: string;
  /** The call's validated idempotency key; `undefined` when it sent none (or is not handled: queries, opt-outs). */
  readonly key: string | undefined;
  /** The transaction client in transactional mode, else `undefined`. */
  readonly tx: TTransaction | undefined;
}

/**
 * The context keys {@link idempotencyMiddleware} adds: `{ idempotency }`.
 *
 * @example
 * ```ts
 * type Ctx = Context & IdempotencyTrpcContextOverrides<Prisma.TransactionClient>;
 * ```
 */
export interface IdempotencyTrpcContextOverrides<TTransaction = unknown> {
  readonly idempotency: IdempotencyTrpcContext<TTransaction>;
}

/** Why a call has no transaction, for {@link requireTransaction}'s message (kept off the public shape). */
const reasons = new WeakMap<object, string>();

/**
 * Why a call has no transaction, as the middleware records it for {@link requireTransaction}'s message.
 *
 * @example
 * ```ts
 * callState(path, undefined, undefined, NO_TRANSACTION.notMutation);
 * ```
 */
export const NO_TRANSACTION = Object.freeze({
  notMutation: 'it is a query or subscription (transactional mode applies to mutations only)',
  optedOut: 'its meta turns idempotency off (idempotency: false)',
  notEnabled:
    'transactional mode is not enabled for it. Add .meta({ idempotency: { transaction: true } }) to the procedure, or transaction: true to idempotencyMiddleware for every mutation',
});

/**
 * Build the `ctx.idempotency` of one call (internal to the adapter).
 *
 * @example
 * ```ts
 * next({ ctx: { idempotency: callState('payments.create', key, tx, NO_TRANSACTION.notEnabled) } });
 * ```
 */
export function callState<TTransaction>(
  procedure: string,
  key: string | undefined,
  tx: TTransaction | undefined,
  reasonIfNone: string,
): IdempotencyTrpcContext<TTransaction> {
  const state: IdempotencyTrpcContext<TTransaction> = Object.freeze({ procedure, key, tx });
  if (tx === undefined) reasons.set(state, reasonIfNone);
  return state;
}

/**
 * The transaction client of a call in transactional mode, from the context {@link idempotencyMiddleware} built;
 * throws an `Error` that says why there is none (the procedure is a query, did not opt in, or opted out) and
 * what to change. Throwing inside a transactional procedure rolls its writes back and releases the key.
 *
 * @param ctx the resolver's (or a later middleware's) `ctx`
 * @returns `ctx.idempotency.tx`, typed as the store's transaction client (e.g. `Prisma.TransactionClient`)
 * @example
 * ```ts
 * .mutation(async ({ ctx, input }) => {
 *   const tx = requireTransaction(ctx);
 *   await tx.$executeRaw`INSERT INTO ledger (amount) VALUES (${input.amount})`;
 * })
 * ```
 */
export function requireTransaction<TTransaction>(ctx: {
  readonly idempotency: IdempotencyTrpcContext<TTransaction>;
}): TTransaction {
  const state = (ctx as { idempotency?: unknown } | null | undefined)?.idempotency as
    | IdempotencyTrpcContext<TTransaction>
    | undefined;
  if (typeof state !== 'object' || state === null) {
    throw new TypeError(
      `requireTransaction: expected ctx.idempotency from idempotencyMiddleware, received ${describeValue(state)}. Build this procedure on a procedure that uses idempotencyMiddleware (t.procedure.use(idempotencyMiddleware({ store }))) and pass the resolver's own ctx.`,
    );
  }
  if (state.tx !== undefined) return state.tx;
  const reason = reasons.get(state) ?? NO_TRANSACTION.notEnabled;
  throw new Error(
    `requireTransaction: ${state.procedure} has no idempotency transaction: expected it to run in transactional mode, but ${reason}.`,
  );
}
