/**
 * The persisted form of the keyring: every authority the CA knows, with its
 * certificate, key, state and leaf accounting. One JSON document, stored by
 * a Keystore (src/ca/keystore.ts): a 0600 file in --data-dir, or the
 * `keyring.json` key of a Kubernetes Secret.
 *
 * States (SPIRE's slots, protocols.md §4):
 *   prepared  in the trust bundle, signs nothing (waiting for the bundle to propagate)
 *   active    signs (exactly one)
 *   old       was active; still trusted, signs nothing, its leaves expire naturally
 *   tainted   still trusted, but agents re-issue its leaves at once
 *   retired   gone from the bundle; its key is erased from the document
 */
import { z } from 'zod';
import { CastellanError } from '../platform/errors.ts';
import { CA_KEY_TYPES } from './keys.ts';
import { checkJwtKeys, JwtKeyRecordSchema } from './jwt-keys.ts';
import { checkFederatedBundles, FederatedBundleRecordSchema } from './federation.ts';

export const AUTHORITY_STATES = ['prepared', 'active', 'old', 'tainted', 'retired'] as const;
export type AuthorityState = (typeof AUTHORITY_STATES)[number];

const Iso = z.iso.datetime();

/**
 * What an authority signed, as far as the keystore knows: replicas add
 * their counts and raise `lastNotAfter` (a max, so merging is idempotent)
 * every flush interval and at every state change.
 */
const LeafAccounting = z.strictObject({
  /** certificates signed (all replicas, as flushed) */
  issued: z.number().int().nonnegative(),
  /** latest notAfter of any of them (ISO), null before the first */
  lastNotAfter: Iso.nullable(),
});

const AuthorityRecordSchema = z.strictObject({
  /** hex subject key identifier of the signing certificate */
  id: z.string().regex(/^[0-9a-f]{2,128}$/),
  state: z.enum(AUTHORITY_STATES),
  source: z.enum(['self-signed', 'plugin']),
  keyType: z.enum(CA_KEY_TYPES),
  /** the signing certificate */
  certPem: z.string(),
  /** PKCS#8 PEM; empty once retired */
  keyPem: z.string(),
  /** certificates between the signer and its root, signer excluded (plug-in); empty for a root */
  chainPem: z.string(),
  /** the root(s) this authority chains to; for a self-signed root, its own certificate */
  rootsPem: z.string(),
  createdAt: Iso,
  preparedAt: Iso.optional(),
  activatedAt: Iso.optional(),
  deactivatedAt: Iso.optional(),
  taintedAt: Iso.optional(),
  retiredAt: Iso.optional(),
  leaves: LeafAccounting,
});
export type AuthorityRecord = z.infer<typeof AuthorityRecordSchema>;

const KeyringSchema = z.strictObject({
  version: z.literal(2),
  trustDomain: z.string(),
  /** bumped by every change, so replicas and watchers can order documents */
  generation: z.number().int().nonnegative(),
  authorities: z.array(AuthorityRecordSchema).min(1),
  /** JWT-SVID signing keys (src/ca/jwt-keys.ts); absent before the first start with JWT-SVIDs */
  jwtKeys: z.array(JwtKeyRecordSchema).optional(),
  /**
   * Bundles of the foreign trust domains this one federates with
   * (src/ca/federation.ts); absent before the first one is stored. A replica
   * older than federation refuses a document that has this field (the schema
   * is strict): it keeps its last good keyring until it is upgraded.
   */
  federatedBundles: z.array(FederatedBundleRecordSchema).optional(),
  /**
   * `spiffe_sequence` of this trust domain's bundle: raised by one whenever
   * what the bundle holds changes (see withBundleSequence); absent in
   * documents written before federation, where the generation stands in.
   */
  bundleSequence: z.number().int().nonnegative().optional(),
});
export type KeyringDoc = z.infer<typeof KeyringSchema>;

