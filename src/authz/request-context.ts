/**
 * The prepared request: an AuthzRequest with its attributes in the form the
 * compiled checks (compile.ts) need, each computed at most once.
 */
import { parseRequestIp, type IpAddr } from './ip.ts';
import type { AuthzRequest, RequestAuth } from './model.ts';
import { normalizePath, splitPath, type PathNormalization } from './path.ts';
import { asciiLower } from './patterns.ts';

/**
 * A request with its attributes in the form the checks need, each computed
 * at most once and only when a check asks for it.
 */
export class RequestContext {
  /** Peer identity without `spiffe://`. */
  readonly principal: string | undefined;
  readonly dstPort: number | undefined;
  readonly sni: string | undefined;
  readonly http: boolean;
  readonly method: string | undefined;
  /** Path after normalisation, without query; null: Envoy rejects it. */
  readonly path: string | null | undefined;
  readonly query: string;
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly auth: RequestAuth | undefined;
  readonly request: AuthzRequest;
  #uri: string | undefined | null = null;
  #srcIp: IpAddr | undefined | null = null;
  #remoteIp: IpAddr | undefined | null = null;
  #dstIp: IpAddr | undefined | null = null;
  #authority: string | undefined | null = null;
  #authorityNoPort: string | undefined;

  constructor(request: AuthzRequest, mode: PathNormalization) {
    this.request = request;
    this.principal = request.source.principal;
    this.dstPort = request.destination.port;
    this.sni = request.connection.sni;
    const h = request.request;
    this.http = h !== undefined;
    this.method = h?.method;
    this.headers = h?.headers ?? {};
    this.auth = h?.auth;
    this.query = '';
    if (h?.path !== undefined) {
      const sp = splitPath(h.path);
      this.path = normalizePath(sp.path, mode);
      this.query = sp.query;
    }
  }

  /** Peer identity as the certificate URI SAN (`spiffe://…`), what Istio's regexes see. */
  get uri(): string | undefined {
    if (this.#uri === null) this.#uri = this.principal === undefined ? undefined : 'spiffe://' + this.principal;
    return this.#uri;
  }
  get srcIp(): IpAddr | undefined {
    if (this.#srcIp === null) this.#srcIp = this.request.source.ip === undefined ? undefined : parseRequestIp(this.request.source.ip);
    return this.#srcIp;
  }
  get remoteIp(): IpAddr | undefined {
    if (this.#remoteIp === null) {
      const s = this.request.source;
      const rip = s.remoteIp ?? s.ip;
      this.#remoteIp = rip === undefined ? undefined : rip === s.ip ? this.srcIp : parseRequestIp(rip);
    }
    return this.#remoteIp;
  }
  get dstIp(): IpAddr | undefined {
    if (this.#dstIp === null) this.#dstIp = this.request.destination.ip === undefined ? undefined : parseRequestIp(this.request.destination.ip);
    return this.#dstIp;
  }
  /** Lowercased authority. */
  get authority(): string | undefined {
    if (this.#authority === null) {
      const host = this.request.request?.host;
      this.#authority = host === undefined ? undefined : asciiLower(host);
      this.#authorityNoPort = this.#authority === undefined ? undefined : stripPort(this.#authority);
    }
    return this.#authority;
  }
  /** Lowercased authority without a `:port` suffix. */
  get authorityNoPort(): string | undefined {
    void this.authority;
    return this.#authorityNoPort;
  }

  /** Values of a header, pseudo-headers included (`:authority`, `:method`, `:path`). */
  header(name: string): readonly string[] | undefined {
    const v = this.headers[name];
    if (v !== undefined) return v;
    const h = this.request.request;
    if (name === ':authority') return h?.host === undefined ? undefined : [h.host];
    if (name === ':method') return this.method === undefined ? undefined : [this.method];
    if (name === ':path') return this.path == null ? undefined : [this.path + this.query];
    return undefined;
  }
}

/** `host:8080` → `host`, `[::1]:8080` → `[::1]`; anything else unchanged. */
export function stripPort(authority: string): string {
  const colon = authority.lastIndexOf(':');
  if (colon === -1) return authority;
  const port = authority.slice(colon + 1);
  if (port.length === 0 || port.length > 5) return authority;
  for (let i = 0; i < port.length; i++) {
    const c = port.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return authority;
  }
  const host = authority.slice(0, colon);
  if (host.includes(':') && !(host.startsWith('[') && host.endsWith(']'))) return authority; // bare IPv6
  return host;
}
