/**
 * The keyring's logic, pure: what a keyring document means right now (the
 * view: who signs, what is trusted, what is tainted), the admin transitions
 * with their guard rails, and the automatic rotation thresholds. No I/O and
 * no clock of its own: `now` is always passed in (ms since epoch).
 *
 * Safe order of a root change (protocols.md §4): prepare (new root in the
 * bundle, signs nothing) → wait for the bundle to reach every workload →
 * activate (signs; the previous one becomes `old`, still trusted) → optionally
 * taint the old one (agents re-issue at once) → retire it once nothing it
 * signed is alive (gone from the bundle).
 */
import { X509Certificate } from 'node:crypto';
import { CastellanError, type ErrorCode } from '../platform/errors.ts';
import { buildAuthority, certInfo, type SigningAuthority } from './authority.ts';
import type { AuthorityRecord, AuthorityState, KeyringDoc } from './keyring-doc.ts';
import { parseCertificatesPem } from '../platform/pem.ts';
import { autoThresholds } from './thresholds.ts';

export { autoThresholds, type AutoThresholds } from './thresholds.ts';

export interface KeyringView {
  /** the document's generation */
  readonly generation: number;
  readonly trustDomain: string;
  /** the one authority that signs now */
  readonly active: SigningAuthority;
  /** every authority with a usable key that is not retired, by id */
  readonly authorities: ReadonlyMap<string, SigningAuthority>;
  readonly records: readonly AuthorityRecord[];
  /**
   * every root of every authority that is not retired, oldest authority first, no
   * duplicates: the order does not change on activation, so neither does the bundle
   */
  readonly trustBundlePem: string;
  readonly rootsDer: readonly Buffer[];
  /**
   * Signing certificates whose leaves still *vouch* for their holder: a
   * client certificate authenticates a caller to the CA (mTLS renewal,
   * WatchBundle) only when one of these issued it. Active and old authorities,
   * never a tainted one, nor any authority sharing a tainted one's key.
   * Trusting a certificate in a TLS handshake is another decision: that is
   * the trust bundle (`rootsDer`), which keeps tainted authorities until they
   * are retired so the data plane goes on working while workloads re-issue.
   */
  readonly vouchingSignersDer: readonly Buffer[];
  /** Signing certificates of tainted authorities (and of any sharing their key): named in refusals. */
  readonly taintedSignersDer: readonly Buffer[];
  /** ids of tainted authorities: agents re-issue leaves they signed */
  readonly taintedIds: readonly string[];
}

const iso = (ms: number): string => new Date(ms).toISOString();
const ms = (s: string | undefined): number | undefined => (s === undefined ? undefined : Date.parse(s));

function certsOf(pem: string, what: string): Buffer[] {
  return pem.trim() === '' ? [] : parseCertificatesPem(pem, what);
}

/** Builds the view of a keyring document; FAILED_PRECONDITION if the active authority is unusable. */
export function buildView(doc: KeyringDoc, now: number, where: string): KeyringView {
  const live = doc.authorities.filter((a) => a.state !== 'retired');
  const active = live.find((a) => a.state === 'active');
  if (!active) throw new CastellanError('FAILED_PRECONDITION', 'keystore.corrupt', `keyring ${where} has no active authority`);
  const ordered = [...live].sort((x, y) => x.createdAt.localeCompare(y.createdAt) || x.id.localeCompare(y.id));
  const seen = new Set<string>();
  const rootsDer: Buffer[] = [];
  for (const a of ordered) {
    for (const r of certsOf(a.rootsPem, `authority ${a.id} roots`)) {
      const k = r.toString('base64');
      if (!seen.has(k)) {
        seen.add(k);
        rootsDer.push(r);
      }
    }
  }
  const authorities = new Map<string, SigningAuthority>();
  for (const a of ordered) {
    const certDer = certsOf(a.certPem, `authority ${a.id}`)[0];
    if (!certDer) throw new CastellanError('FAILED_PRECONDITION', 'keystore.corrupt', `keyring ${where}: authority ${a.id} has no certificate`);
    authorities.set(
      a.id,
      buildAuthority({
        certDer,
        keyPem: a.keyPem,
        chainDers: certsOf(a.chainPem, `authority ${a.id} chain`),
        rootDers: rootsDer,
        now,
        what: `keyring ${where}, authority ${a.id} (${a.state})`,
        requireValid: a.state === 'active',
      }),
    );
  }
  const signing = authorities.get(active.id)!;
  return {
    generation: doc.generation,
    trustDomain: doc.trustDomain,
    active: signing,
    authorities,
    records: doc.authorities,
    trustBundlePem: signing.trustBundlePem,
    rootsDer,
    ...vouching(ordered, authorities),
    taintedIds: live.filter((a) => a.state === 'tainted').map((a) => a.id),
  };
}

