/**
 * Foreign trust domains' bundles in the keyring document, pure logic: the
 * persisted record, parsing it back, storing a bundle (by hand or fetched
 * from a bundle endpoint) and forgetting one. Kept in the keyring so every
 * replica, restart and agent sees the same set through the same keystore,
 * watch and generation as the authorities (docs/federation.md).
 *
 * A fetched bundle never replaces the stored one when its sequence is lower,
 * nor when its sequence is equal but its content differs from a bundle that
 * itself came from the endpoint (the endpoint changed content without
 * counting: suspect). A bundle set by hand always replaces (that is how an
 * admin bootstraps or repairs).
 */
import { z } from 'zod';
import { CastellanError } from '../platform/errors.ts';
import { parseSpiffeBundle, sameAuthorities, serializeSpiffeBundle, type SpiffeBundle } from '../spiffe/bundle.ts';
import { validateTrustDomain } from '../spiffe/id.ts';

export const FederatedBundleRecordSchema = z.strictObject({
  trustDomain: z.string(),
  /** manual: `castellan bundle set` or a bootstrap file; endpoint: fetched */
  source: z.enum(['manual', 'endpoint']),
  /** the bundle endpoint it was fetched from (source endpoint) */
  endpointUrl: z.string().optional(),
  /** the SPIFFE bundle document as validated (re-serialized by Castellan) */
  document: z.string(),
  /** its spiffe_sequence (0 when it had none) */
  sequence: z.number().int().nonnegative(),
  /** when this content was stored (ISO) */
  updatedAt: z.iso.datetime(),
});
export type FederatedBundleRecord = z.infer<typeof FederatedBundleRecordSchema>;

export interface ForeignBundle {
  readonly record: FederatedBundleRecord;
  readonly bundle: SpiffeBundle;
}

/** The part of the keyring document this module reads and writes. */
export interface WithFederation {
  trustDomain: string;
  generation: number;
  federatedBundles?: FederatedBundleRecord[];
}

const parsedCache = new WeakMap<readonly FederatedBundleRecord[], ForeignBundle[]>();

/** Parses the stored records (cached per records array: documents are immutable). Throws naming the record. */
export function foreignBundles(doc: WithFederation): readonly ForeignBundle[] {
  const recs = doc.federatedBundles;
  if (!recs || recs.length === 0) return [];
  let out = parsedCache.get(recs);
  if (!out) {
    out = recs.map((record) => ({ record, bundle: parseSpiffeBundle(record.document, record.trustDomain, `federated bundle of ${record.trustDomain}`) }));
    parsedCache.set(recs, out);
  }
  return out;
}

/** What is wrong with the stored records, if anything (for parseKeyringDoc). */
export function checkFederatedBundles(doc: WithFederation): string | undefined {
  const seen = new Set<string>();
  for (const r of doc.federatedBundles ?? []) {
    try {
      validateTrustDomain(r.trustDomain);
    } catch (e) {
      return `federated bundle "${r.trustDomain}": ${(e as Error).message}`;
    }
    if (r.trustDomain === doc.trustDomain) return `federated bundle "${r.trustDomain}" is this keyring's own trust domain`;
    if (seen.has(r.trustDomain)) return `federated bundle "${r.trustDomain}" appears twice`;
    seen.add(r.trustDomain);
  }
  try {
    foreignBundles(doc);
  } catch (e) {
    return (e as Error).message;
  }
  return undefined;
}

export function findForeignBundle(doc: WithFederation, trustDomain: string): ForeignBundle | undefined {
  return foreignBundles(doc).find((f) => f.record.trustDomain === trustDomain);
}

function refuseOwn(doc: WithFederation, td: string): void {
  if (td === doc.trustDomain) {
    throw new CastellanError('INVALID_ARGUMENT', 'federation.own_trust_domain', `"${td}" is this server's own trust domain: its bundle is the keyring itself, not a federated one`);
  }
}

/** Why a fetched bundle must not replace the stored one, or undefined when it may ('same' when nothing changes). */
export function fetchedVerdict(stored: ForeignBundle | undefined, fetched: SpiffeBundle): { reason: 'lower_sequence' | 'same_sequence_changed'; message: string } | 'same' | undefined {
  if (!stored) return undefined;
  const seq = fetched.sequence ?? 0;
  const was = stored.record.sequence;
  if (seq < was) return { reason: 'lower_sequence', message: `spiffe_sequence ${seq} is lower than the stored bundle's ${was}` };
  if (seq === was) {
    // unchanged; a bundle set by hand is replaced by the same one fetched, so it shows where it comes from now
    if (sameAuthorities(stored.bundle, fetched)) return stored.record.source === 'endpoint' ? 'same' : undefined;
    if (stored.record.source === 'endpoint') return { reason: 'same_sequence_changed', message: `the authorities changed but spiffe_sequence stayed ${seq}` };
  }
  return undefined;
}

/** The document with `bundle` stored for its trust domain (replacing any stored one); generation bumped. */
export function withForeignBundle<D extends WithFederation>(doc: D, bundle: SpiffeBundle, o: { source: 'manual' | 'endpoint'; endpointUrl?: string; now: number }): D {
  validateTrustDomain(bundle.trustDomain);
  refuseOwn(doc, bundle.trustDomain);
  const record: FederatedBundleRecord = {
    trustDomain: bundle.trustDomain,
    source: o.source,
    ...(o.endpointUrl ? { endpointUrl: o.endpointUrl } : {}),
    document: serializeSpiffeBundle({ ...bundle, refreshHintSeconds: bundle.refreshHintSeconds }),
    sequence: bundle.sequence ?? 0,
    updatedAt: new Date(o.now).toISOString(),
  };
  const others = (doc.federatedBundles ?? []).filter((r) => r.trustDomain !== bundle.trustDomain);
  const all = [...others, record].sort((a, b) => a.trustDomain.localeCompare(b.trustDomain));
  return { ...doc, generation: doc.generation + 1, federatedBundles: all };
}

/** The document without `trustDomain`'s bundle; NOT_FOUND when none is stored. */
export function withoutForeignBundle<D extends WithFederation>(doc: D, trustDomain: string): D {
  refuseOwn(doc, trustDomain);
  const recs = doc.federatedBundles ?? [];
  if (!recs.some((r) => r.trustDomain === trustDomain)) throw new CastellanError('NOT_FOUND', 'federation.unknown_trust_domain', `no federated bundle is stored for trust domain "${trustDomain}"`);
  return { ...doc, generation: doc.generation + 1, federatedBundles: recs.filter((r) => r.trustDomain !== trustDomain) };
}

/** A comparable summary of the stored set (change detection for listeners). */
export function federationFingerprint(doc: WithFederation): string {
  return (doc.federatedBundles ?? []).map((r) => `${r.trustDomain}:${r.sequence}:${r.updatedAt}`).join(',');
}
