import type { IdempotencyClock, IdempotencyTimer } from '../core/clock.js';

/**
 * A clock that only moves when told to, for tests of time-dependent behaviour (leases, TTL, waits).
 */
export interface IdempotencyManualClock extends IdempotencyClock {
  /**
   * Move time forward by `ms`, firing due timers in order. Between timers it lets pending promise callbacks
   * and I/O run, so async work a timer starts (a lease renewal) settles before the next one fires.
   */
  advance(ms: number): Promise<void>;
  /** How many timers are scheduled and not yet fired or cleared. */
  readonly pendingTimers: number;
}

interface ScheduledTimer {
  readonly id: number;
  readonly at: number;
  readonly callback: () => void;
}

/** Let queued promise callbacks and one round of I/O run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Create a manual clock starting at `startMs` (epoch ms).
 *
 * @default startMs 1_764_763_200_000 (2025-12-03T12:00:00Z: a realistic epoch value, not 0)
 * @example
 * ```ts
 * const clock = createManualClock();
 * const service = createIdempotencyService({ store, clock, leaseMs: 30_000 });
 * await clock.advance(31_000); // the lease has lapsed
 * ```
 */
export function createManualClock(startMs = 1_764_763_200_000): IdempotencyManualClock {
  let now = startMs;
  let nextId = 1;
  const timers = new Map<number, ScheduledTimer>();
  return {
    now: () => now,
    setTimeout(callback: () => void, delayMs: number): IdempotencyTimer {
      const id = nextId++;
      timers.set(id, { id, at: now + Math.max(0, delayMs), callback });
      return id;
    },
    clearTimeout(timer: IdempotencyTimer): void {
      timers.delete(timer as number);
    },
    async advance(ms: number): Promise<void> {
      if (!Number.isFinite(ms) || ms < 0) {
        throw new RangeError(`createManualClock: advance expects a non-negative number of ms, received ${ms}.`);
      }
      const target = now + ms;
      await settle();
      for (;;) {
        let due: ScheduledTimer | undefined;
        for (const timer of timers.values()) {
          if (timer.at <= target && (!due || timer.at < due.at || (timer.at === due.at && timer.id < due.id))) {
            due = timer;
          }
        }
        if (!due) break;
        timers.delete(due.id);
        now = Math.max(now, due.at);
        due.callback();
        await settle();
      }
      now = target;
      await settle();
    },
    get pendingTimers() {
      return timers.size;
    },
  };
}
