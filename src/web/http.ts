/**
 * The small HTTP server behind `castellan authz playground` and
 * `castellan console`: a page, its script and stylesheet, and (for the
 * console) a JSON endpoint. Local tools, so:
 * - loopback only unless the caller explicitly allows another address;
 * - requests whose Host header is not a loopback name are refused (a
 *   DNS-rebinding page on the web cannot read the console through the
 *   browser of the admin who runs it);
 * - a strict Content-Security-Policy (nothing but this origin: no CDN, no
 *   inline script), no caching, no referrer, no framing;
 * - GET and HEAD only: nothing here changes anything;
 * - the JSON routes (the CA's state, the files given on the command line)
 *   need the access token of the address the command prints (in the URL's
 *   fragment, so it is never sent in a Referer or logged; the page sends it
 *   as a bearer token): another user of this machine reaching the loopback
 *   port reads nothing the owner of the admin socket or of the files could
 *   not already.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { CastellanError } from '../platform/errors.ts';

export interface Asset {
  readonly type: string;
  readonly body: string | Buffer;
}

/** A route answers an asset, or a JSON value (computed per request), or undefined for 404. */
export type Route = Asset | (() => Promise<unknown>);

export interface PageServer {
  /** http://host:port/#token=…: the address to open (the fragment carries the access token) */
  readonly url: string;
  close(): Promise<void>;
}

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const HEADERS = {
  'content-security-policy': CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
  'cross-origin-resource-policy': 'same-origin',
};

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

/** `HOST:PORT` ([v6]:PORT) → its parts; CastellanError(INVALID_ARGUMENT) naming the flag otherwise. */
export function parseListen(flag: string, value: string, allowRemote: boolean): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s/[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `--${flag} must be HOST:PORT (for example 127.0.0.1:8080; port 0 picks a free one), got "${value}"`);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  if (!allowRemote && !isLoopback(host)) {
    throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `--${flag} ${value} is not a loopback address: this page is for the person at this machine (use 127.0.0.1, or pass --allow-remote if you really mean to expose it)`);
  }
  return { host, port };
}

/**
 * The Host header names this machine's loopback (any port: `kubectl
 * port-forward 9000:8181` arrives as localhost:9000). A page of another
 * site that rebinds its name to 127.0.0.1 sends its own name and is refused.
 */
function hostAllowed(req: IncomingMessage): boolean {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+)(?::\d+)?$/.exec(req.headers.host ?? '');
  return m !== null && isLoopback(m[1]!.toLowerCase());
}

function authorized(req: IncomingMessage, token: string): boolean {
  const m = /^Bearer ([A-Za-z0-9_-]{1,128})$/.exec(req.headers.authorization ?? '');
  if (!m) return false;
  const given = Buffer.from(m[1]!);
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, head: boolean): void {
  res.writeHead(status, { ...HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

/** Serves `routes` (path → asset or JSON producer) on host:port. */
export async function startPageServer(o: { host: string; port: number; routes: Record<string, Route>; allowAnyHost?: boolean; onError?: (e: unknown) => void }): Promise<PageServer> {
  const token = randomBytes(24).toString('base64url');
  const server: Server = createServer((req, res) => {
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'read-only: GET and HEAD only\n', head);
      return;
    }
    if (!o.allowAnyHost && !hostAllowed(req)) {
      send(res, 421, 'text/plain; charset=utf-8', 'unexpected Host header: open this page through the address it listens on\n', head);
      return;
    }
    const path = (req.url ?? '/').split('?')[0]!;
    const route = Object.hasOwn(o.routes, path) ? o.routes[path] : undefined;
    if (typeof route === 'function' && !authorized(req, token)) {
      send(res, 401, 'application/json; charset=utf-8', JSON.stringify({ error: 'no or wrong access token: open the page with the address the command printed (it ends in #token=...)' }), head);
      return;
    }
    if (route === undefined) {
      send(res, 404, 'text/plain; charset=utf-8', 'not found\n', head);
      return;
    }
    if (typeof route !== 'function') {
      send(res, 200, route.type, route.body, head);
      return;
    }
    route().then(
      (v) => send(res, 200, 'application/json; charset=utf-8', JSON.stringify(v), head),
      (e: unknown) => {
        o.onError?.(e);
        const msg = e instanceof CastellanError ? e.message : 'internal error';
        send(res, 502, 'application/json; charset=utf-8', JSON.stringify({ error: msg }), head);
      },
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new CastellanError('FAILED_PRECONDITION', 'web.listen', `cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}`)));
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  const shown = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${shown}:${port}/#token=${token}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Resolves when SIGINT or SIGTERM arrives (listeners removed afterwards). */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (s: string): void => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(s);
    };
    const onInt = (): void => on('SIGINT');
    const onTerm = (): void => on('SIGTERM');
    process.once('SIGINT', onInt);
    process.once('SIGTERM', onTerm);
  });
}
