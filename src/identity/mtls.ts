/**
 * Renewal over mutual TLS: a caller presenting a valid workload certificate
 * from this CA gets its own identity again. The TLS layer has already proved
 * possession of the key and verified the chain to our trust bundle (grpc-js
 * only exposes an authorized peer certificate). Being trusted for a TLS
 * handshake is not enough to be believed: here the certificate must be a
 * leaf signed directly by a signing certificate that still *vouches* (an
 * active or old authority, never a tainted one: its key may be in an
 * attacker's hands, who could mint a leaf for any identity), currently
 * valid, with exactly one SPIFFE URI SAN naming a workload of our trust
 * domain. Names are read structurally from the SAN extension, never from
 * Node's subjectAltName string (security.md C7).
 */
import { X509Certificate } from 'node:crypto';
import { x509 } from '../platform/x509.ts';
import { CastellanError } from '../platform/errors.ts';
import { parseWorkloadSpiffeId, type WorkloadIdentity } from '../spiffe/id.ts';
import type { Caller } from './types.ts';

export interface PeerTrust {
  trustDomain: string;
  /** DER of the signing certificates whose leaves vouch for their holder (KeyringView.vouchingSignersDer). */
  vouchingSignersDer: readonly Uint8Array[];
  /** DER of tainted signing certificates: their leaves are refused with a message that says so. */
  taintedSignersDer?: readonly Uint8Array[];
}

/** The message a caller whose certificate comes from a tainted authority gets (agents react to its code). */
export const TAINTED_ISSUER_MESSAGE = 'client certificate issued by a tainted authority; authenticate with a service-account token';

function denied(reason: string): CastellanError {
  return new CastellanError('UNAUTHENTICATED', 'auth.peer_certificate', `client certificate not accepted: ${reason}`);
}

/** URI SANs of a certificate, parsed from the extension's ASN.1. */
export function uriSans(der: Uint8Array | x509.X509Certificate): string[] {
  const c = der instanceof x509.X509Certificate ? der : new x509.X509Certificate(der);
  const san = c.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return [];
  return san.names.items.filter((n) => n.type === 'url').map((n) => n.value);
}

/** Signing certificates change only with the keyring: parse each one once, not on every call. */
const signers = new WeakMap<Uint8Array, X509Certificate>();
function parsedSigner(der: Uint8Array): X509Certificate {
  let c = signers.get(der);
  if (!c) signers.set(der, (c = new X509Certificate(der)));
  return c;
}

export function authenticatePeerCertificate(peerDer: Uint8Array, trust: PeerTrust, now: number): Caller {
  let cert: X509Certificate;
  let sans: string[];
  let isCa: boolean;
  try {
    cert = new X509Certificate(peerDer);
    const pc = new x509.X509Certificate(peerDer);
    isCa = pc.getExtension(x509.BasicConstraintsExtension)?.ca === true;
    sans = uriSans(pc);
  } catch (e) {
    throw new CastellanError('UNAUTHENTICATED', 'auth.peer_certificate', 'client certificate cannot be parsed', { cause: e });
  }
  if (isCa) throw denied('it is a CA certificate');
  const signedBy = (s: X509Certificate): boolean => cert.checkIssued(s) && cert.verify(s.publicKey);
  if (!trust.vouchingSignersDer.map(parsedSigner).some(signedBy)) {
    if (trust.taintedSignersDer?.map(parsedSigner).some(signedBy)) throw new CastellanError('UNAUTHENTICATED', 'auth.issuer_tainted', TAINTED_ISSUER_MESSAGE);
    throw denied('it was not issued by an authority of this CA that vouches for callers');
  }
  const nb = Date.parse(cert.validFrom);
  const na = Date.parse(cert.validTo);
  if (!(nb <= now && now < na)) throw denied('it is expired or not yet valid');
  if (sans.length !== 1) throw denied(`it must have exactly one URI SAN, found ${sans.length}`);
  let identity: WorkloadIdentity;
  try {
    identity = parseWorkloadSpiffeId(sans[0]!);
  } catch {
    throw denied('its URI SAN is not a workload SPIFFE ID');
  }
  if (identity.trustDomain !== trust.trustDomain) throw denied(`its trust domain is "${identity.trustDomain}", not "${trust.trustDomain}"`);
  return { spiffeId: sans[0]!, identity, method: 'mtls', expiresAt: na };
}
