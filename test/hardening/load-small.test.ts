/**
 * The CI-sized copy of the load test (security.md D2) inside `npm test`:
 * the same harness, mix and assertions as test/load/load.test.ts (the full
 * 10 000 calls, `npm run test:load`), at LOAD_N_SMALL calls (default 1 500)
 * from 500 identities: about 15 s here.
 *
 * Bounds (measured at 1 500: peak RSS ~310 MiB from ~250 MiB idle, heap used
 * ~85 MiB, p99 ~1.5 s): peak RSS < 640 MiB, heap used < 256 MiB, p99 < 15 s.
 * /healthz within 250 ms here, not 100: inside `npm test` another test file
 * runs beside this one on the 2 cores, and the OS schedules the probe thread
 * late (124 ms seen once); the full test (`npm run test:load`, run alone)
 * holds the 100 ms of issue 8.
 */
import { loadSuite } from '../load/harness.ts';

const N = Number(process.env.LOAD_N_SMALL ?? 1500);

loadSuite({ n: N, identities: 500, bounds: { maxRssBytes: 640 * 2 ** 20, maxHeapBytes: 256 * 2 ** 20, healthMs: 250, p99Ms: 15_000 } });

// The same burst against a signer queue bounded at 100: admission control sheds with RESOURCE_EXHAUSTED.
loadSuite({ n: N, identities: 500, serverArgs: ['--queue-max', '100'], overload: true, bounds: { maxRssBytes: 640 * 2 ** 20, maxHeapBytes: 256 * 2 ** 20, healthMs: 250, p99Ms: 15_000 } });
