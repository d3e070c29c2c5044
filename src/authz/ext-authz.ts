/**
 * Envoy external authorization (envoy.service.auth.v3.Authorization/Check)
 * without a transport: CheckRequest → AuthzRequest → Decision →
 * CheckResponse. The gRPC wiring lives in src/grpc/ext-authz.ts.
 *
 * Attribute mapping (HTTP filter and network filter):
 *
 * | request document      | CheckRequest attributes                                                         |
 * |-----------------------|---------------------------------------------------------------------------------|
 * | workload.namespace    | context_extensions["castellan.namespace"], else the server's --workload-namespace, else the namespace in destination.principal |
 * | workload.labels       | destination.labels, plus context_extensions["castellan.labels"] ("k=v,k=v"), plus --workload-label |
 * | source.principal      | source.principal (the peer certificate's URI SAN, with or without spiffe://); if empty, the one SPIFFE URI SAN of source.certificate |
 * | source.ip, remoteIp   | source.address (Envoy reports one downstream address; it is used for both)      |
 * | destination.ip, port  | destination.address                                                              |
 * | connection.sni        | tls_session.sni                                                                  |
 * | request.*             | request.http (absent: a TCP check) — method, host, path (with query), headers   |
 * |                       | (header_map when Envoy sends raw headers: repeated headers stay separate)      |
 * | request.auth          | metadata_context.filter_metadata["envoy.filters.http.jwt_authn"] payload (iss, sub, aud, azp, claims) |
 */
import { create } from '@bufbuild/protobuf';
import type { Address } from '../gen/envoy/config/core/v3/address_pb.js';
import { HeaderValueOptionSchema, HeaderValueSchema } from '../gen/envoy/config/core/v3/base_pb.js';
import type { CheckRequest, CheckResponse } from '../gen/envoy/service/auth/v3/external_auth_pb.js';
import { CheckResponseSchema, DeniedHttpResponseSchema, OkHttpResponseSchema } from '../gen/envoy/service/auth/v3/external_auth_pb.js';
import { HttpStatusSchema, StatusCode } from '../gen/envoy/type/v3/http_status_pb.js';
import { StatusSchema } from '../gen/google/rpc/status_pb.js';
import type { AuthzRequest, Decision, HttpAttributes, RequestAuth } from './model.ts';
import { parseRequestIp } from './ip.ts';
import { MAX_REQUEST_STRING } from './request.ts';

export const POLICY_HEADER = 'x-castellan-authz-policy';
export const REASON_HEADER = 'x-castellan-authz-reason';
export const JWT_FILTER = 'envoy.filters.http.jwt_authn';

export interface ExtAuthzDefaults {
  /** Workload namespace when the check request does not name one. */
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * Reads the SPIFFE ID from `source.certificate` (URL-encoded PEM, sent with
   * include_peer_certificate) when Envoy left `source.principal` empty.
   */
  readonly principalFromCertificate?: (urlEncodedPem: string) => string | undefined;
}

/** A check request that cannot be mapped; answered with a denial. */
export class UnmappableCheck extends Error {
  override readonly name = 'UnmappableCheck';
}

function socket(a: Address | undefined): { ip?: string; port?: number } {
  if (a?.address.case !== 'socketAddress') return {};
  const s = a.address.value;
  const out: { ip?: string; port?: number } = {};
  if (s.address && parseRequestIp(s.address)) out.ip = s.address;
  if (s.portSpecifier.case === 'portValue') out.port = s.portSpecifier.value;
  return out;
}

function namespaceOfPrincipal(p: string): string | undefined {
  const m = /^(?:spiffe:\/\/)?[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(p);
  return m?.[1];
}

function parseLabelList(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(',')) {
    const t = part.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i <= 0) throw new UnmappableCheck(`context extension castellan.labels: "${t}" is not key=value`);
    out[t.slice(0, i)] = t.slice(i + 1);
  }
  return out;
}

function cap(s: string, what: string): string {
  if (s.length > MAX_REQUEST_STRING) throw new UnmappableCheck(`${what} longer than ${MAX_REQUEST_STRING} characters`);
  return s;
}

function jwtAuth(req: CheckRequest): RequestAuth | undefined {
  const md = req.attributes?.metadataContext?.filterMetadata[JWT_FILTER];
  if (!md) return undefined;
  // Istio's jwt_authn config stores the payload under "payload"; a filter
  // configured with another payload_in_metadata name has a single entry.
  const values = Object.values(md);
  const payload = (md.payload ?? (values.length === 1 ? values[0] : undefined)) as Record<string, unknown> | undefined;
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return undefined;
  const aud = payload.aud;
  return {
    ...(typeof payload.iss === 'string' ? { issuer: payload.iss } : {}),
    ...(typeof payload.sub === 'string' ? { subject: payload.sub } : {}),
    ...(typeof aud === 'string' ? { audiences: [aud] } : Array.isArray(aud) ? { audiences: aud.filter((x): x is string => typeof x === 'string') } : {}),
    ...(typeof payload.azp === 'string' ? { presenter: payload.azp } : {}),
    claims: payload,
  };
}

