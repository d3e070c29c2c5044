/**
 * The request document every `castellan authz` command takes (YAML or JSON):
 *
 *   workload: {namespace: foo, labels: {app: httpbin}}     # the destination workload (required)
 *   source: {principal: cluster.local/ns/bar/sa/sleep, ip: 10.1.2.3, remoteIp: 203.0.113.9}
 *   destination: {ip: 10.0.0.5, port: 8000}
 *   connection: {sni: httpbin.foo.svc.cluster.local}
 *   request:                                               # absent for a TCP connection
 *     method: GET
 *     host: httpbin.foo
 *     path: /status/200?x=1
 *     headers: {x-token: abc, x-multi: [a, b]}             # a list = the header sent several times
 *     auth: {principal: https://issuer.example/alice, audiences: [httpbin], presenter: web, claims: {groups: [admin]}}
 *
 * `source.principal` may be written with or without `spiffe://`; omit it (or
 * null) for a plaintext peer. `remoteIp` defaults to `ip`. `request.auth`
 * describes a JWT that was already validated; its issuer and subject come
 * from `claims.iss`/`claims.sub` or from `principal` split at its last `/`.
 */
import { parseAllDocuments } from 'yaml';
import { CastellanError, type ErrorCode } from '../platform/errors.ts';
import type { AuthzRequest, HttpAttributes, RequestAuth } from './model.ts';
import { parseRequestIp } from './ip.ts';
import { formatPath, type FieldPath } from './validate.ts';

export const MAX_REQUEST_STRING = 65536;
const MAX_HEADERS = 1000;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class RequestErrors {
  readonly errors: string[] = [];
  readonly where: string;
  constructor(where: string) {
    this.where = where;
  }
  add(path: FieldPath, msg: string): void {
    this.errors.push(`${formatPath(path)}: ${msg}`);
  }
  known(o: Record<string, unknown>, allowed: readonly string[], path: FieldPath, hint: Record<string, string> = {}): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) this.add([...path, k], hint[k] ?? `unknown field; allowed: ${allowed.join(', ')}`);
    }
  }
  str(v: unknown, path: FieldPath, opts: { required?: boolean; scalar?: boolean } = {}): string | undefined {
    if (v === undefined || v === null) {
      if (opts.required) this.add(path, 'is required');
      return undefined;
    }
    if (opts.scalar && (typeof v === 'number' || typeof v === 'boolean')) return String(v);
    if (typeof v !== 'string') {
      this.add(path, `must be a string, got ${Array.isArray(v) ? 'a list' : typeof v}`);
      return undefined;
    }
    if (v.length > MAX_REQUEST_STRING) {
      this.add(path, `is longer than ${MAX_REQUEST_STRING} characters`);
      return undefined;
    }
    return v;
  }
  ip(v: unknown, path: FieldPath): string | undefined {
    const s = this.str(v, path);
    if (s !== undefined && !parseRequestIp(s)) this.add(path, `"${s.slice(0, 80)}" is not an IP address`);
    return s;
  }
  throwIfAny(): void {
    if (this.errors.length) {
      throw new CastellanError('INVALID_ARGUMENT', 'authz.invalid_request', `${this.where}: invalid request document:\n  ${this.errors.join('\n  ')}`);
    }
  }
}

function stripSpiffe(p: string): string {
  return p.startsWith('spiffe://') ? p.slice('spiffe://'.length) : p;
}

/**
 * Validates a request document (already parsed from YAML/JSON). Throws
 * CastellanError(INVALID_ARGUMENT, 'authz.invalid_request') naming every bad
 * field; `where` prefixes the message (a file name, a test case).
 */
