/**
 * rpc-idempotency: make RPC procedures safe to retry. The transport-independent core; adapters live under
 * `rpc-idempotency/trpc` and `rpc-idempotency/grpc`, the Prisma store under `rpc-idempotency/prisma`.
 *
 * @packageDocumentation
 */
export { type IdempotencyClock, type IdempotencyTimer, systemClock } from './core/clock.js';
export { type IdempotencyCodec, type IdempotencyErrorPolicy, jsonCodec } from './core/codec.js';
export {
  IdempotencyError,
  IdempotencyErrorCode,
  type IdempotencyErrorOptions,
  isIdempotencyError,
} from './core/errors.js';
export type { IdempotencyEvent, IdempotencyEventListener, IdempotencyEventType } from './core/events.js';
export { canonicalJson, computeFingerprint } from './core/fingerprint.js';
export { validateKey, validateScope } from './core/key.js';
export {
  type IdempotencyFinalStatus,
  type IdempotencyRecord,
  IdempotencyStatus,
  isRecordClaimable,
  isRecordExpired,
  MAX_KEY_LENGTH,
} from './core/record.js';
export {
  createIdempotencyService,
  type IdempotencyCall,
  type IdempotencyCallPolicy,
  type IdempotencyInFlightPolicy,
  type IdempotencyOutcome,
  type IdempotencyPurgeOptions,
  type IdempotencyRunContext,
  type IdempotencyService,
  type IdempotencyServiceOptions,
} from './core/service.js';
export type {
  IdempotencyClaimInput,
  IdempotencyClaimResult,
  IdempotencyCompleteInput,
  IdempotencyPurgeInput,
  IdempotencyStore,
  IdempotencyTransaction,
  IdempotencyTransactionalStore,
  IdempotencyTransactionOptions,
} from './stores/contract.js';
export { isTransactionalStore } from './stores/contract.js';
export { createMemoryStore, type IdempotencyMemoryStoreOptions } from './stores/memory.js';
