import { defineConfig } from 'vitest/config';

// The reliability suite (test/reliability): real server processes, crashes, database outages, fuzzing and a
// soak run against PostgreSQL. Files run one at a time: each starts several Node processes of its own, and on
// two cores running them side by side would only make each slower. `--expose-gc` lets the soak test measure
// the heap after a full collection instead of whatever garbage happens to be lying around.
export default defineConfig({
  test: {
    include: ['test/reliability/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    execArgv: ['--expose-gc'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