export function parseRequestDocument(doc: unknown, where = 'request'): AuthzRequest {
  const e = new RequestErrors(where);
  if (!isObj(doc)) {
    e.add([], `a request document must be a mapping with workload, source, destination, connection and request, got ${doc === null ? 'nothing' : Array.isArray(doc) ? 'a list' : typeof doc}`);
    e.throwIfAny();
  }
  const d = doc as Record<string, unknown>;
  e.known(d, ['workload', 'source', 'destination', 'connection', 'request'], []);

  let namespace = '';
  const labels: Record<string, string> = {};
  if (!isObj(d.workload)) e.add(['workload'], 'is required: {namespace: <ns>, labels: {...}} of the destination workload');
  else {
    e.known(d.workload, ['namespace', 'labels'], ['workload']);
    namespace = e.str(d.workload.namespace, ['workload', 'namespace'], { required: true }) ?? '';
    if (d.workload.labels !== undefined && d.workload.labels !== null) {
      if (!isObj(d.workload.labels)) e.add(['workload', 'labels'], 'must be a mapping of label names to values');
      else for (const [k, v] of Object.entries(d.workload.labels)) {
        const s = e.str(v, ['workload', 'labels', k], { scalar: true });
        if (s !== undefined) labels[k] = s;
      }
    }
  }

  const source: { principal?: string; ip?: string; remoteIp?: string } = {};
  if (d.source !== undefined && d.source !== null) {
    if (!isObj(d.source)) e.add(['source'], 'must be a mapping {principal, ip, remoteIp}');
    else {
      const derived = 'is derived from source.principal (<trust-domain>/ns/<namespace>/sa/<service-account>); set the principal instead';
      e.known(d.source, ['principal', 'ip', 'remoteIp'], ['source'], { namespace: derived, serviceAccount: derived, trustDomain: derived });
      const p = e.str(d.source.principal, ['source', 'principal']);
      if (p !== undefined && p !== '') source.principal = stripSpiffe(p);
      const ip = e.ip(d.source.ip, ['source', 'ip']);
      if (ip !== undefined) source.ip = ip;
      const rip = e.ip(d.source.remoteIp, ['source', 'remoteIp']);
      if (rip !== undefined) source.remoteIp = rip;
      else if (ip !== undefined) source.remoteIp = ip;
    }
  }

  const destination: { ip?: string; port?: number } = {};
  if (d.destination !== undefined && d.destination !== null) {
    if (!isObj(d.destination)) e.add(['destination'], 'must be a mapping {ip, port}');
    else {
      e.known(d.destination, ['ip', 'port'], ['destination']);
      const ip = e.ip(d.destination.ip, ['destination', 'ip']);
      if (ip !== undefined) destination.ip = ip;
      const port = d.destination.port;
      if (port !== undefined && port !== null) {
        const n = typeof port === 'string' && /^\d{1,5}$/.test(port) ? Number(port) : port;
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) e.add(['destination', 'port'], `must be a port number from 0 to 65535, got ${JSON.stringify(port)}`);
        else destination.port = n;
      }
    }
  }

  const connection: { sni?: string } = {};
  if (d.connection !== undefined && d.connection !== null) {
    if (!isObj(d.connection)) e.add(['connection'], 'must be a mapping {sni}');
    else {
      e.known(d.connection, ['sni'], ['connection']);
      const sni = e.str(d.connection.sni, ['connection', 'sni']);
      if (sni !== undefined && sni !== '') connection.sni = sni;
    }
  }

  let request: HttpAttributes | undefined;
  if (d.request !== undefined && d.request !== null) {
    if (!isObj(d.request)) e.add(['request'], 'must be a mapping {method, host, path, headers, auth} (omit it for a TCP connection)');
    else request = parseHttp(e, d.request);
  }
  e.throwIfAny();
  return {
    workload: { namespace, labels },
    source,
    destination,
    connection,
    ...(request ? { request } : {}),
  };
}

function parseHttp(e: RequestErrors, r: Record<string, unknown>): HttpAttributes {
  e.known(r, ['method', 'host', 'path', 'headers', 'auth'], ['request']);
  const headers: Record<string, string[]> = {};
  if (r.headers !== undefined && r.headers !== null) {
    if (!isObj(r.headers)) e.add(['request', 'headers'], 'must be a mapping of header names to a value or a list of values');
    else {
      const entries = Object.entries(r.headers);
      if (entries.length > MAX_HEADERS) e.add(['request', 'headers'], `more than ${MAX_HEADERS} headers`);
      for (const [k, v] of entries.slice(0, MAX_HEADERS)) {
        const name = k.toLowerCase();
        if (name === '') {
          e.add(['request', 'headers'], 'empty header name');
          continue;
        }
        const list = Array.isArray(v) ? v : [v];
        const vals: string[] = headers[name] ?? [];
        list.forEach((x, i) => {
          const s = e.str(x, Array.isArray(v) ? ['request', 'headers', k, i] : ['request', 'headers', k], { scalar: true });
          if (s !== undefined) vals.push(s);
        });
        if (vals.length) headers[name] = vals;
      }
    }
  }
  const method = e.str(r.method, ['request', 'method']) ?? headers[':method']?.[0];
  const host = e.str(r.host, ['request', 'host']) ?? headers[':authority']?.[0] ?? headers['host']?.[0];
  const path = e.str(r.path, ['request', 'path']) ?? headers[':path']?.[0];
  if (path === '') e.add(['request', 'path'], 'must not be empty (use "/")');
  let auth: RequestAuth | undefined;
  if (r.auth !== undefined && r.auth !== null) {
    if (!isObj(r.auth)) e.add(['request', 'auth'], 'must be a mapping {principal, audiences, presenter, claims} describing a validated JWT');
    else auth = parseAuth(e, r.auth);
  }
  return {
    ...(method !== undefined ? { method } : {}),
    ...(host !== undefined ? { host } : {}),
    ...(path !== undefined ? { path } : {}),
    headers,
    ...(auth ? { auth } : {}),
  };
}

