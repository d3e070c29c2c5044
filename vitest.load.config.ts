import { defineConfig } from 'vitest/config';

/**
 * `npm run test:load`: the full-size load test (test/load, LOAD_N calls,
 * default 10 000), which `npm test` leaves out; its CI-sized copy is
 * test/hardening/load-small.test.ts. One file at a time: the test measures
 * a server process and must not share the two cores with other suites.
 */
export default defineConfig({
  test: {
    include: ['test/load/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
  },
});