/** The SubjectPublicKeyInfo of a certificate, as a comparable string. */
function spkiOf(certDer: Buffer): string {
  return new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
}

/** Splits the signers of leaves (all but prepared) into those that vouch and those that are tainted. */
function vouching(ordered: readonly AuthorityRecord[], authorities: ReadonlyMap<string, SigningAuthority>): Pick<KeyringView, 'vouchingSignersDer' | 'taintedSignersDer'> {
  const signers = ordered.filter((a) => a.state !== 'prepared').map((a) => ({ state: a.state, der: authorities.get(a.id)!.certDer }));
  const taintedKeys = new Set(signers.filter((a) => a.state === 'tainted').map((a) => spkiOf(a.der)));
  const isTainted = (a: { state: AuthorityState; der: Buffer }): boolean => a.state === 'tainted' || (taintedKeys.size > 0 && taintedKeys.has(spkiOf(a.der)));
  return {
    vouchingSignersDer: signers.filter((a) => !isTainted(a)).map((a) => a.der),
    taintedSignersDer: signers.filter(isTainted).map((a) => a.der),
  };
}

/** Authorities (other than `except`) whose signing key is the same as `rec`'s. */
function sameKey(doc: KeyringDoc, rec: AuthorityRecord, states: readonly AuthorityState[]): AuthorityRecord[] {
  const key = spkiOf(parseCertificatesPem(rec.certPem, `authority ${rec.id}`)[0]!);
  return doc.authorities.filter((a) => a.id !== rec.id && states.includes(a.state) && spkiOf(parseCertificatesPem(a.certPem, `authority ${a.id}`)[0]!) === key);
}

// ---- transitions -------------------------------------------------------

export interface TransitionOptions {
  now: number;
  /** override the guard rails (not the invariants); the risk taken is reported */
  force?: boolean;
  /** ms a prepared authority must have been in the bundle before it may be activated */
  propagationMs: number;
}

export interface TransitionResult {
  doc: KeyringDoc;
  /** the authority that changed, after the change */
  authority: AuthorityRecord;
  /** what --force accepted, when a guard was overridden */
  forcedRisk?: string;
}

function refuse(code: ErrorCode, msg: string): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', code, msg);
}

/** A guard rail: refused unless forced; then the risk is reported. */
function guard(o: TransitionOptions, msg: string, risk: string): string | undefined {
  if (!o.force) throw refuse('rotation.guard', `${msg}; --force overrides it, at this risk: ${risk}`);
  return risk;
}

function find(doc: KeyringDoc, id: string): AuthorityRecord {
  const matches = doc.authorities.filter((a) => a.id === id || (id.length >= 8 && a.id.startsWith(id)));
  if (matches.length === 0) throw new CastellanError('NOT_FOUND', 'rotation.unknown_authority', `no authority with id ${id}`);
  if (matches.length > 1) throw new CastellanError('INVALID_ARGUMENT', 'rotation.ambiguous_id', `id ${id} matches ${matches.length} authorities; give more of it`);
  return matches[0]!;
}

/** The most recently deactivated authority in one of `states`. */
function previous(doc: KeyringDoc, states: AuthorityState[]): AuthorityRecord | undefined {
  return doc.authorities
    .filter((a) => states.includes(a.state))
    .sort((a, b) => (ms(b.deactivatedAt) ?? 0) - (ms(a.deactivatedAt) ?? 0))[0];
}

function replace(doc: KeyringDoc, changes: Map<string, AuthorityRecord>): KeyringDoc {
  return { ...doc, generation: doc.generation + 1, authorities: doc.authorities.map((a) => changes.get(a.id) ?? a) };
}

