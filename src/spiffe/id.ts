/**
 * SPIFFE IDs (spiffe://<trust-domain>/<path>), parsed and formatted by the
 * rules of the SPIFFE ID specification:
 * - scheme exactly `spiffe`, lowercase; no userinfo, port, query or fragment;
 * - trust domain: lowercase letters, digits, `.`, `-`, `_`; 1..255 bytes;
 * - path: zero or more `/segment`, each non-empty, not `.` or `..`, made of
 *   `[a-zA-Z0-9._-]` (so no percent-encoding), no trailing slash;
 * - the whole ID at most 2048 bytes.
 * `formatSpiffeId(parseSpiffeId(x)) === x` for every accepted `x`.
 */
import { CastellanError } from '../platform/errors.ts';

export interface SpiffeId {
  readonly trustDomain: string;
  /** '' for a trust-domain ID, otherwise starts with '/'. */
  readonly path: string;
}

const PREFIX = 'spiffe://';
const TD_RE = /^[a-z0-9._-]+$/;
const SEG_RE = /^[a-zA-Z0-9._-]+$/;
export const MAX_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_BYTES = 255;

function bad(reason: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'spiffe.invalid_id', `invalid SPIFFE ID: ${reason}`);
}

export function validateTrustDomain(td: string): string {
  if (td.length === 0) throw bad('trust domain is empty');
  if (td.length > MAX_TRUST_DOMAIN_BYTES) throw bad('trust domain longer than 255 bytes');
  if (!TD_RE.test(td)) throw bad('trust domain may only contain lowercase letters, digits, ".", "-" and "_"');
  return td;
}

export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw bad('not a string');
  if (Buffer.byteLength(input) > MAX_ID_BYTES) throw bad('longer than 2048 bytes');
  if (!input.startsWith(PREFIX)) throw bad('scheme must be "spiffe://"');
  const rest = input.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  validateTrustDomain(td);
  if (path !== '') {
    const segs = path.slice(1).split('/');
    for (const s of segs) {
      if (s === '') throw bad('path has an empty segment or a trailing "/"');
      if (s === '.' || s === '..') throw bad('path has a "." or ".." segment');
      if (!SEG_RE.test(s)) throw bad('path segments may only contain letters, digits, ".", "-" and "_"');
    }
  }
  return { trustDomain: td, path };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `${PREFIX}${id.trustDomain}${id.path}`;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A Kubernetes DNS-1123 label (namespace names): 1..63 chars. */
export function isDns1123Label(s: string): boolean {
  return s.length >= 1 && s.length <= 63 && DNS1123_LABEL.test(s);
}

/** A Kubernetes DNS-1123 subdomain (service-account names): 1..253 chars of dot-separated labels. */
export function isDns1123Subdomain(s: string): boolean {
  return s.length >= 1 && s.length <= 253 && s.split('.').every(isDns1123Label);
}

/** A workload identity: namespace + service account inside a trust domain. */
export interface WorkloadIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export function workloadSpiffeId(w: WorkloadIdentity): string {
  validateTrustDomain(w.trustDomain);
  if (!isDns1123Label(w.namespace)) throw bad(`namespace "${w.namespace.slice(0, 64)}" is not a DNS-1123 label`);
  if (!isDns1123Subdomain(w.serviceAccount)) throw bad('service account is not a DNS-1123 subdomain');
  return `${PREFIX}${w.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount}`;
}

/** Parses `spiffe://<td>/ns/<ns>/sa/<sa>`; throws for any other shape. */
export function parseWorkloadSpiffeId(input: string): WorkloadIdentity {
  const id = parseSpiffeId(input);
  const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id.path);
  if (!m) throw bad('path is not /ns/<namespace>/sa/<service-account>');
  const namespace = m[1]!;
  const serviceAccount = m[2]!;
  if (!isDns1123Label(namespace)) throw bad('namespace is not a DNS-1123 label');
  if (!isDns1123Subdomain(serviceAccount)) throw bad('service account is not a DNS-1123 subdomain');
  return { trustDomain: id.trustDomain, namespace, serviceAccount };
}