/** Maps a CheckRequest to the engine's request. Throws UnmappableCheck. */
export function checkRequestToAuthz(req: CheckRequest, defaults: ExtAuthzDefaults = {}): AuthzRequest {
  const a = req.attributes;
  const ext = a?.contextExtensions ?? {};
  let srcPrincipal = a?.source?.principal ? cap(a.source.principal, 'source.principal') : undefined;
  if (!srcPrincipal && a?.source?.certificate && defaults.principalFromCertificate) {
    srcPrincipal = defaults.principalFromCertificate(cap(a.source.certificate, 'source.certificate'));
  }
  const dstPrincipal = a?.destination?.principal ?? '';
  const namespace = ext['castellan.namespace'] || defaults.namespace || namespaceOfPrincipal(dstPrincipal);
  if (!namespace) throw new UnmappableCheck('cannot tell the destination workload namespace: set context extension castellan.namespace, --workload-namespace, or send destination.principal');
  const labels: Record<string, string> = { ...(defaults.labels ?? {}), ...(a?.destination?.labels ?? {}) };
  if (ext['castellan.labels']) Object.assign(labels, parseLabelList(ext['castellan.labels']));
  const src = socket(a?.source?.address);
  const dst = socket(a?.destination?.address);
  const sni = a?.tlsSession?.sni;
  let request: HttpAttributes | undefined;
  const http = a?.request?.http;
  if (http) {
    const headers: Record<string, string[]> = {};
    const raw = http.headerMap?.headers ?? [];
    if (raw.length > 0) {
      for (const h of raw) {
        const name = h.key.toLowerCase();
        const value = h.value !== '' ? h.value : Buffer.from(h.rawValue).toString('utf8');
        (headers[name] ??= []).push(cap(value, `header ${name}`));
      }
    } else {
      for (const [k, v] of Object.entries(http.headers)) headers[k.toLowerCase()] = [cap(v, `header ${k}`)];
    }
    // Envoy sends pseudo-headers in the map too; the dedicated fields win.
    const method = http.method || headers[':method']?.[0];
    const host = http.host || headers[':authority']?.[0];
    let path = http.path || headers[':path']?.[0];
    if (path !== undefined && !http.path && http.query) path += `?${http.query}`;
    const auth = jwtAuth(req);
    request = {
      ...(method ? { method } : {}),
      ...(host ? { host: cap(host, 'host') } : {}),
      ...(path ? { path: cap(path, 'path') } : {}),
      headers,
      ...(auth ? { auth } : {}),
    };
  }
  return {
    workload: { namespace, labels },
    source: {
      ...(srcPrincipal ? { principal: srcPrincipal.startsWith('spiffe://') ? srcPrincipal.slice(9) : srcPrincipal } : {}),
      ...(src.ip ? { ip: src.ip, remoteIp: src.ip } : {}),
    },
    destination: { ...(dst.ip ? { ip: dst.ip } : {}), ...(dst.port !== undefined ? { port: dst.port } : {}) },
    connection: sni ? { sni } : {},
    ...(request ? { request } : {}),
  };
}

const GRPC_OK = 0;
const GRPC_PERMISSION_DENIED = 7;

function header(key: string, value: string) {
  return create(HeaderValueOptionSchema, { header: create(HeaderValueSchema, { key, value }) });
}

/**
 * The answer Envoy acts on: OK to allow; PERMISSION_DENIED with an HTTP 403
 * naming the deciding policy (header x-castellan-authz-policy, "none" for a
 * default decision) and the reason to deny. TCP checks get the status only.
 */
export function decisionToCheckResponse(d: Decision, http: boolean): CheckResponse {
  if (d.decision === 'ALLOW') {
    return create(CheckResponseSchema, {
      status: create(StatusSchema, { code: GRPC_OK }),
      ...(http ? { httpResponse: { case: 'okResponse', value: create(OkHttpResponseSchema, {}) } } : {}),
    });
  }
  return deniedResponse(d.policy ?? 'none', d.reason, http);
}

export function deniedResponse(policy: string, reason: string, http: boolean): CheckResponse {
  return create(CheckResponseSchema, {
    status: create(StatusSchema, { code: GRPC_PERMISSION_DENIED, message: `denied by ${policy} (${reason})` }),
    ...(http
      ? {
          httpResponse: {
            case: 'deniedResponse',
            value: create(DeniedHttpResponseSchema, {
              status: create(HttpStatusSchema, { code: StatusCode.Forbidden }),
              headers: [header(POLICY_HEADER, policy), header(REASON_HEADER, reason), header('content-type', 'text/plain')],
              body: 'RBAC: access denied\n',
            }),
          },
        }
      : {}),
  });
}
