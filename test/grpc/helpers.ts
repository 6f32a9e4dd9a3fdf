// Small tools for the gRPC tests: deferred promises, promise wrappers around grpc-js calls that keep headers,
// trailers and status, and store wrappers that count or break store operations.
import * as grpc from '@grpc/grpc-js';
import type { IdempotencyStore } from '../../src/index.js';
import { deferred } from '../support/deferred.js';
import type { PaymentsClient } from './payments.js';

export { type Deferred, deferred } from '../support/deferred.js';

/** Resolves when `predicate` holds, re-checking on every call of the returned `check`. */
export function waitUntil(predicate: () => boolean): { promise: Promise<void>; check(): void } {
  const done = deferred();
  const check = () => {
    if (predicate()) done.resolve();
  };
  return { promise: done.promise, check };
}

export interface CallResult<T> {
  readonly error: grpc.ServiceError | null;
  readonly value: T | undefined;
  readonly headers: grpc.Metadata | undefined;
  readonly status: grpc.StatusObject;
}

export function metadataWith(
  entries: Record<string, string | Buffer | readonly (string | Buffer)[]> = {},
): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(entries)) {
    for (const item of Array.isArray(value) ? value : [value]) metadata.add(key, item as string | Buffer);
  }
  return metadata;
}

export function keyed(key: string, extra: Record<string, string | Buffer> = {}): grpc.Metadata {
  return metadataWith({ 'idempotency-key': key, ...extra });
}

/** One CreatePayment call; resolves once the status arrived (the callback fires just before it). */
export function createPayment(
  client: PaymentsClient,
  request: object,
  metadata: grpc.Metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
  onCall?: (call: grpc.ClientUnaryCall) => void,
): Promise<CallResult<Record<string, unknown>>> {
  return new Promise((resolve) => {
    let error: grpc.ServiceError | null = null;
    let value: Record<string, unknown> | undefined;
    let headers: grpc.Metadata | undefined;
    const call = client.createPayment(request, metadata, options, (err, response) => {
      error = err;
      value = response;
    });
    call.on('metadata', (received: grpc.Metadata) => {
      headers = received;
    });
    call.on('status', (status: grpc.StatusObject) => {
      resolve({ error, value, headers, status });
    });
    onCall?.(call);
  });
}

/** One ListRefunds call, collecting every message. */
export function listRefunds(
  client: PaymentsClient,
  request: object,
  metadata: grpc.Metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<CallResult<Record<string, unknown>[]>> {
  return new Promise((resolve) => {
    let error: grpc.ServiceError | null = null;
    let headers: grpc.Metadata | undefined;
    const messages: Record<string, unknown>[] = [];
    const call = client.listRefunds(request, metadata, options);
    call.on('metadata', (received: grpc.Metadata) => {
      headers = received;
    });
    call.on('data', (message: Record<string, unknown>) => messages.push(message));
    call.on('error', (err: grpc.ServiceError) => {
      error = err;
    });
    call.on('status', (status: grpc.StatusObject) => {
      // 'error' (if any) is emitted before 'status'; let it land.
      setImmediate(() => resolve({ error, value: messages, headers, status }));
    });
  });
}

/** A plain object view of metadata, for equality checks (Buffers compare by content). */
export function metadataObject(metadata: grpc.Metadata | undefined | null): Record<string, (string | Buffer)[]> {
  return metadata ? { ...metadata.toJSON() } : {};
}

/**
 * Metadata without the replay marker, to compare a replay with the original. Node's HTTP/2 server adds its
 * own `date` header to every response; it is the transport's, not the handler's, so it is left out too.
 */
export function withoutMarker(metadata: grpc.Metadata | undefined | null): Record<string, (string | Buffer)[]> {
  const object = metadataObject(metadata);
  delete object['idempotent-replayed'];
  delete object.date;
  return object;
}

export function first(metadata: grpc.Metadata | undefined | null, key: string): string | Buffer | undefined {
  return metadata?.get(key)[0];
}

export interface StoreCounts {
  claims: number;
  lostClaims: number;
  completes: number;
  releases: number;
}

/** Wrap a store to count its operations (and notify `onChange` after each), without changing behaviour. */
export function countingStore(
  inner: IdempotencyStore,
  onChange: () => void = () => {},
): { store: IdempotencyStore; counts: StoreCounts } {
  const counts: StoreCounts = { claims: 0, lostClaims: 0, completes: 0, releases: 0 };
  const store: IdempotencyStore = {
    name: inner.name,
    async claim(input) {
      counts.claims++;
      const result = await inner.claim(input);
      if (!result.claimed) counts.lostClaims++;
      onChange();
      return result;
    },
    get: (scope, key) => inner.get(scope, key),
    async complete(input) {
      const result = await inner.complete(input);
      counts.completes++;
      onChange();
      return result;
    },
    async release(scope, key, ownerToken) {
      const result = await inner.release(scope, key, ownerToken);
      counts.releases++;
      onChange();
      return result;
    },
    renew: (scope, key, ownerToken, lockedUntil) => inner.renew(scope, key, ownerToken, lockedUntil),
    purgeExpired: (input) => inner.purgeExpired(input),
  };
  return { store, counts };
}

/** A store whose every operation fails, as a database that is down would. */
export function brokenStore(): IdempotencyStore {
  const fail = async (): Promise<never> => {
    throw new Error('connect ECONNREFUSED 127.0.0.1:1 (test: the store is down)');
  };
  return { name: 'broken', claim: fail, get: fail, complete: fail, release: fail, renew: fail, purgeExpired: fail };
}
