/**
 * Test helpers for people who build on rpc-idempotency: the store conformance suite every store must pass,
 * and a manual clock for time-dependent tests. Requires `vitest`.
 *
 * @packageDocumentation
 */
export {
  type IdempotencyConformanceBackend,
  type IdempotencyConformanceOptions,
  type IdempotencyConformancePeer,
  runStoreConformanceSuite,
} from './conformance.js';
export { createManualClock, type IdempotencyManualClock } from './manual-clock.js';
