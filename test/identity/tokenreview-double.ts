/**
 * An HTTP double of the Kubernetes API server's TokenReview endpoint
 * (POST /apis/authentication.k8s.io/v1/tokenreviews), shaped like the real
 * one: it requires the caller's own bearer credentials (401 without, 403 for
 * an identity without RBAC), answers 201 with the TokenReview echoed back and
 * a `status`; an unknown token or an audience mismatch gives
 * `authenticated: false` with an `error`, as kube-apiserver does; on success
 * `status.audiences` is the intersection of the token's and the requested
 * audiences. Faults can be switched on: latency, 5xx, garbage bodies, or a
 * scripted `status` (to play a misbehaving authenticator webhook). It serves
 * HTTPS with its own self-signed certificate, which the kubeconfig it writes
 * trusts (client-node refuses plain HTTP unless TLS checks are disabled).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeKubeconfig } from '../support/kubeconfig.ts';
import { openssl } from '../support/openssl-pki.ts';

export interface DoubleToken {
  username: string;
  uid?: string;
  groups?: string[];
  audiences: string[];
  extra?: Record<string, string[]>;
}

export type Fault = { kind: 'none' } | { kind: 'delay'; ms: number } | { kind: 'status'; code: number } | { kind: 'garbage' } | { kind: 'script'; status: Record<string, unknown> };

export const CALLER_TOKEN = 'castellan-ca-sa-token';

export class TokenReviewDouble {
  readonly tokens = new Map<string, DoubleToken>();
  /** bodies of every review received */
  readonly requests: { token: string; audiences?: string[]; authorization?: string }[] = [];
  fault: Fault = { kind: 'none' };
  inFlight = 0;
  maxInFlight = 0;
  private server!: Server;
  url = '';
  private caPem = '';

  /** `dir`: where the serving key and certificate (made by openssl) go. */
  async start(dir: string): Promise<this> {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'api-key.pem', '-out', 'api-cert.pem', '-days', '2', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], dir);
    this.caPem = readFileSync(join(dir, 'api-cert.pem'), 'utf8');
    this.server = createServer({ key: readFileSync(join(dir, 'api-key.pem')), cert: this.caPem }, (req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Writes a kubeconfig that points client-node at this double. */
  writeKubeconfig(path: string, token = CALLER_TOKEN): void {
    writeKubeconfig(path, { url: this.url, caPem: this.caPem, token });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const auth = req.headers.authorization;
    if (auth !== `Bearer ${CALLER_TOKEN}`) {
      const status = auth ? 403 : 401;
      json(status, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: status === 401 ? 'Unauthorized' : 'Forbidden', code: status });
      return;
    }
    if (req.method !== 'POST' || req.url?.split('?')[0] !== '/apis/authentication.k8s.io/v1/tokenreviews') {
      json(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
      return;
    }
    let review: { apiVersion?: string; kind?: string; spec?: { token?: string; audiences?: string[] } };
    try {
      review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof review;
    } catch {
      json(400, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'BadRequest', code: 400 });
      return;
    }
    if (review.kind !== 'TokenReview' || review.apiVersion !== 'authentication.k8s.io/v1' || typeof review.spec?.token !== 'string') {
      json(400, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'BadRequest', message: 'spec.token is required', code: 400 });
      return;
    }
    this.requests.push({ token: review.spec.token, audiences: review.spec.audiences, authorization: auth });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const f = this.fault;
      if (f.kind === 'delay') await new Promise((r) => setTimeout(r, f.ms));
      if (f.kind === 'status') return json(f.code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: f.code });
      if (f.kind === 'garbage') {
        res.writeHead(201, { 'content-type': 'application/json' }).end('{"kind":"TokenReview","status":');
        return;
      }
      const out = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: { creationTimestamp: null }, spec: review.spec, status: this.statusFor(review.spec.token, review.spec.audiences) };
      if (f.kind === 'script') out.status = f.status;
      json(201, out);
    } finally {
      this.inFlight--;
    }
  }

  private statusFor(token: string, requested?: string[]): Record<string, unknown> {
    const t = this.tokens.get(token);
    if (!t) return { user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' };
    const wanted = requested && requested.length > 0 ? requested : ['https://kubernetes.default.svc.cluster.local'];
    const audiences = t.audiences.filter((a) => wanted.includes(a));
    if (audiences.length === 0) {
      return { user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(t.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` };
    }
    return { authenticated: true, user: { username: t.username, uid: t.uid ?? 'uid-1', groups: t.groups ?? [], extra: t.extra }, audiences };
  }
}

/** An opaque JWT-shaped token with the given `exp` (s since epoch); the double knows it by its text. */
export function opaqueToken(name: string, expSec?: number): string {
  const b = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b({ alg: 'RS256', kid: 'k' })}.${b({ sub: name, ...(expSec === undefined ? {} : { exp: expSec }) })}.c2ln`;
}
