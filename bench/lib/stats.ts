/**
 * Timing primitives for bench/run.ts.
 *
 * The machine is shared and noisy (2 cores, other jobs come and go), so an absolute time drifts by tens of
 * percent between minutes. What stays stable is a *ratio between scenarios measured at the same moment*. So
 * scenarios that will be compared are measured interleaved: round after round, each scenario runs a short
 * batch, and the order rotates every round. A slow minute then slows every scenario of the group alike, and
 * its median moves with the others instead of skewing one of them.
 */
import { performance } from 'node:perf_hooks';

/** Median and tail of one scenario, in microseconds. */
export interface LatencySummary {
  readonly medianUs: number;
  readonly p99Us: number;
  readonly samples: number;
}

/** One thing to time: `run` is one call (await it); it throws on a wrong answer so a broken path never looks fast. */
export interface Scenario {
  readonly id: string;
  run(): Promise<unknown>;
}

/** The `p`th percentile (nearest rank) of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export function summarize(samplesUs: number[]): LatencySummary {
  const sorted = [...samplesUs].sort((a, b) => a - b);
  return { medianUs: percentile(sorted, 50), p99Us: percentile(sorted, 99), samples: sorted.length };
}

/**
 * Time every scenario `iterations` times, sequentially (one call in flight), interleaved in rounds of `batch`
 * calls with a rotating start, after `warmup` untimed calls each (JIT, connection pools, prepared plans).
 */
export async function measureInterleaved(
  scenarios: readonly Scenario[],
  options: { readonly iterations: number; readonly warmup: number; readonly batch: number },
): Promise<Map<string, LatencySummary>> {
  for (const scenario of scenarios) {
    for (let i = 0; i < options.warmup; i++) await scenario.run();
  }
  const samples = scenarios.map(() => [] as number[]);
  const rounds = Math.ceil(options.iterations / options.batch);
  for (let round = 0; round < rounds; round++) {
    for (let offset = 0; offset < scenarios.length; offset++) {
      const index = (round + offset) % scenarios.length;
      const scenario = scenarios[index] as Scenario;
      const into = samples[index] as number[];
      const count = Math.min(options.batch, options.iterations - round * options.batch);
      for (let i = 0; i < count; i++) {
        const started = performance.now();
        await scenario.run();
        into.push((performance.now() - started) * 1000);
      }
    }
  }
  return new Map(scenarios.map((scenario, index) => [scenario.id, summarize(samples[index] as number[])]));
}

/**
 * Run `total` calls with `concurrency` callers in flight (each caller takes the next call number until none
 * are left) and return the wall time in milliseconds.
 */
export async function runConcurrently(
  total: number,
  concurrency: number,
  call: (index: number) => Promise<unknown>,
): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let index = next++; index < total; index = next++) await call(index);
    }),
  );
  return performance.now() - started;
}

/** Read a positive integer from the environment, or the fallback. Refuses anything else loudly. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`bench: expected ${name} to be a positive integer, received ${JSON.stringify(raw)}.`);
  }
  return value;
}