function parseAuth(e: RequestErrors, a: Record<string, unknown>): RequestAuth {
  const p: FieldPath = ['request', 'auth'];
  e.known(a, ['principal', 'audiences', 'presenter', 'claims'], p);
  let claims: Record<string, unknown> = {};
  if (a.claims !== undefined && a.claims !== null) {
    if (!isObj(a.claims)) e.add([...p, 'claims'], 'must be a mapping of claim names to values');
    else claims = a.claims;
  }
  const principal = e.str(a.principal, [...p, 'principal']);
  let issuer = typeof claims.iss === 'string' ? claims.iss : undefined;
  let subject = typeof claims.sub === 'string' ? claims.sub : undefined;
  if (principal !== undefined) {
    const i = principal.lastIndexOf('/');
    const pi = i === -1 ? principal : principal.slice(0, i);
    const ps = i === -1 ? '' : principal.slice(i + 1);
    if ((issuer !== undefined || subject !== undefined) && `${issuer ?? ''}/${subject ?? ''}` !== principal) {
      e.add([...p, 'principal'], `"${principal.slice(0, 200)}" disagrees with claims.iss/claims.sub ("${issuer ?? ''}/${subject ?? ''}")`);
    }
    issuer ??= pi;
    subject ??= ps;
  }
  let audiences: string[] | undefined;
  if (a.audiences !== undefined && a.audiences !== null) {
    const list = Array.isArray(a.audiences) ? a.audiences : [a.audiences];
    audiences = [];
    list.forEach((x, i) => {
      const s = e.str(x, [...p, 'audiences', i]);
      if (s !== undefined) audiences!.push(s);
    });
  } else if (typeof claims.aud === 'string') audiences = [claims.aud];
  else if (Array.isArray(claims.aud)) audiences = claims.aud.filter((x): x is string => typeof x === 'string');
  const presenter = e.str(a.presenter, [...p, 'presenter']) ?? (typeof claims.azp === 'string' ? claims.azp : undefined);
  // The token's payload: principal, audiences and presenter are its iss/sub, aud and azp claims.
  const payload: Record<string, unknown> = { ...claims };
  if (issuer !== undefined && payload.iss === undefined) payload.iss = issuer;
  if (subject !== undefined && payload.sub === undefined) payload.sub = subject;
  if (audiences && payload.aud === undefined) payload.aud = audiences;
  if (presenter !== undefined && payload.azp === undefined) payload.azp = presenter;
  return {
    ...(issuer !== undefined ? { issuer } : {}),
    ...(subject !== undefined ? { subject } : {}),
    ...(audiences ? { audiences } : {}),
    ...(presenter !== undefined ? { presenter } : {}),
    claims: payload,
  };
}

/** Parses a request document from YAML or JSON text (one document). */
export function parseRequestText(text: string, where = 'request'): AuthzRequest {
  return parseRequestDocument(parseSingleDocument(text, where, 'authz.invalid_request'), where);
}

/** One YAML (or JSON) document; CastellanError(INVALID_ARGUMENT, code) otherwise. */
export function parseSingleDocument(text: string, where: string, code: ErrorCode): unknown {
  const bad = (msg: string): CastellanError => new CastellanError('INVALID_ARGUMENT', code, `${where}: ${msg}`);
  if (text.length > 16 * 1024 * 1024) throw bad('document larger than 16 MiB');
  let docs;
  try {
    docs = parseAllDocuments(text, { uniqueKeys: true, strict: true });
  } catch (e) {
    throw bad(`cannot parse YAML/JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  const list = Array.isArray(docs) ? docs : [docs];
  const nonEmpty = list.filter((d) => d.contents !== null || d.errors.length > 0);
  if (nonEmpty.length === 0) throw bad('the document is empty');
  if (nonEmpty.length > 1) throw bad(`expected one document, found ${nonEmpty.length}`);
  const doc = nonEmpty[0]!;
  if (doc.errors.length) {
    const err = doc.errors[0]!;
    const line = err.linePos?.[0]?.line;
    throw bad(`${line ? `line ${line}: ` : ''}invalid YAML/JSON: ${err.message.split('\n')[0]}`);
  }
  try {
    return doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    throw bad(`invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
}
