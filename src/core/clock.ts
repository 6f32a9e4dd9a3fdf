/** An opaque timer handle returned by {@link IdempotencyClock.setTimeout}. */
export type IdempotencyTimer = unknown;

/**
 * The service's only source of time. Inject a manual clock in tests (see `createManualClock` in
 * `rpc-idempotency/testing`); all values are milliseconds.
 *
 * @example
 * ```ts
 * const service = createIdempotencyService({ store, clock: systemClock });
 * ```
 */
export interface IdempotencyClock {
  /** The current time, epoch milliseconds. */
  now(): number;
  /** Run `callback` after `delayMs`. Timers must not keep the process alive. */
  setTimeout(callback: () => void, delayMs: number): IdempotencyTimer;
  /** Cancel a timer from {@link IdempotencyClock.setTimeout}. */
  clearTimeout(timer: IdempotencyTimer): void;
}

/**
 * The real clock: `Date.now()` and unref'ed Node timers.
 *
 * @example
 * ```ts
 * systemClock.now(); // 1764780000000
 * ```
 */
export const systemClock: IdempotencyClock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (callback: () => void, delayMs: number) => {
    const timer = setTimeout(callback, delayMs);
    timer.unref?.();
    return timer;
  },
  clearTimeout: (timer: IdempotencyTimer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
});

/** Resolve after `delayMs` on `clock`; rejects early with the signal's reason when aborted. */
export function sleep(clock: IdempotencyClock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
