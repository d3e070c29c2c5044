/**
 * The operational HTTP endpoints, served from their own thread so that
 * probes are answered at once even while the main event loop is saturated
 * (a burst of thousands of calls): /healthz reads a heartbeat the main
 * thread writes into shared memory every 250 ms, /readyz a flag it keeps
 * there, and only /metrics asks the main thread (which owns the registry).
 *
 * workerData: { listen: 'host:port', shared: SharedArrayBuffer, stallMs }
 * shared (Float64Array): [0] last heartbeat (ms since epoch), [1] ready (1/0)
 * messages in:  { kind: 'reply', id, status, contentType, body }
 * messages out: { kind: 'listening', address } | { kind: 'listen-error', message } | { kind: 'metrics' | 'ready', id }
 */
import { createServer } from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';
import { listenOps, opsRequestListener, text, type OpsReply } from '../platform/ops-routes.ts';

interface Init {
  listen: string;
  shared: SharedArrayBuffer;
  stallMs: number;
}

const { listen, shared, stallMs } = workerData as Init;
const state = new Float64Array(shared);
const pending = new Map<number, (r: OpsReply) => void>();
let nextId = 0;

parentPort!.on('message', (m: { kind: string; id: number } & OpsReply) => {
  if (m.kind !== 'reply') return;
  const done = pending.get(m.id);
  pending.delete(m.id);
  done?.({ status: m.status, contentType: m.contentType, body: m.body });
});

/** Asks the main thread; its reply is the answer. */
function ask(kind: 'metrics' | 'ready'): Promise<OpsReply> {
  const id = ++nextId;
  parentPort!.postMessage({ kind, id });
  return new Promise((resolve) => pending.set(id, resolve));
}

const server = createServer(
  opsRequestListener({
    // Alive means the main event loop still turns, however busy it is.
    healthz() {
      const stalled = Date.now() - state[0]!;
      return stalled <= stallMs ? text(200, 'ok\n') : text(503, `event loop stalled for ${Math.round(stalled / 1000)}s\n`);
    },
    // Ready as of the last heartbeat: answered here. Not ready (yet): ask the main thread,
    // which knows now (a component may have become ready since the last beat).
    readyz: () => (state[1] === 1 ? text(200, 'ready\n') : ask('ready')),
    metrics: () => ask('metrics'),
  }),
);
listenOps(server, listen).then(
  (address) => parentPort!.postMessage({ kind: 'listening', address }),
  (e: Error) => parentPort!.postMessage({ kind: 'listen-error', message: e.message }),
);
