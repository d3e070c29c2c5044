/**
 * One issuance, pure and synchronous: parse and verify the CSR, check that it
 * asks for no identity but the authenticated one, and sign a leaf for that
 * identity from the issuer's template. Runs on the calling thread or inside a
 * signing worker (src/ca/signer/).
 */
import { CastellanError } from '../platform/errors.ts';
import { derToPem } from '../platform/pem.ts';
import { parseAndVerifyCsr } from '../pki/csr.ts';
import { LeafTemplate, randomSerial } from '../pki/leaf.ts';
import { parseSpiffeId } from '../spiffe/id.ts';

/** Plain data (structured-cloneable), so it can be sent to worker threads. */
export interface IssuerMaterial {
  /** hex subject key identifier of the signing certificate */
  readonly id: string;
  readonly certDer: Uint8Array;
  /** PKCS#8 DER of the signing key */
  readonly keyPkcs8Der: Uint8Array;
  /** ms since epoch */
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface IssueRequest {
  readonly csrPem: string;
  /** the authenticated identity: the only name written into the leaf */
  readonly spiffeId: string;
  /** validated by the caller, > 0 */
  readonly ttlMs: number;
  /** ms since epoch */
  readonly now: number;
}

export interface IssueResult {
  readonly certPem: string;
  readonly certDer: Uint8Array;
  readonly serialHex: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly issuerId: string;
}

/** Clock skew allowance: notBefore is backdated by this much (never before the issuer's notBefore). */
export const BACKDATE_MS = 60_000;

interface CachedTemplate {
  certDer: Uint8Array;
  keyPkcs8Der: Uint8Array;
  template: LeafTemplate;
}
const templates = new Map<string, CachedTemplate>();
/** SPIFFE IDs already found well-formed (bounded; emptied when full). */
const checkedIds = new Set<string>();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a === b || Buffer.compare(a, b) === 0;
}

/**
 * The prepared template of an issuer. Cached by id, but a hit is used only if
 * the certificate and key bytes are the very same: a root re-issued with the
 * same key (same SKI, so same id) but another subject or validity gets a
 * fresh template. A handful of issuers at most live at once.
 */
export function templateFor(issuer: IssuerMaterial): LeafTemplate {
  const hit = templates.get(issuer.id);
  if (hit && sameBytes(hit.certDer, issuer.certDer) && sameBytes(hit.keyPkcs8Der, issuer.keyPkcs8Der)) return hit.template;
  if (templates.size >= 16) templates.clear();
  const template = new LeafTemplate(issuer.certDer, issuer.keyPkcs8Der);
  templates.set(issuer.id, { certDer: issuer.certDer, keyPkcs8Der: issuer.keyPkcs8Der, template });
  return template;
}

/**
 * Issues one workload certificate: parseAndVerifyCsr (INVALID_ARGUMENT
 * csr.*), then the identity check (a CSR may name no URI SAN, or exactly
 * `req.spiffeId`; anything else is PERMISSION_DENIED csr.identity_mismatch),
 * then the issuer's validity (UNAVAILABLE issuer.expired), then the leaf of
 * src/pki/leaf.ts for `req.spiffeId` with notBefore = max(now - 60 s, issuer
 * notBefore) and notAfter = min(now + ttl, issuer notAfter), both truncated
 * to whole seconds. Nothing of the CSR but its public key reaches the leaf.
 */
export function issueFromCsr(issuer: IssuerMaterial, req: IssueRequest): IssueResult {
  // The caller authenticated this identity; re-check its shape so a bug upstream can
  // never write a malformed or non-leaf URI into a certificate (security.md C6).
  if (!checkedIds.has(req.spiffeId)) {
    if (parseSpiffeId(req.spiffeId).path === '') {
      throw new CastellanError('INVALID_ARGUMENT', 'spiffe.invalid_id', 'invalid SPIFFE ID: a workload identity needs a path');
    }
    if (checkedIds.size >= 4096) checkedIds.clear();
    checkedIds.add(req.spiffeId);
  }
  if (!(req.ttlMs > 0) || !Number.isFinite(req.now)) throw new CastellanError('INVALID_ARGUMENT', 'issue.bad_request', 'ttl must be > 0 and now a finite time');
  const csr = parseAndVerifyCsr(req.csrPem);
  if (csr.uriSans.length > 1) {
    throw new CastellanError('PERMISSION_DENIED', 'csr.identity_mismatch', `CSR asks for ${csr.uriSans.length} URI SANs; at most one, the caller's own identity, is allowed`);
  }
  if (csr.uriSans.length === 1 && csr.uriSans[0] !== req.spiffeId) {
    throw new CastellanError('PERMISSION_DENIED', 'csr.identity_mismatch', `CSR asks for an identity other than the caller's (${req.spiffeId})`);
  }
  if (req.now < issuer.notBefore || req.now >= issuer.notAfter) {
    throw new CastellanError('UNAVAILABLE', 'issuer.expired', 'the signing certificate is expired or not yet valid');
  }
  const notBefore = Math.max(req.now - BACKDATE_MS, issuer.notBefore);
  const notAfter = Math.min(req.now + req.ttlMs, issuer.notAfter);
  const serial = randomSerial();
  const der = templateFor(issuer).sign({ serial, notBefore, notAfter, spki: csr.spki, spiffeId: req.spiffeId });
  return {
    certPem: derToPem(der),
    certDer: der,
    serialHex: serial.toString('hex'),
    notBefore: Math.floor(notBefore / 1000) * 1000,
    notAfter: Math.floor(notAfter / 1000) * 1000,
    issuerId: issuer.id,
  };
}
