import type { IdempotencyCodec, IdempotencyErrorPolicy, IdempotencyStore } from '../../src/index.js';

export type StoreMethod = 'claim' | 'get' | 'complete' | 'release' | 'renew' | 'purgeExpired';

/** A store wrapper that counts calls per method and can make the next N calls of a method throw. */
export interface InstrumentedStore extends IdempotencyStore {
  readonly calls: Record<StoreMethod, number>;
  /** Make the next `times` calls of `method` throw (default: every call from now on). */
  failNext(method: StoreMethod, times?: number): void;
  /** Make `renew` report a lost lease (resolve false) from now on. */
  loseLease(): void;
  totalCalls(): number;
}

export function instrument(inner: IdempotencyStore): InstrumentedStore {
  const calls: Record<StoreMethod, number> = { claim: 0, get: 0, complete: 0, release: 0, renew: 0, purgeExpired: 0 };
  const failures: Partial<Record<StoreMethod, number>> = {};
  let leaseLost = false;
  const guard = (method: StoreMethod) => {
    calls[method]++;
    const left = failures[method];
    if (left !== undefined && left > 0) {
      failures[method] = left - 1;
      throw new Error(`injected ${method} failure: connection refused`);
    }
  };
  return {
    name: `instrumented(${inner.name})`,
    calls,
    failNext(method, times = Number.POSITIVE_INFINITY) {
      failures[method] = times;
    },
    loseLease() {
      leaseLost = true;
    },
    totalCalls: () => Object.values(calls).reduce((a, b) => a + b, 0),
    async claim(input) {
      guard('claim');
      return inner.claim(input);
    },
    async get(scope, key) {
      guard('get');
      return inner.get(scope, key);
    },
    async complete(input) {
      guard('complete');
      return inner.complete(input);
    },
    async release(scope, key, token) {
      guard('release');
      return inner.release(scope, key, token);
    },
    async renew(scope, key, token, lockedUntil) {
      guard('renew');
      if (leaseLost) return false;
      return inner.renew(scope, key, token, lockedUntil);
    },
    async purgeExpired(input) {
      guard('purgeExpired');
      return inner.purgeExpired(input);
    },
  };
}

export { deferred } from '../support/deferred.js';

export class ValidationError extends Error {
  override name = 'ValidationError';
}

/** Final: ValidationError. Everything else is retryable. */
export const testErrors: IdempotencyErrorPolicy = {
  isFinal: (error) => error instanceof ValidationError,
  encode: (error) => ({ code: 'VALIDATION', bytes: new TextEncoder().encode((error as Error).message) }),
  decode: (code, bytes) => new ValidationError(`${code}: ${new TextDecoder().decode(bytes)}`),
};

export const textCodec: IdempotencyCodec<string> = {
  name: 'text',
  encode: (value) => new TextEncoder().encode(value),
  decode: (bytes) => new TextDecoder().decode(bytes),
};
