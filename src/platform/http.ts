/**
 * Operational HTTP endpoints: /metrics (Prometheus text), /healthz
 * (liveness: the main event loop turns) and /readyz (ready to serve).
 *
 * They are served from a thread of their own (http-worker.ts), so probes
 * are answered in milliseconds even while the main event loop is saturated
 * by a burst; the main thread only writes a heartbeat and the ready flag
 * into shared memory every 250 ms, and answers /metrics requests.
 */
import { Worker } from 'node:worker_threads';
import type { Registry } from 'prom-client';
import { CastellanError } from './errors.ts';
import type { Logger } from './logger.ts';

export interface OpsServer {
  readonly address: string;
  close(): Promise<void>;
}

/** /healthz fails when the main event loop has not turned for this long (ms). */
export const STALL_MS = 10_000;
const BEAT_MS = 250;

export async function startOpsServer(
  listen: string,
  o: { registry: Registry; ready: () => boolean; logger: Logger; stallMs?: number },
): Promise<OpsServer> {
  const shared = new SharedArrayBuffer(16);
  const state = new Float64Array(shared);
  const beat = (): void => {
    state[0] = Date.now();
    let ready = false;
    try {
      ready = o.ready();
    } catch {
      ready = false;
    }
    state[1] = ready ? 1 : 0;
  };
  beat();
  const worker = new Worker(new URL(import.meta.url.endsWith('.ts') ? './http-worker.ts' : './http-worker.js', import.meta.url), {
    workerData: { listen, shared, stallMs: o.stallMs ?? STALL_MS },
  });
  worker.unref();
  const timer = setInterval(beat, BEAT_MS);
  timer.unref();
  worker.on('message', (m: { kind: string; id?: number }) => {
    if (m.kind === 'ready') {
      beat();
      const ok = state[1] === 1;
      worker.postMessage({ kind: 'reply', id: m.id, status: ok ? 200 : 503, contentType: 'text/plain', body: ok ? 'ready\n' : 'not ready\n' });
      return;
    }
    if (m.kind !== 'metrics') return;
    o.registry.metrics().then(
      (body) => worker.postMessage({ kind: 'reply', id: m.id, status: 200, contentType: o.registry.contentType, body }),
      (e: unknown) => {
        o.logger.error({ err: e }, 'metrics collection failed');
        worker.postMessage({ kind: 'reply', id: m.id, status: 500, contentType: 'text/plain', body: 'metrics collection failed\n' });
      },
    );
  });
  worker.on('error', (e) => o.logger.error({ event: 'ops.worker_failed', err: e }, 'the ops HTTP thread failed'));
  const address = await new Promise<string>((resolve, reject) => {
    const onMsg = (m: { kind: string; address?: string; message?: string }): void => {
      if (m.kind === 'listening') {
        worker.off('message', onMsg);
        resolve(m.address!);
      } else if (m.kind === 'listen-error') {
        worker.off('message', onMsg);
        reject(new CastellanError('FAILED_PRECONDITION', 'ops.listen', `cannot listen on ${listen} for /metrics /healthz /readyz: ${m.message}`));
      }
    };
    worker.on('message', onMsg);
    worker.once('exit', (code) => reject(new CastellanError('INTERNAL', 'ops.worker_exit', `the ops HTTP thread exited (${code})`)));
  }).catch(async (e: unknown) => {
    clearInterval(timer);
    await worker.terminate();
    throw e;
  });
  return {
    address,
    async close() {
      clearInterval(timer);
      await worker.terminate();
    },
  };
}
