/**
 * rpc-idempotency/grpc: the server side of the gRPC adapter for `@grpc/grpc-js` (>= 1.10, which added server
 * interceptors). The client interceptor lives in `rpc-idempotency/grpc/client`.
 *
 * ```ts
 * const server = new grpc.Server({ interceptors: [idempotencyInterceptor({ service })] });
 * server.addService(replayableService(Payments.service), implementation);
 * ```
 *
 * @packageDocumentation
 */
export {
  decodeGrpcResponse,
  encodeGrpcResponse,
  type IdempotencyGrpcRecordedResponse,
  idempotencyGrpcResponseCodec,
} from './envelope.js';
export { type IdempotencyGrpcErrorCode, IdempotencyGrpcErrorStatus } from './error-status.js';
export { IdempotencyGrpcMetadata } from './metadata.js';
export type {
  IdempotencyGrpcAuthContext,
  IdempotencyGrpcCallContext,
  IdempotencyGrpcFingerprint,
  IdempotencyGrpcMethodOptions,
  IdempotencyGrpcOptions,
  IdempotencyGrpcPolicyOptions,
  IdempotencyGrpcScope,
  IdempotencyGrpcSharedResult,
} from './options.js';
export { replayableService } from './replayable-service.js';
export { idempotencyInterceptor } from './server-interceptor.js';
export {
  type IdempotencyGrpcStatusClass,
  type IdempotencyGrpcStatusName,
  type IdempotencyGrpcStatusOverrides,
  IdempotencyGrpcStatusPolicy,
} from './status-policy.js';
export { type IdempotencyGrpcHandlerCall, idempotencyTransaction } from './transaction.js';
