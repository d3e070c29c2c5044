/**
 * The agent's view of the trust domains its CA federates with (issue 17):
 * the `federated_bundles` of every castellan.v1.TrustService update,
 * validated one trust domain at a time.
 *
 * - Every update carries the complete set: a trust domain missing from it is
 *   no longer federated and is dropped.
 * - A bundle that fails validation (a name that is not a trust domain, PEM
 *   that does not parse, a certificate that is not a CA, a JWT bundle that is
 *   not a JWK set) is logged and the last good one of that trust domain is
 *   kept (none if it never had a good one).
 * - The agent's own trust domain is never taken from here: a CA that names it
 *   is ignored with a warning (its own roots come as `trust_bundle_pem`).
 * - A trust domain whose bundle holds no X.509 authority is kept for its JWT
 *   keys but offers nothing to TLS.
 */
import { X509Certificate } from 'node:crypto';
import type { Logger } from '../platform/logger.ts';
import { derToPem, parsePem, PemSyntaxError, type PemBlock } from '../platform/pem.ts';
import { validateTrustDomain } from '../spiffe/id.ts';
import { splitPemCertificates } from './cert-info.ts';

/** One foreign trust domain's bundle as the CA sent it. */
export interface FederatedBundleInput {
  /** X.509 authorities, PEM concatenated; '' when none. */
  x509AuthoritiesPem: string;
  /** JWK set JSON; '' when none. */
  jwtBundleJson: string;
  sequence: bigint;
}

/** A validated foreign bundle. */
export interface FederatedBundle {
  readonly trustDomain: string;
  /** X.509 authorities (CA certificates), PEM blocks, normalised; '' when none. */
  readonly x509Pem: string;
  /** JWK set JSON as received; '' when none. */
  readonly jwtBundleJson: string;
  readonly sequence: bigint;
}

/** A bound on what one update may carry, so a broken CA cannot make the agent hold anything. */
export const MAX_FEDERATED_DOMAINS = 1024;

/** Throws an Error saying what is wrong; returns the normalised bundle. */
export function validateFederatedBundle(trustDomain: string, b: FederatedBundleInput): FederatedBundle {
  validateTrustDomain(trustDomain);
  let x509Pem = '';
  if (b.x509AuthoritiesPem.trim() !== '') {
    let parsed: PemBlock[];
    try {
      parsed = parsePem(b.x509AuthoritiesPem);
    } catch (e) {
      throw new Error(e instanceof PemSyntaxError && e.problem === 'outside' ? 'X.509 authorities: text outside CERTIFICATE blocks' : `X.509 authorities: ${(e as Error).message}`);
    }
    if (parsed.some((p) => p.label !== 'CERTIFICATE')) throw new Error('X.509 authorities: text outside CERTIFICATE blocks');
    const blocks = parsed.map((p) => derToPem(p.der));
    if (blocks.length === 0) throw new Error('X.509 authorities: no certificate');
    blocks.forEach((pem, i) => {
      let c: X509Certificate;
      try {
        c = new X509Certificate(pem);
      } catch (e) {
        throw new Error(`X.509 authority #${i + 1} does not parse: ${(e as Error).message}`);
      }
      if (!c.ca) throw new Error(`X.509 authority #${i + 1} (${c.subject.replace(/\n/g, ', ')}) is not a CA certificate`);
    });
    x509Pem = blocks.join('');
  }
  if (b.jwtBundleJson.trim() !== '') {
    let set: unknown;
    try {
      set = JSON.parse(b.jwtBundleJson);
    } catch {
      throw new Error('JWT bundle is not JSON');
    }
    const keys = (set as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) throw new Error('JWT bundle is not a JWK set (no "keys" array)');
    keys.forEach((k: unknown, i) => {
      const key = k as { kty?: unknown; kid?: unknown } | null;
      if (typeof key?.kty !== 'string' || typeof key.kid !== 'string' || key.kid === '') throw new Error(`JWT key #${i + 1} has no kty or kid`);
    });
  }
  return { trustDomain, x509Pem, jwtBundleJson: b.jwtBundleJson.trim() === '' ? '' : b.jwtBundleJson, sequence: b.sequence };
}

export class FederatedBundles {
  private readonly own: string;
  private readonly logger: Logger;
  private current = new Map<string, FederatedBundle>();
  /** What was last refused per trust domain (logged once, not on every update). */
  private refused = new Map<string, string>();
  private ownWarned = false;

  constructor(ownTrustDomain: string | undefined, logger: Logger) {
    this.own = ownTrustDomain ?? '';
    this.logger = logger;
  }

  /** Trust domain → bundle, sorted by trust domain. */
  get bundles(): ReadonlyMap<string, FederatedBundle> {
    return this.current;
  }

  /**
   * Applies the complete set of one update. Returns the trust domains whose
   * bundle was added, changed or removed (empty when nothing changed).
   */
  apply(update: ReadonlyMap<string, FederatedBundleInput> | Readonly<Record<string, FederatedBundleInput>>): string[] {
    const entries = update instanceof Map ? [...update.entries()] : Object.entries(update);
    const next = new Map<string, FederatedBundle>();
    const refusedNow = new Map<string, string>();
    let taken = 0;
    for (const [td, input] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (td === this.own && this.own !== '') {
        if (!this.ownWarned) this.logger.warn({ event: 'agent.federated_own_domain', trustDomain: td }, 'the CA sent a federated bundle for our own trust domain: ignored');
        this.ownWarned = true;
        continue;
      }
      if (++taken > MAX_FEDERATED_DOMAINS) {
        refusedNow.set(td, `more than ${MAX_FEDERATED_DOMAINS} trust domains`);
        continue;
      }
      try {
        next.set(td, validateFederatedBundle(td, input));
      } catch (e) {
        const reason = (e as Error).message;
        refusedNow.set(td, reason);
        const last = this.current.get(td);
        if (last) next.set(td, last);
        if (this.refused.get(td) !== reason) {
          this.logger.error(
            { event: 'agent.federated_bundle_rejected', trustDomain: td.slice(0, 256), sequence: String(input.sequence), keeping: last ? String(last.sequence) : null, reason },
            last ? 'a federated bundle failed validation: keeping the last good one' : 'a federated bundle failed validation: that trust domain is not trusted',
          );
        }
      }
    }
    this.refused = refusedNow;
    const changed: string[] = [];
    for (const [td, b] of next) {
      const before = this.current.get(td);
      if (!before || before.x509Pem !== b.x509Pem || before.jwtBundleJson !== b.jwtBundleJson || before.sequence !== b.sequence) changed.push(td);
    }
    for (const td of this.current.keys()) if (!next.has(td)) changed.push(td);
    if (changed.length === 0) return [];
    for (const td of changed) {
      const b = next.get(td);
      this.logger.info(
        b
          ? { event: 'agent.federated_bundle', trustDomain: td, sequence: String(b.sequence), x509Authorities: splitPemCertificates(b.x509Pem).length, jwt: b.jwtBundleJson !== '' }
          : { event: 'agent.federated_bundle_removed', trustDomain: td },
        b ? 'federated bundle updated' : 'no longer federated with this trust domain',
      );
    }
    this.current = next;
    return changed.sort();
  }
}