/** Adds a new authority as `prepared` (in the bundle, signing nothing). One prepared at a time. */
export function addPrepared(doc: KeyringDoc, rec: AuthorityRecord, o: TransitionOptions): TransitionResult {
  if (doc.authorities.some((a) => a.id === rec.id)) throw new CastellanError('ALREADY_EXISTS', 'rotation.exists', `authority ${rec.id} is already in the keyring`);
  const pending = doc.authorities.find((a) => a.state === 'prepared');
  if (pending) throw refuse('rotation.already_prepared', `authority ${pending.id} is already prepared: activate or retire it first`);
  const authority: AuthorityRecord = { ...rec, state: 'prepared', preparedAt: iso(o.now) };
  return { doc: { ...doc, generation: doc.generation + 1, authorities: [...doc.authorities, authority] }, authority };
}

/** The prepared authority signs from now on; the active one becomes `old` (still trusted). */
export function activate(doc: KeyringDoc, id: string | undefined, o: TransitionOptions): TransitionResult {
  const target = id ? find(doc, id) : doc.authorities.find((a) => a.state === 'prepared');
  if (!target) throw refuse('rotation.nothing_prepared', 'no prepared authority to activate: run "castellan ca prepare" (or "import") first');
  if (target.state !== 'prepared') throw refuse('rotation.bad_state', `authority ${target.id} is ${target.state}; only a prepared authority can be activated`);
  const cert = certInfo(parseCertificatesPem(target.certPem, `authority ${target.id}`)[0]!);
  if (cert.notBefore > o.now || cert.notAfter <= o.now) throw refuse('rotation.not_valid', `authority ${target.id} is not valid now (${iso(cert.notBefore)} to ${iso(cert.notAfter)})`);
  const taintedTwin = sameKey(doc, target, ['tainted'])[0];
  if (taintedTwin) throw refuse('rotation.tainted_key', `authority ${target.id} has the same key as tainted authority ${taintedTwin.id}: a suspect key cannot sign again; prepare an authority with a new key`);
  let forcedRisk: string | undefined;
  const inBundleSince = ms(target.preparedAt) ?? o.now;
  if (o.now - inBundleSince < o.propagationMs) {
    forcedRisk = guard(
      o,
      `authority ${target.id} has been in the trust bundle for ${Math.round((o.now - inBundleSince) / 1000)}s, less than the propagation time (${Math.round(o.propagationMs / 1000)}s)`,
      'workloads that have not received the new bundle yet will reject every certificate the new authority signs',
    );
  }
  const current = doc.authorities.find((a) => a.state === 'active')!;
  const authority: AuthorityRecord = { ...target, state: 'active', activatedAt: iso(o.now) };
  const changes = new Map([
    [authority.id, authority],
    [current.id, { ...current, state: 'old' as const, deactivatedAt: iso(o.now) }],
  ]);
  return { doc: replace(doc, changes), authority, forcedRisk };
}

/**
 * Marks a previous authority tainted ("this key may be stolen"): from now on
 * no certificate it issued authenticates a caller to the CA, while the trust
 * bundle keeps it until it is retired, so workloads go on talking while they
 * re-issue (agents do so at once). Refused when the active or prepared
 * authority shares its key: that key would still be in use.
 */
export function taint(doc: KeyringDoc, id: string | undefined, o: TransitionOptions): TransitionResult {
  const target = id ? find(doc, id) : previous(doc, ['old']);
  if (!target) throw refuse('rotation.nothing_to_taint', 'no previous authority to taint (only an authority that was active and was replaced can be tainted)');
  if (target.state === 'active') throw refuse('rotation.active', `authority ${target.id} is the active one: activate another authority first, then taint this one`);
  if (target.state !== 'old') throw refuse('rotation.bad_state', `authority ${target.id} is ${target.state}; only an old (replaced) authority can be tainted`);
  const signingTwin = sameKey(doc, target, ['active', 'prepared'])[0];
  if (signingTwin) {
    throw refuse('rotation.shared_key', `authority ${target.id} has the same key as ${signingTwin.state} authority ${signingTwin.id}: tainting it would leave a suspect key in use; prepare and activate an authority with a new key first`);
  }
  const authority: AuthorityRecord = { ...target, state: 'tainted', taintedAt: iso(o.now) };
  return { doc: replace(doc, new Map([[authority.id, authority]])), authority };
}