/** The first file format (one active self-signed root, no accounting), read for upgrade. */
const KeyringV1Schema = z.strictObject({
  version: z.literal(1),
  trustDomain: z.string(),
  authorities: z
    .array(
      z.strictObject({
        id: z.string(),
        state: z.enum(['prepared', 'active', 'tainted', 'retired']),
        keyType: z.enum(CA_KEY_TYPES),
        certPem: z.string(),
        keyPem: z.string(),
        createdAt: z.string(),
      }),
    )
    .min(1),
});

export function corruptKeyring(where: string, why: string, cause?: unknown): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', 'keystore.corrupt', `keyring ${where} is unusable: ${why}`, { cause });
}

export function emptyLeaves(): AuthorityRecord['leaves'] {
  return { issued: 0, lastNotAfter: null };
}

/**
 * Parses and checks a stored keyring (text as stored). Structural checks
 * only; the certificates and keys are checked when authorities are built.
 * Throws FAILED_PRECONDITION keystore.corrupt naming `where` and the field.
 */
export function parseKeyringDoc(text: string, where: string): KeyringDoc {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw corruptKeyring(where, 'not valid JSON', e);
  }
  const v1 = KeyringV1Schema.safeParse(raw);
  if (v1.success) {
    return {
      version: 2,
      trustDomain: v1.data.trustDomain,
      generation: 1,
      authorities: v1.data.authorities.map((a) => ({
        id: a.id,
        state: a.state,
        source: 'self-signed',
        keyType: a.keyType,
        certPem: a.certPem,
        keyPem: a.keyPem,
        chainPem: '',
        rootsPem: a.certPem,
        createdAt: new Date(a.createdAt).toISOString(),
        leaves: emptyLeaves(),
      })),
    };
  }
  const parsed = KeyringSchema.safeParse(raw);
  if (!parsed.success) throw corruptKeyring(where, parsed.error.issues.map((i) => `${i.path.join('.') || '(document)'}: ${i.message}`).join('; '));
  const doc = parsed.data;
  const ids = new Set<string>();
  for (const a of doc.authorities) {
    if (ids.has(a.id)) throw corruptKeyring(where, `authority ${a.id} appears twice`);
    ids.add(a.id);
    if (a.state !== 'retired' && a.keyPem === '') throw corruptKeyring(where, `authority ${a.id} (${a.state}) has no key`);
  }
  const active = doc.authorities.filter((a) => a.state === 'active').length;
  if (active !== 1) throw corruptKeyring(where, `expected exactly one active authority, found ${active}`);
  const jwtProblem = checkJwtKeys(doc.jwtKeys ?? []);
  if (jwtProblem) throw corruptKeyring(where, jwtProblem);
  const fedProblem = checkFederatedBundles(doc);
  if (fedProblem) throw corruptKeyring(where, fedProblem);
  return doc;
}

/** What this trust domain's bundle holds: the authorities and JWT keys that are not retired (and their roots). */
function bundleContent(doc: KeyringDoc): string {
  const x509 = doc.authorities.filter((a) => a.state !== 'retired').map((a) => `${a.id}:${a.rootsPem}`);
  const jwt = (doc.jwtKeys ?? []).filter((k) => k.state !== 'retired').map((k) => k.kid);
  return JSON.stringify([x509.sort(), jwt.sort()]);
}

/** The bundle's `spiffe_sequence` in `doc`. */
export function bundleSequenceOf(doc: KeyringDoc): number {
  return doc.bundleSequence ?? doc.generation;
}

/**
 * `next` (a change of `prev`) with its bundle sequence raised when the
 * bundle's content changed, kept otherwise: leaf accounting, state changes
 * that keep an authority in the bundle and foreign bundles leave it alone,
 * so foreign trust domains re-store this bundle only when it really changed.
 * Starting from the generation keeps it from ever going back.
 */
export function withBundleSequence(prev: KeyringDoc, next: KeyringDoc): KeyringDoc {
  const seq = bundleSequenceOf(prev);
  const want = bundleContent(prev) === bundleContent(next) ? seq : seq + 1;
  return next.bundleSequence === want ? next : { ...next, bundleSequence: want };
}

export function serializeKeyringDoc(doc: KeyringDoc): string {
  return JSON.stringify(doc, null, 2) + '\n';
}
