/**
 * The SPIFFE bundle endpoint (SPIFFE Federation standard): HTTPS, GET / with
 * this trust domain's bundle document (src/server/federation.ts), nothing
 * else. Two profiles:
 *
 *   https_spiffe  the server presents an X.509-SVID of
 *                 spiffe://TD/castellan/bundle-endpoint, issued by the active
 *                 authority; re-issued at half-life and whenever the active
 *                 authority changes (as the CA's own TLS identity)
 *   https_web     the server presents the certificate and key of
 *                 --bundle-endpoint-cert/--bundle-endpoint-key (a web PKI
 *                 certificate), read at start
 */
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { issueServingCertificate } from '../ca/serving.ts';
import type { KeyringView } from '../ca/keyring.ts';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { assertPrivateFile } from '../platform/files.ts';
import type { Logger } from '../platform/logger.ts';
import { BUNDLE_ENDPOINT_ID_PATH, type FederationConfig } from './federation-config.ts';

/** Lifetime of the https_spiffe X.509-SVID; re-issued at half of it. */
const SVID_TTL_MS = 24 * 3600_000;

export interface BundleEndpoint {
  /** host:port bound */
  readonly address: string;
  /** the SPIFFE ID presented (https_spiffe) */
  readonly spiffeId?: string;
  /** Follows a keyring change (a new SVID when the active authority changed). */
  follow(view: KeyringView, prev: KeyringView | undefined): void;
  close(): Promise<void>;
}

export interface BundleEndpointOptions {
  config: NonNullable<FederationConfig['endpoint']>;
  trustDomain: string;
  dnsNames: string[];
  /** the bundle document served now */
  document(): string;
  view(): KeyringView;
  clock: Clock;
  logger: Logger;
}

async function webIdentity(certFile: string, keyFile: string): Promise<{ cert: string; key: string }> {
  try {
    await assertPrivateFile(keyFile);
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') };
  } catch (e) {
    throw new CastellanError('FAILED_PRECONDITION', 'federation.endpoint_cert', `bundle endpoint (https_web): cannot use ${certFile} / ${keyFile}: ${(e as Error).message}`, { cause: e });
  }
}

export async function startBundleEndpoint(o: BundleEndpointOptions): Promise<BundleEndpoint> {
  const { config, logger, clock } = o;
  const spiffeId = config.profile === 'https_spiffe' ? `spiffe://${o.trustDomain}${BUNDLE_ENDPOINT_ID_PATH}` : undefined;
  let timer: TimerHandle | undefined;
  let closed = false;
  const svid = async (): Promise<{ cert: string; key: string; notAfter: number }> => {
    const id = await issueServingCertificate(o.view().active, { dnsNames: o.dnsNames, trustDomain: o.trustDomain, ttlMs: SVID_TTL_MS, now: clock.now(), spiffeId });
    return { cert: id.certChainPem, key: id.keyPem, notAfter: id.notAfter };
  };
  const first = spiffeId ? await svid() : await webIdentity(config.certFile!, config.keyFile!);
  const server: Server = createServer({ cert: first.cert, key: first.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the bundle is served at /\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    let body: string;
    try {
      body = o.document();
    } catch (e) {
      logger.error({ event: 'federation.endpoint_failed', err: e }, 'could not build the bundle document');
      res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  const renew = (): void => {
    if (!spiffeId || closed) return;
    timer?.cancel();
    svid().then(
      (id) => {
        if (closed) return;
        server.setSecureContext({ cert: id.cert, key: id.key, minVersion: 'TLSv1.2' });
        timer = clock.setTimer(renew, Math.max(60_000, (id.notAfter - clock.now()) / 2));
        logger.debug({ event: 'federation.endpoint_svid', spiffeId }, 'bundle endpoint X.509-SVID issued');
      },
      (e: unknown) => {
        logger.error({ event: 'federation.endpoint_svid_failed', err: e }, 'could not re-issue the bundle endpoint X.509-SVID; retrying in a minute');
        if (!closed) timer = clock.setTimer(renew, 60_000);
      },
    );
  };
  if (spiffeId && 'notAfter' in first) timer = clock.setTimer(renew, Math.max(60_000, ((first as { notAfter: number }).notAfter - clock.now()) / 2));
  const listen = config.listen;
  const host = listen.startsWith('[') ? listen.slice(1, listen.indexOf(']')) : listen.slice(0, listen.lastIndexOf(':'));
  const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new CastellanError('FAILED_PRECONDITION', 'federation.endpoint_listen', `cannot listen on ${listen} for the bundle endpoint: ${e.message}`)));
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  logger.info({ event: 'federation.endpoint_listening', address, profile: config.profile, spiffeId }, 'bundle endpoint listening');
  return {
    address,
    spiffeId,
    follow(view, prev) {
      if (spiffeId && (!prev || prev.active.id !== view.active.id)) renew();
    },
    close() {
      closed = true;
      timer?.cancel();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
