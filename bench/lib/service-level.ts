/**
 * Service-level harnesses (no HTTP, no HTTP/2): one idempotent call of the same trivial procedure through our
 * core service and through the peer library `@node-idempotency/core`, driven by its own API (`onRequest`
 * before the handler, `onResponse` after it, as its express and NestJS wrappers do). Without a transport in
 * the way, the difference between the two is the libraries and their stores alone.
 *
 * What each side does per call, so the numbers can be read correctly:
 *
 * ```text
 *                 first execution                  replay                             duplicate while running
 * ours (Prisma)   claim + complete (2 statements)  claim finds the record (PostgreSQL  the same, answered IN_PROGRESS
 *                                                  1 statement, SQLite 2)
 * peer (Redis)    SET NX + SET (2 commands)        SET NX + GET (2 commands)          the same, REQUEST_IN_PROGRESS
 * ```
 *
 * The peer keeps no lease: an IN_PROGRESS entry whose owner crashed blocks the key until its TTL (24 h by
 * default), it never releases a key after a failed handler unless the caller deletes it, and its completion is
 * an unconditional SET (no owner check). Ours does those with the same number of round trips; that is part
 * of what is being compared.
 */
import peerCore from '@node-idempotency/core';
import { computeFingerprint, type IdempotencyService, isIdempotencyError, jsonCodec } from '../../src/index.js';
import { PAYMENT_INPUT } from './transports.js';

const { Idempotency } = peerCore;
type PeerStorage = ConstructorParameters<typeof Idempotency>[0];
type PeerIdempotency = InstanceType<typeof Idempotency>;

const PROCEDURE = 'payments.create';
const CREATED_AT = new Date(1_764_763_200_000);

/** The procedure both libraries wrap: it makes a payment-shaped result and counts its runs per key. */
export interface Procedure {
  readonly runs: Map<string, number>;
  run(key: string): { id: string; amount: number; currency: string; createdAt: string };
}

export function createProcedure(): Procedure {
  const runs = new Map<string, number>();
  let total = 0;
  return {
    runs,
    run(key) {
      runs.set(key, (runs.get(key) ?? 0) + 1);
      total++;
      return {
        id: `pay_${total}`,
        amount: PAYMENT_INPUT.amount,
        currency: PAYMENT_INPUT.currency,
        createdAt: CREATED_AT.toISOString(),
      };
    },
  };
}

/** What one keyed call ended as, for the duplicate-storm accounting. */
export type CallEnd = 'executed' | 'replayed' | 'in-progress';

/** One keyed call through a library. Rejects on anything but a result or an in-progress refusal. */
export type KeyedCall = (key: string) => Promise<CallEnd>;

/** Our core service, as an adapter would call it (fingerprint of procedure + input, JSON codec). */
export function ourCall(service: IdempotencyService, procedure: Procedure): KeyedCall {
  return async (key) => {
    try {
      const outcome = await service.execute({
        procedure: PROCEDURE,
        key,
        fingerprint: computeFingerprint(PROCEDURE, PAYMENT_INPUT),
        codec: jsonCodec,
        run: async () => procedure.run(key),
      });
      if (!outcome.ok) throw new Error(`bench: our call failed: ${String(outcome.error)}`);
      return outcome.source === 'replayed' ? 'replayed' : 'executed';
    } catch (error) {
      if (isIdempotencyError(error) && error.code === 'IN_PROGRESS') return 'in-progress';
      throw error;
    }
  };
}

/** The peer: `onRequest` (a stored response means replay), the handler, then `onResponse` with its result. */
export function peerCall(peer: PeerIdempotency, procedure: Procedure): KeyedCall {
  return async (key) => {
    const request = {
      headers: { 'idempotency-key': key },
      path: `/${PROCEDURE}`,
      method: 'POST',
      body: PAYMENT_INPUT as unknown as Record<string, unknown>,
    };
    try {
      const stored = await peer.onRequest(request);
      if (stored !== undefined) return 'replayed';
    } catch (error) {
      if ((error as { code?: unknown }).code === 'REQUEST_IN_PROGRESS') return 'in-progress';
      throw error;
    }
    const body = procedure.run(key);
    await peer.onResponse(request, { body });
    return 'executed';
  };
}

/** Wrap a peer storage adapter so every command it sends is counted (its round trips). */
export function countingPeerStorage(inner: PeerStorage): { storage: PeerStorage; counts: Record<string, number> } {
  const counts: Record<string, number> = { setIfNotExists: 0, get: 0, set: 0 };
  return {
    counts,
    storage: {
      setIfNotExists: (key, value, options) => {
        counts.setIfNotExists = (counts.setIfNotExists ?? 0) + 1;
        return inner.setIfNotExists(key, value, options);
      },
      get: (key) => {
        counts.get = (counts.get ?? 0) + 1;
        return inner.get(key);
      },
      set: (key, value, options) => {
        counts.set = (counts.set ?? 0) + 1;
        return inner.set(key, value, options);
      },
    },
  };
}

/** Build the peer on `storage`, its keys under a prefix of this run so a shared Redis is never polluted. */
export function createPeer(storage: PeerStorage, prefix: string): PeerIdempotency {
  return new Idempotency(storage, { cacheKeyPrefix: prefix, cacheTTLMS: 600_000 });
}

export { PROCEDURE };
