/**
 * The routes of the operational HTTP endpoints (/healthz, /readyz,
 * /metrics), shared by the two ways of hosting them (src/server/http.ts):
 * on a thread of their own (the CA server, whose main event loop a burst
 * can saturate) or on the main thread (the agent, where a second V8 isolate
 * would cost more memory than everything else it runs). Each host says how
 * it answers a route; the method check, the paths, the timeouts and the
 * listen address are the same for both.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

export interface OpsReply {
  status: number;
  contentType: string;
  body: string;
}

export interface OpsRoutes {
  healthz(): OpsReply;
  readyz(): OpsReply | Promise<OpsReply>;
  metrics(): Promise<OpsReply>;
}

export const text = (status: number, body: string): OpsReply => ({ status, contentType: 'text/plain', body });

function send(res: ServerResponse, r: OpsReply): void {
  if (!res.destroyed) res.writeHead(r.status, { 'content-type': r.contentType }).end(r.body);
}

/** The request listener of an ops server. */
export function opsRequestListener(routes: OpsRoutes): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') send(res, routes.healthz());
    else if (path === '/readyz') void Promise.resolve(routes.readyz()).then((r) => send(res, r));
    else if (path === '/metrics') void routes.metrics().then((r) => send(res, r));
    else send(res, text(404, 'not found\n'));
  };
}

/** Listens on host:port with the ops timeouts; resolves with the bound address as host:port. */
export function listenOps(server: Server, listen: string): Promise<string> {
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(i + 1)), host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve(a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : listen);
    });
  });
}