/** When retiring `rec` becomes safe: when the last leaf it signed has expired (ms), or now if it signed none. */
export function retireSafeAt(rec: AuthorityRecord, now: number): number {
  if (rec.state === 'prepared') return now;
  const last = ms(rec.leaves.lastNotAfter ?? undefined);
  const certNotAfter = certInfo(parseCertificatesPem(rec.certPem, `authority ${rec.id}`)[0]!).notAfter;
  // No leaf outlives its issuer, so the certificate's own end bounds the wait.
  return Math.min(last ?? now, certNotAfter);
}

/** Removes a previous (or prepared) authority from the trust bundle and erases its key. */
export function retire(doc: KeyringDoc, id: string | undefined, o: TransitionOptions): TransitionResult {
  const target = id ? find(doc, id) : previous(doc, ['tainted', 'old']);
  if (!target) throw refuse('rotation.nothing_to_retire', 'no previous authority to retire');
  if (target.state === 'active') throw refuse('rotation.active', `authority ${target.id} is the active one: retiring it would leave nothing to sign with; activate another authority first`);
  if (target.state === 'retired') throw refuse('rotation.bad_state', `authority ${target.id} is already retired`);
  let forcedRisk: string | undefined;
  const safeAt = retireSafeAt(target, o.now);
  if (safeAt > o.now) {
    forcedRisk = guard(
      o,
      `authority ${target.id} signed certificates that are still valid (the last expires at ${iso(safeAt)})`,
      `those certificates stop verifying wherever the new bundle arrives, until they are re-issued${target.state === 'tainted' ? ' (they were tainted: agents have been re-issuing them)' : ''}`,
    );
  }
  const authority: AuthorityRecord = { ...target, state: 'retired', keyPem: '', retiredAt: iso(o.now) };
  return { doc: replace(doc, new Map([[authority.id, authority]])), authority, forcedRisk };
}

/** Adds leaf accounting (counts add up, lastNotAfter is a max: merging twice is harmless for it). */
export function addLeaves(doc: KeyringDoc, deltas: ReadonlyMap<string, { issued: number; lastNotAfter: number }>): KeyringDoc {
  let changed = false;
  const authorities = doc.authorities.map((a) => {
    const d = deltas.get(a.id);
    if (!d) return a;
    changed = true;
    const prev = ms(a.leaves.lastNotAfter ?? undefined) ?? 0;
    return { ...a, leaves: { issued: a.leaves.issued + d.issued, lastNotAfter: iso(Math.max(prev, d.lastNotAfter)) } };
  });
  return changed ? { ...doc, generation: doc.generation + 1, authorities } : doc;
}

// ---- automatic rotation (self-signed roots) -----------------------------


export type AutoStep = { kind: 'prepare' } | { kind: 'activate'; id: string } | { kind: 'retire'; id: string };

/**
 * What automatic rotation should do now, if anything, and when to look
 * again (ms since epoch). Self-signed keyrings only; plug-in authorities
 * are rotated by their admins (prepare/import, activate).
 */
export function nextAutoStep(doc: KeyringDoc, now: number, propagationMs: number): { step?: AutoStep; recheckAt: number } {
  const active = doc.authorities.find((a) => a.state === 'active')!;
  const cert = certInfo(parseCertificatesPem(active.certPem, `authority ${active.id}`)[0]!);
  const t = autoThresholds(cert.notBefore, cert.notAfter);
  const prepared = doc.authorities.find((a) => a.state === 'prepared');
  const candidates: number[] = [];
  // retire what nothing alive depends on any more
  for (const a of doc.authorities) {
    if (a.state !== 'old' && a.state !== 'tainted') continue;
    const safe = retireSafeAt(a, now);
    if (safe <= now) return { step: { kind: 'retire', id: a.id }, recheckAt: now };
    candidates.push(safe);
  }
  if (active.source === 'self-signed') {
    if (!prepared) {
      const at = cert.notAfter - t.prepareAt;
      if (now >= at) return { step: { kind: 'prepare' }, recheckAt: now };
      candidates.push(at);
    } else {
      const at = Math.max(cert.notAfter - t.activateAt, (ms(prepared.preparedAt) ?? now) + propagationMs);
      if (now >= at) return { step: { kind: 'activate', id: prepared.id }, recheckAt: now };
      candidates.push(at);
    }
  }
  return { recheckAt: Math.min(...candidates, now + 3_600_000) };
}
