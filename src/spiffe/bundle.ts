/**
 * The SPIFFE bundle document (SPIFFE Trust Domain and Bundle standard): a
 * JWK Set whose keys are the trust domain's authorities, plus
 * `spiffe_sequence` (increases whenever the content changes) and
 * `spiffe_refresh_hint` (seconds a consumer should wait before fetching it
 * again).
 *
 *   use "x509-svid"  an X.509 authority: `x5c` holds exactly one certificate
 *                    (base64 DER), a CA; the key's public parameters are that
 *                    certificate's key
 *   use "jwt-svid"   a JWT authority: a public JWK with a non-empty `kid`
 *   any other use    ignored, as the standard asks of consumers
 *
 * Parsing is strict otherwise: every problem is an INVALID_ARGUMENT
 * `bundle.invalid` naming the key and the field. Transport-free (no gRPC, no
 * Kubernetes): the agent's Workload API and the CA share it.
 */
import { createPublicKey, X509Certificate, type JsonWebKey } from 'node:crypto';
import { z } from 'zod';
import { CastellanError } from '../platform/errors.ts';
import { parsePem, PemSyntaxError, type PemBlock } from '../platform/pem.ts';
import { validateTrustDomain } from './id.ts';

export const X509_SVID_USE = 'x509-svid';
export const JWT_SVID_USE = 'jwt-svid';

/** Largest bundle document accepted (bytes): far above any real one, small enough to bound work. */
export const MAX_BUNDLE_BYTES = 1024 * 1024;

export interface JwtAuthority {
  readonly kid: string;
  /** the public JWK as published (kty, its parameters, kid, use, alg when given) */
  readonly jwk: Readonly<Record<string, unknown>>;
}

export interface SpiffeBundle {
  readonly trustDomain: string;
  /** X.509 authorities, DER, in document order, no duplicates */
  readonly x509Authorities: readonly Buffer[];
  readonly jwtAuthorities: readonly JwtAuthority[];
  /** `spiffe_sequence`; undefined when the document has none */
  readonly sequence?: number;
  /** `spiffe_refresh_hint`, seconds; undefined when absent */
  readonly refreshHintSeconds?: number;
}

function invalid(what: string, why: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'bundle.invalid', `${what}: ${why}`);
}

/** Private JWK members: a bundle publishes public keys only. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

const KeySchema = z.looseObject({
  kty: z.string().min(1),
  use: z.string().min(1),
});

const DocSchema = z.looseObject({
  keys: z.array(z.unknown()),
  spiffe_sequence: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  spiffe_refresh_hint: z.number().int().nonnegative().max(365 * 24 * 3600).optional(),
});

function zodProblem(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.length ? i.path.join('.') : '(document)'}: ${i.message}`).join('; ');
}

function spkiOfJwk(jwk: Record<string, unknown>, what: string): string {
  try {
    return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'der' }).toString('base64');
  } catch (e) {
    throw invalid(what, `not a usable public key (${(e as Error).message})`);
  }
}

function x509Authority(raw: Record<string, unknown>, what: string): Buffer {
  const x5c = raw.x5c;
  if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string') throw invalid(what, '"x5c" must hold exactly one base64 certificate');
  const b64 = x5c[0];
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw invalid(what, '"x5c" is not standard base64');
  const der = Buffer.from(b64, 'base64');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch (e) {
    throw invalid(what, `"x5c" is not an X.509 certificate (${(e as Error).message})`);
  }
  if (!cert.ca) throw invalid(what, `"x5c" certificate ${cert.subject.replace(/\n/g, ', ')} is not a CA (basicConstraints cA is not set)`);
  const certKey = cert.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  if (spkiOfJwk(raw, what) !== certKey) throw invalid(what, 'the key parameters are not the public key of its "x5c" certificate');
  return der;
}

function jwtAuthority(raw: Record<string, unknown>, what: string): JwtAuthority {
  if (typeof raw.kid !== 'string' || raw.kid === '') throw invalid(what, 'a jwt-svid key needs a non-empty "kid"');
  spkiOfJwk(raw, what);
  return { kid: raw.kid, jwk: raw };
}

/**
 * Parses a SPIFFE bundle document of `trustDomain`. `what` names the source
 * in errors (a file, an endpoint).
 */
export function parseSpiffeBundle(text: string, trustDomain: string, what = 'bundle'): SpiffeBundle {
  validateTrustDomain(trustDomain);
  return { trustDomain, ...parseDocument(text, what) };
}

