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
import { createServer, type ServerResponse } from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

interface Init {
  listen: string;
  shared: SharedArrayBuffer;
  stallMs: number;
}

const { listen, shared, stallMs } = workerData as Init;
const state = new Float64Array(shared);
const pending = new Map<number, ServerResponse>();
let nextId = 0;

parentPort!.on('message', (m: { kind: string; id: number; status: number; contentType: string; body: string }) => {
  if (m.kind !== 'reply') return;
  const res = pending.get(m.id);
  pending.delete(m.id);
  res?.writeHead(m.status, { 'content-type': m.contentType }).end(m.body);
});

/** Forwards a request to the main thread; its reply completes `res`. */
function ask(kind: 'metrics' | 'ready', res: ServerResponse): void {
  const id = ++nextId;
  pending.set(id, res);
  res.on('close', () => pending.delete(id));
  parentPort!.postMessage({ kind, id });
}

const server = createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  if (path === '/healthz') {
    // Alive means the main event loop still turns, however busy it is.
    const stalled = Date.now() - state[0]!;
    if (stalled <= stallMs) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    else res.writeHead(503, { 'content-type': 'text/plain' }).end(`event loop stalled for ${Math.round(stalled / 1000)}s\n`);
  } else if (path === '/readyz') {
    // Ready as of the last heartbeat: answered here. Not ready (yet): ask the main thread,
    // which knows now (a component may have become ready since the last beat).
    if (state[1] === 1) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
    else ask('ready', res);
  } else if (path === '/metrics') {
    ask('metrics', res);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
});
server.keepAliveTimeout = 5_000;
server.headersTimeout = 10_000;
server.requestTimeout = 10_000;
const i = listen.lastIndexOf(':');
const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
server.once('error', (e) => parentPort!.postMessage({ kind: 'listen-error', message: e.message }));
server.listen(Number(listen.slice(i + 1)), host, () => {
  const a = server.address();
  const address = a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : listen;
  parentPort!.postMessage({ kind: 'listening', address });
});
