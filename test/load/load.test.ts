/**
 * The full load test (security.md D2), `npm run test:load`: LOAD_N calls
 * (default 10 000) started at once against one server process, from
 * LOAD_IDENTITIES workloads (default N/10, at least 500). The mix, the
 * monitors and the assertions are in harness.ts; the figures are printed.
 *
 * Bounds (2-core machine; measured at 10 000: peak RSS ~500 MiB from ~250
 * MiB idle, heap used ~180 MiB, p99 ~7 s for the whole burst to drain):
 * peak RSS < 1 GiB, heap used < 512 MiB, p99 < 30 s, /healthz < 100 ms
 * (each poll paired with an idle control process: see harness.ts).
 */
import { loadSuite } from './harness.ts';

const N = Number(process.env.LOAD_N ?? 10_000);
const IDENTITIES = Number(process.env.LOAD_IDENTITIES ?? Math.max(500, Math.round(N / 10)));

loadSuite({ n: N, identities: IDENTITIES, bounds: { maxRssBytes: 1024 * 2 ** 20, maxHeapBytes: 512 * 2 ** 20, healthMs: 100, p99Ms: 30_000 } });

// The same burst against a signer queue bounded at 500: admission control sheds with RESOURCE_EXHAUSTED.
loadSuite({ n: N, identities: IDENTITIES, serverArgs: ['--queue-max', '500'], overload: true, bounds: { maxRssBytes: 1024 * 2 ** 20, maxHeapBytes: 512 * 2 ** 20, healthMs: 100, p99Ms: 30_000 } });
