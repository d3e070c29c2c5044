/**
 * The two demo workloads of `castellan dev`: a backend that accepts only
 * mutual-TLS clients, and a frontend that calls it. Both use the key, chain
 * and bundle their agent served over SDS, and each checks the other's SPIFFE
 * ID, read structurally from the certificate's SAN extension (security.md
 * C7), not from Node's `subjectAltName` string nor from a hostname.
 */
import type { X509Certificate } from 'node:crypto';
import { connect, createServer, type PeerCertificate, type Server, type TLSSocket } from 'node:tls';
import { CastellanError } from '../platform/errors.ts';
import { parseSpiffeId } from '../spiffe/id.ts';
import { uriSansOf } from '../agent/cert-info.ts';
import type { WorkloadSecrets } from './sds-client.ts';

/** The one SPIFFE ID of a peer certificate (DER), or a PERMISSION_DENIED error. */
export function spiffeIdOfCertificate(der: Uint8Array): string {
  const uris = uriSansOf(der);
  if (uris.length !== 1) throw new CastellanError('PERMISSION_DENIED', 'peer.spiffe_id', `peer certificate has ${uris.length} URI SANs, expected exactly 1`);
  parseSpiffeId(uris[0]!);
  return uris[0]!;
}

function peerId(sock: TLSSocket): string {
  const c: X509Certificate | undefined = sock.getPeerX509Certificate();
  if (!c) throw new CastellanError('PERMISSION_DENIED', 'peer.no_certificate', 'peer presented no certificate');
  return spiffeIdOfCertificate(c.raw);
}

function tlsOptions(s: WorkloadSecrets) {
  return { key: s.keyPem, cert: s.chainPem, ca: s.bundlePem, minVersion: 'TLSv1.2' as const };
}

export interface Backend {
  readonly port: number;
  /** Swaps in renewed secrets; new connections use them. */
  update(s: WorkloadSecrets): void;
  close(): Promise<void>;
}

/** Serves one line `hello <client-id>, this is <own-id>` to clients whose SPIFFE ID is `allowedClient`. */
export async function startBackend(o: { secrets: WorkloadSecrets; selfId: string; allowedClient: string; onRefused?: (reason: string) => void }): Promise<Backend> {
  const server: Server = createServer({ ...tlsOptions(o.secrets), requestCert: true, rejectUnauthorized: true }, (sock) => {
    let id: string;
    try {
      id = peerId(sock);
      if (id !== o.allowedClient) throw new CastellanError('PERMISSION_DENIED', 'peer.not_allowed', `client ${id} is not ${o.allowedClient}`);
    } catch (e) {
      o.onRefused?.((e as Error).message);
      sock.destroy();
      return;
    }
    sock.end(`hello ${id}, this is ${o.selfId}\n`);
  });
  server.on('tlsClientError', (e) => o.onRefused?.(e.message));
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    update: (s) => server.setSecureContext({ ...tlsOptions(s) }),
    close: () => new Promise<void>((res) => server.close(() => res())),
  };
}

export interface CallResult {
  /** The backend's SPIFFE ID, as checked. */
  serverId: string;
  reply: string;
  protocol: string;
}

/** Calls the backend with mutual TLS; fails unless the server's SPIFFE ID is `expectServer`. */
export function callBackend(o: { port: number; secrets: WorkloadSecrets; expectServer: string; timeoutMs?: number }): Promise<CallResult> {
  return new Promise((resolve, reject) => {
    let serverId = '';
    const sock = connect({
      ...tlsOptions(o.secrets),
      host: '127.0.0.1',
      port: o.port,
      servername: 'backend.demo.invalid', // SNI only; identity is the SPIFFE ID below, not a hostname
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        try {
          serverId = spiffeIdOfCertificate(cert.raw);
        } catch (e) {
          return e as Error;
        }
        return serverId === o.expectServer ? undefined : new Error(`server is ${serverId}, expected ${o.expectServer}`);
      },
    });
    let reply = '';
    const t = setTimeout(() => sock.destroy(new Error('mTLS call timed out')), o.timeoutMs ?? 5000);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (reply += d));
    sock.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(t);
      const protocol = sock.getProtocol() ?? '';
      sock.destroy();
      if (!reply) reject(new Error('backend closed the connection without replying (client refused?)'));
      else resolve({ serverId, reply: reply.trim(), protocol });
    });
  });
}
