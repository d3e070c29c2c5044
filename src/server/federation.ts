/**
 * Federation on the CA server, the part every other piece shares: this trust
 * domain's own bundle (what the bundle endpoint serves and `castellan bundle
 * show` prints), the foreign bundles stored in the keyring (set by hand or by
 * the fetcher, src/server/federation-fetch.ts), the `federated_bundles` of
 * every BundleUpdate, and the admin calls behind `castellan bundle`.
 */
import { create } from '@bufbuild/protobuf';
import { findForeignBundle, foreignBundles, withForeignBundle, withoutForeignBundle, type ForeignBundle } from '../ca/federation.ts';
import { bundleSequenceOf } from '../ca/keyring-doc.ts';
import type { CaManager } from '../ca/manager.ts';
import type { JwtKeyManager } from '../ca/jwt-manager.ts';
import { FederatedBundleSchema, type FederatedBundle } from '../gen/castellan/v1/trust_pb.js';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import { authoritiesPem, bundleFromPem, jwtAuthoritiesOf, jwtBundleJson, looksLikePem, parseSpiffeBundle, serializeSpiffeBundle, type SpiffeBundle } from '../spiffe/bundle.ts';
import { validateTrustDomain } from '../spiffe/id.ts';

/** Default `spiffe_refresh_hint` of the served bundle, seconds (--bundle-refresh-hint). */
export const DEFAULT_REFRESH_HINT_SECONDS = 300;

/** What this replica knows of its fetches of one trust domain (not persisted). */
export interface FetchStatus {
  endpointUrl: string;
  /** ms of the last successful fetch (the bundle validated, stored or unchanged) */
  lastSuccess?: number;
  lastError?: string;
}

export interface FederatedBundleSummary {
  trustDomain: string;
  source: 'manual' | 'endpoint';
  endpointUrl: string;
  sequence: number;
  updatedAt: string;
  lastRefresh?: string;
  x509Authorities: number;
  jwtAuthorities: number;
  lastError?: string;
}

export interface FederationOptions {
  manager: CaManager;
  jwtKeys?: JwtKeyManager;
  /** `spiffe_refresh_hint` of the served bundle, seconds */
  refreshHintSeconds: number;
  clock: Clock;
  logger: Logger;
}

export class Federation {
  /** per foreign trust domain, filled by the fetcher */
  readonly fetchStatus = new Map<string, FetchStatus>();

  private readonly o: FederationOptions;

  constructor(o: FederationOptions) {
    this.o = o;
  }

  get trustDomain(): string {
    return this.o.manager.view().trustDomain;
  }

  /**
   * This trust domain's bundle: every X.509 authority trusted now (the trust
   * bundle), every JWT key not retired, the keyring's bundle sequence as
   * `spiffe_sequence` (raised with every change of that content, stored in the
   * keyring: the same across restarts and replicas), and the refresh hint.
   */
  ownBundle(): SpiffeBundle {
    const view = this.o.manager.view();
    return {
      trustDomain: view.trustDomain,
      x509Authorities: view.rootsDer,
      jwtAuthorities: this.o.jwtKeys ? jwtAuthoritiesOf(this.o.jwtKeys.view().bundleJson, 'JWT bundle') : [],
      sequence: bundleSequenceOf(this.o.manager.document()),
      refreshHintSeconds: this.o.refreshHintSeconds,
    };
  }

  ownBundleDocument(): string {
    return serializeSpiffeBundle(this.ownBundle());
  }

  stored(): readonly ForeignBundle[] {
    return foreignBundles(this.o.manager.document());
  }

  find(trustDomain: string): ForeignBundle | undefined {
    return findForeignBundle(this.o.manager.document(), trustDomain);
  }

  /** The `federated_bundles` of a BundleUpdate: every stored foreign bundle. */
  bundleUpdateFields(): { federatedBundles: Record<string, FederatedBundle> } {
    const out: Record<string, FederatedBundle> = {};
    for (const f of this.stored()) {
      out[f.record.trustDomain] = create(FederatedBundleSchema, {
        x509AuthoritiesPem: authoritiesPem(f.bundle.x509Authorities),
        jwtBundleJson: jwtBundleJson(f.bundle.jwtAuthorities),
        sequence: BigInt(f.record.sequence),
      });
    }
    return { federatedBundles: out };
  }

  /** Stores a bundle given by an admin (`castellan bundle set`), replacing any stored one. */
  async setManual(trustDomain: string, text: string, format: string): Promise<FederatedBundleSummary> {
    const bundle = parseBundleText(trustDomain, text, format, 'bundle');
    if (bundle.trustDomain === this.trustDomain) {
      throw new CastellanError('INVALID_ARGUMENT', 'federation.own_trust_domain', `"${trustDomain}" is this server's own trust domain: its bundle is the keyring itself, not a federated one`);
    }
    await this.o.manager.updateDocument((doc) => withForeignBundle(doc, bundle, { source: 'manual', now: this.o.clock.now() }));
    this.o.logger.info({ event: 'federation.bundle_set', trustDomain, sequence: bundle.sequence ?? 0, x509: bundle.x509Authorities.length, jwt: bundle.jwtAuthorities.length }, `federated bundle of ${trustDomain} set by hand`);
    return this.summary(this.find(trustDomain)!);
  }

  async delete(trustDomain: string): Promise<void> {
    validateTrustDomain(trustDomain);
    await this.o.manager.updateDocument((doc) => withoutForeignBundle(doc, trustDomain));
    this.o.logger.info({ event: 'federation.bundle_deleted', trustDomain }, `federated bundle of ${trustDomain} deleted`);
  }

  summary(f: ForeignBundle): FederatedBundleSummary {
    const st = this.fetchStatus.get(f.record.trustDomain);
    return {
      trustDomain: f.record.trustDomain,
      source: f.record.source,
      endpointUrl: f.record.endpointUrl ?? st?.endpointUrl ?? '',
      sequence: f.record.sequence,
      updatedAt: f.record.updatedAt,
      lastRefresh: st?.lastSuccess === undefined ? undefined : new Date(st.lastSuccess).toISOString(),
      x509Authorities: f.bundle.x509Authorities.length,
      jwtAuthorities: f.bundle.jwtAuthorities.length,
      lastError: st?.lastError,
    };
  }

  list(): FederatedBundleSummary[] {
    return this.stored().map((f) => this.summary(f));
  }
}

/**
 * A bundle file's text for `trustDomain`: format "spiffe" (the SPIFFE bundle
 * document), "pem" (CA certificates), or "" to detect (PEM when it starts
 * with a PEM block). INVALID_ARGUMENT with the precise problem.
 */
export function parseBundleText(trustDomain: string, text: string, format: string, what: string): SpiffeBundle {
  try {
    validateTrustDomain(trustDomain);
  } catch (e) {
    throw new CastellanError('INVALID_ARGUMENT', 'federation.trust_domain', `trust domain "${trustDomain.slice(0, 300)}": ${(e as Error).message}`);
  }
  const f = format === '' ? (looksLikePem(text) ? 'pem' : 'spiffe') : format;
  if (f === 'pem') return bundleFromPem(text, trustDomain, what);
  if (f === 'spiffe') return parseSpiffeBundle(text, trustDomain, what);
  throw new CastellanError('INVALID_ARGUMENT', 'federation.format', `format must be "spiffe" or "pem", got "${format.slice(0, 32)}"`);
}
