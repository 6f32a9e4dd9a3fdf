/**
 * rpc-idempotency for tRPC v11 servers: the idempotency middleware, its error mapping, and the error-formatter
 * helper. The client link lives in `rpc-idempotency/trpc/client`.
 *
 * @packageDocumentation
 */
export { createTrpcResultCodec, type IdempotencyTrpcTransformer } from './codec.js';
export type { IdempotencyTrpcResponseHeaders } from './context.js';
export {
  type IdempotencyTrpcFinalErrors,
  idempotencyErrorData,
  idempotencyTrpcErrorCodes,
  isFinalByDefault,
  toTRPCError,
  trpcErrorFinality,
} from './errors.js';
export {
  type IdempotencyTrpcCallInfo,
  type IdempotencyTrpcFingerprint,
  type IdempotencyTrpcMeta,
  type IdempotencyTrpcMiddleware,
  type IdempotencyTrpcMiddlewareOptions,
  type IdempotencyTrpcProcedureOptions,
  idempotencyMiddleware,
} from './middleware.js';
export {
  DEFAULT_BATCH_KEYS_HEADER,
  DEFAULT_KEY_HEADER,
  type IdempotencyTrpcErrorData,
  REPLAYED_HEADER,
  REPLAYED_INDEXES_HEADER,
} from './protocol.js';
export {
  type IdempotencyTrpcContext,
  type IdempotencyTrpcContextOverrides,
  requireTransaction,
} from './transaction.js';
