/**
 * One issuance, pure and synchronous: parse and verify the CSR, check that it
 * asks for no identity but the authenticated one, and sign a leaf for that
 * identity from the issuer's template. Runs on the calling thread or inside a
 * signing worker (src/ca/signer/).
 */
import { CastellanError } from '../platform/errors.ts';
import { derToPem } from './pem.ts';
import { parseAndVerifyCsr } from '../pki/csr.ts';
import { LeafTemplate, randomSerial } from '../pki/leaf.ts';

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

const templates = new Map<string, LeafTemplate>();

/** The prepared template of an issuer (cached by id; a handful of issuers at most live at once). */
export function templateFor(issuer: IssuerMaterial): LeafTemplate {
  let t = templates.get(issuer.id);
  if (!t) {
    if (templates.size > 16) templates.clear();
    t = new LeafTemplate(issuer.certDer, issuer.keyPkcs8Der);
    templates.set(issuer.id, t);
  }
  return t;
}

export function issueFromCsr(issuer: IssuerMaterial, req: IssueRequest): IssueResult {
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