function parseDocument(text: string, what: string): Omit<SpiffeBundle, 'trustDomain'> {
  if (Buffer.byteLength(text) > MAX_BUNDLE_BYTES) throw invalid(what, `larger than ${MAX_BUNDLE_BYTES} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw invalid(what, `not JSON (${(e as Error).message})`);
  }
  const doc = DocSchema.safeParse(raw);
  if (!doc.success) throw invalid(what, zodProblem(doc.error));
  const x509: Buffer[] = [];
  const seenCerts = new Set<string>();
  const jwt: JwtAuthority[] = [];
  const kids = new Set<string>();
  doc.data.keys.forEach((k, i) => {
    const where = `${what}: keys[${i}]`;
    const key = KeySchema.safeParse(k);
    if (!key.success) throw invalid(where, zodProblem(key.error));
    const present = PRIVATE_MEMBERS.filter((m) => m in key.data);
    if (present.length > 0) throw invalid(where, `holds private key material (${present.join(', ')}); a bundle publishes public keys only`);
    if (key.data.use === X509_SVID_USE) {
      const der = x509Authority(key.data, where);
      const id = der.toString('base64');
      if (!seenCerts.has(id)) {
        seenCerts.add(id);
        x509.push(der);
      }
    } else if (key.data.use === JWT_SVID_USE) {
      const a = jwtAuthority(key.data, where);
      if (kids.has(a.kid)) throw invalid(where, `"kid" ${JSON.stringify(a.kid)} appears twice`);
      kids.add(a.kid);
      jwt.push(a);
    }
    // other uses: ignored (the standard asks consumers to)
  });
  return { x509Authorities: x509, jwtAuthorities: jwt, sequence: doc.data.spiffe_sequence, refreshHintSeconds: doc.data.spiffe_refresh_hint };
}

/** The JWK of an X.509 authority: its public key, use x509-svid, its certificate in x5c. */
function x509Jwk(der: Buffer): Record<string, unknown> {
  const jwk = new X509Certificate(der).publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  return { ...jwk, use: X509_SVID_USE, x5c: [der.toString('base64')] };
}

/** Serializes a bundle as a SPIFFE bundle document (what the bundle endpoint serves). */
export function serializeSpiffeBundle(b: SpiffeBundle): string {
  const doc: Record<string, unknown> = {
    keys: [...b.x509Authorities.map(x509Jwk), ...b.jwtAuthorities.map((a) => ({ ...a.jwk, kid: a.kid, use: JWT_SVID_USE }))],
  };
  if (b.sequence !== undefined) doc.spiffe_sequence = b.sequence;
  if (b.refreshHintSeconds !== undefined) doc.spiffe_refresh_hint = b.refreshHintSeconds;
  return JSON.stringify(doc, null, 2) + '\n';
}

/** The JWT authorities of a JWK set text (the JWT bundle agents carry); '' is none. */
export function jwtAuthoritiesOf(jwkSetJson: string, what: string): JwtAuthority[] {
  if (jwkSetJson === '') return [];
  return [...parseDocument(jwkSetJson, what).jwtAuthorities];
}

/** A JWK set (JSON) of JWT authorities, as FederatedBundle.jwt_bundle_json carries it; '' when none. */
export function jwtBundleJson(authorities: readonly JwtAuthority[]): string {
  return authorities.length === 0 ? '' : JSON.stringify({ keys: authorities.map((a) => ({ ...a.jwk, kid: a.kid, use: JWT_SVID_USE })) });
}

/**
 * A bundle from PEM: X.509 authorities only (CERTIFICATE blocks, each a CA),
 * no sequence. Text outside the blocks, other labels or no certificate at all
 * are errors.
 */
export function bundleFromPem(pem: string, trustDomain: string, what = 'bundle'): SpiffeBundle {
  validateTrustDomain(trustDomain);
  if (Buffer.byteLength(pem) > MAX_BUNDLE_BYTES) throw invalid(what, `larger than ${MAX_BUNDLE_BYTES} bytes`);
  let blocks: PemBlock[];
  try {
    blocks = parsePem(pem);
  } catch (e) {
    if (e instanceof PemSyntaxError) throw invalid(what, e.message);
    throw e;
  }
  const ders: Buffer[] = [];
  for (const { label, der } of blocks) {
    if (label !== 'CERTIFICATE') throw invalid(what, `expected CERTIFICATE blocks, found "${label}"`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
    } catch (e) {
      throw invalid(what, `certificate ${ders.length + 1} is not X.509 (${(e as Error).message})`);
    }
    if (!cert.ca) throw invalid(what, `certificate ${ders.length + 1} (${cert.subject.replace(/\n/g, ', ')}) is not a CA`);
    if (!ders.some((d) => d.equals(der))) ders.push(der);
  }
  if (ders.length === 0) throw invalid(what, 'no certificate found');
  return { trustDomain, x509Authorities: ders, jwtAuthorities: [] };
}

/** Whether a file's text looks like PEM rather than JSON. */
export function looksLikePem(text: string): boolean {
  return text.trimStart().startsWith('-----BEGIN ');
}

/** X.509 authorities as concatenated PEM. */
export function authoritiesPem(ders: readonly Buffer[]): string {
  return ders.map((d) => new X509Certificate(d).toString()).join('');
}

/** Whether two bundles hold the same authorities (order of the X.509 ones aside). */
export function sameAuthorities(a: SpiffeBundle, b: SpiffeBundle): boolean {
  const certs = (x: SpiffeBundle): string => x.x509Authorities.map((d) => d.toString('base64')).sort().join(',');
  const jwts = (x: SpiffeBundle): string => x.jwtAuthorities.map((j) => JSON.stringify(j.jwk, Object.keys(j.jwk).sort())).sort().join(',');
  return certs(a) === certs(b) && jwts(a) === jwts(b);
}
