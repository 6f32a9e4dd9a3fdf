import { configDefaults, defineConfig } from 'vitest/config';

// Two cores: run test files in two forked workers. Most tests wait on sockets and databases rather than the
// CPU, and forks keep native drivers (better-sqlite3) and servers isolated per file.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The reliability suite has its own config (vitest.reliability.config.ts): processes, outages, soak.
    exclude: [...configDefaults.exclude, 'test/reliability/**'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
