/**
 * Operational HTTP endpoints: /metrics (Prometheus text), /healthz
 * (liveness: the main event loop turns) and /readyz (ready to serve).
 *
 * The CA server serves them from a thread of their own (http-worker.ts), so
 * probes are answered in milliseconds even while the main event loop is
 * saturated by a burst; the main thread only writes a heartbeat and the
 * ready flag into shared memory every 250 ms, and answers /metrics requests.
 *
 * `thread: false` serves them from the main thread instead: no second V8
 * isolate (about 16 MiB resident and two threads), for a process whose main
 * loop is never busy for long (the agent; bench/agent-footprint.ts and
 * test/agent/ops-burst.test.ts measure both sides of that choice). There,
 * an answer to /healthz is itself the proof that the loop turns.
 */
import { createServer } from 'node:http';
import { Worker } from 'node:worker_threads';
import type { Registry } from 'prom-client';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { listenOps, opsRequestListener, text } from '../platform/ops-routes.ts';

export interface OpsServer {
  readonly address: string;
  close(): Promise<void>;
}

/** /healthz fails when the main event loop has not turned for this long (ms). */
export const STALL_MS = 10_000;
const BEAT_MS = 250;

function listenError(listen: string, e: Error): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', 'ops.listen', `cannot listen on ${listen} for /metrics /healthz /readyz: ${e.message}`);
}

export interface OpsOptions {
  registry: Registry;
  ready: () => boolean;
  logger: Logger;
  stallMs?: number;
  /** Serve from a thread of its own (default) or from the main thread. */
  thread?: boolean;
}

async function startOnMainThread(listen: string, o: OpsOptions): Promise<OpsServer> {
  const metrics = async (): Promise<ReturnType<typeof text>> => {
    try {
      return { status: 200, contentType: o.registry.contentType, body: await o.registry.metrics() };
    } catch (e) {
      o.logger.error({ err: e }, 'metrics collection failed');
      return text(500, 'metrics collection failed\n');
    }
  };
  const server = createServer(
    opsRequestListener({
      healthz: () => text(200, 'ok\n'),
      readyz() {
        let ok = false;
        try {
          ok = o.ready();
        } catch {
          ok = false;
        }
        return ok ? text(200, 'ready\n') : text(503, 'not ready\n');
      },
      metrics,
    }),
  );
  const address = await listenOps(server, listen).catch((e: Error) => {
    throw listenError(listen, e);
  });
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export async function startOpsServer(listen: string, o: OpsOptions): Promise<OpsServer> {
  if (o.thread === false) return startOnMainThread(listen, o);
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
        reject(listenError(listen, new Error(m.message)));
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
