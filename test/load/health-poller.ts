/**
 * The /healthz prober of the load test, in its own process so that the test
 * runner's pauses (GC of the job it just built, its RPC) never count against
 * the server: argv[2] is the URL of /healthz, argv[3] the URL of a control
 * endpoint served by an otherwise idle process. Both are requested at the
 * same instant every 20 ms (a fresh connection each, as a kubelet probe
 * does) until a line arrives on stdin; then one JSON line:
 * { pairs: [{ healthMs, controlMs, ok }], ownLagMaxMs }.
 */
import { request } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const [health, control] = [process.argv[2]!, process.argv[3]!];

function timed(url: string): Promise<{ ms: number; ok: boolean }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(url, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ms: performance.now() - t0, ok: res.statusCode === 200 }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ ms: performance.now() - t0, ok: false }));
    req.end();
  });
}

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
let running = true;
process.stdin.once('data', () => (running = false));
const pairs: { healthMs: number; controlMs: number; ok: boolean }[] = [];
process.stdout.write('READY\n');
while (running) {
  const [h, c] = await Promise.all([timed(health), timed(control)]);
  pairs.push({ healthMs: h.ms, controlMs: c.ms, ok: h.ok });
  await new Promise((r) => setTimeout(r, 20));
}
lag.disable();
process.stdout.write(JSON.stringify({ pairs, ownLagMaxMs: lag.max / 1e6 }) + '\n', () => process.exit(0));
