/**
 * JWT-SVID signing keys in the keyring, pure logic: the persisted record,
 * what the keys mean now (who signs, the JWT bundle, what is tainted), the
 * admin transitions with their guard rails and the automatic rotation step.
 * The same life cycle as the X.509 authorities (src/ca/keyring.ts):
 *
 *   prepared  published in the JWT bundle, signs nothing (waits for the
 *             bundle to reach every validator)
 *   active    signs (at most one; exactly one once JWT-SVIDs are enabled)
 *   old       was active; still published, signs nothing
 *   tainted   still published until retired, but validators (the agent's
 *             ValidateJWTSVID) refuse what it signed at or after the taint
 *   retired   gone from the bundle, its private key erased
 *
 * No I/O, no clock: `now` is passed in (ms since epoch).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { CastellanError, type ErrorCode } from '../platform/errors.ts';
import { autoThresholds } from './thresholds.ts';

export const JWT_ALGS = ['ES256', 'ES384', 'RS256', 'PS256'] as const;
export type JwtAlg = (typeof JWT_ALGS)[number];
export const JWT_KEY_STATES = ['prepared', 'active', 'old', 'tainted', 'retired'] as const;
export type JwtKeyState = (typeof JWT_KEY_STATES)[number];

const Iso = z.iso.datetime();

export const JwtKeyRecordSchema = z.strictObject({
  /** the JWS `kid`: 32 hex digits, random */
  kid: z.string().regex(/^[0-9a-f]{32}$/),
  state: z.enum(JWT_KEY_STATES),
  alg: z.enum(JWT_ALGS),
  /** PKCS#8 PEM; empty once retired */
  keyPem: z.string(),
  createdAt: Iso,
  /** end of the key's planned life: automatic rotation replaces it before */
  notAfter: Iso,
  preparedAt: Iso.optional(),
  activatedAt: Iso.optional(),
  deactivatedAt: Iso.optional(),
  taintedAt: Iso.optional(),
  retiredAt: Iso.optional(),
  /** tokens signed (all replicas, as flushed) and the latest `exp` of any of them */
  tokens: z.strictObject({ issued: z.number().int().nonnegative(), lastNotAfter: Iso.nullable() }),
});
export type JwtKeyRecord = z.infer<typeof JwtKeyRecordSchema>;

/** What the keyring's JWT keys mean now. */
export interface JwtKeysView {
  /** the key that signs, if any */
  readonly active?: { kid: string; alg: JwtAlg; keyPem: string; notAfter: number };
  /** every key that is not retired */
  readonly published: readonly { kid: string; alg: JwtAlg; state: JwtKeyState }[];
  /** JWK set JSON of the published keys (each with kid, use "jwt-svid", alg); '' when there are none */
  readonly bundleJson: string;
  /** tainted keys, taint time in ms */
  readonly tainted: readonly { kid: string; taintedAt: number }[];
  readonly records: readonly JwtKeyRecord[];
}

const iso = (ms: number): string => new Date(ms).toISOString();
const ms = (s: string | undefined | null): number | undefined => (s === undefined || s === null ? undefined : Date.parse(s));

/** Checks the JWT keys of a stored keyring (structure is zod's); the message names what is wrong. */
export function checkJwtKeys(keys: readonly JwtKeyRecord[]): string | undefined {
  const kids = new Set<string>();
  for (const k of keys) {
    if (kids.has(k.kid)) return `JWT key ${k.kid} appears twice`;
    kids.add(k.kid);
    if (k.state !== 'retired' && k.keyPem === '') return `JWT key ${k.kid} (${k.state}) has no key`;
  }
  const active = keys.filter((k) => k.state === 'active').length;
  if (active > 1) return `expected at most one active JWT key, found ${active}`;
  return undefined;
}

/** The public JWK of a key, as published: kty and its parameters, kid, use "jwt-svid", alg. */
export function publicJwk(rec: Pick<JwtKeyRecord, 'kid' | 'alg' | 'keyPem'>): Record<string, string> {
  const jwk = createPublicKey(createPrivateKey(rec.keyPem)).export({ format: 'jwk' }) as Record<string, string>;
  return { ...jwk, kid: rec.kid, use: 'jwt-svid', alg: rec.alg };
}

export function buildJwtView(keys: readonly JwtKeyRecord[] | undefined): JwtKeysView {
  const list = keys ?? [];
  const live = list.filter((k) => k.state !== 'retired').sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.kid.localeCompare(b.kid));
  const a = live.find((k) => k.state === 'active');
  return {
    active: a && { kid: a.kid, alg: a.alg, keyPem: a.keyPem, notAfter: Date.parse(a.notAfter) },
    published: live.map((k) => ({ kid: k.kid, alg: k.alg, state: k.state })),
    bundleJson: live.length === 0 ? '' : JSON.stringify({ keys: live.map(publicJwk) }),
    tainted: live.filter((k) => k.state === 'tainted').map((k) => ({ kid: k.kid, taintedAt: Date.parse(k.taintedAt!) })),
    records: list,
  };
}

/** A new key pair for `alg`, as a record in `state`. */
export function newJwtKeyRecord(alg: JwtAlg, ttlMs: number, now: number, state: 'active' | 'prepared'): JwtKeyRecord {
  const { privateKey } =
    alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    : alg === 'ES384' ? generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const t = iso(now);
  return {
    kid: randomBytes(16).toString('hex'),
    state,
    alg,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    createdAt: t,
    notAfter: iso(now + ttlMs),
    ...(state === 'active' ? { activatedAt: t } : { preparedAt: t }),
    tokens: { issued: 0, lastNotAfter: null },
  };
}

// ---- transitions ----------------------------------------------------------

export interface JwtTransitionOptions {
  now: number;
  force?: boolean;
  propagationMs: number;
}

export interface JwtTransition {
  keys: JwtKeyRecord[];
  key: JwtKeyRecord;
  forcedRisk?: string;
}

function refuse(code: ErrorCode, msg: string): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', code, msg);
}

function guard(o: JwtTransitionOptions, msg: string, risk: string): string | undefined {
  if (!o.force) throw refuse('rotation.guard', `${msg}; --force overrides it, at this risk: ${risk}`);
  return risk;
}

function find(keys: readonly JwtKeyRecord[], id: string): JwtKeyRecord {
  const m = keys.filter((k) => k.kid === id || (id.length >= 8 && k.kid.startsWith(id)));
  if (m.length === 0) throw new CastellanError('NOT_FOUND', 'rotation.unknown_key', `no JWT key with id ${id}`);
  if (m.length > 1) throw new CastellanError('INVALID_ARGUMENT', 'rotation.ambiguous_id', `id ${id} matches ${m.length} JWT keys; give more of it`);
  return m[0]!;
}

function previous(keys: readonly JwtKeyRecord[], states: JwtKeyState[]): JwtKeyRecord | undefined {
  return keys.filter((k) => states.includes(k.state)).sort((a, b) => (ms(b.deactivatedAt) ?? 0) - (ms(a.deactivatedAt) ?? 0))[0];
}

const replace = (keys: readonly JwtKeyRecord[], changed: readonly JwtKeyRecord[]): JwtKeyRecord[] => keys.map((k) => changed.find((c) => c.kid === k.kid) ?? k);

/** Adds a key: active when there is none yet (first start), else prepared (one at a time). */
export function jwtAddKey(keys: readonly JwtKeyRecord[], rec: JwtKeyRecord, o: JwtTransitionOptions): JwtTransition {
  if (rec.state === 'active') {
    if (keys.some((k) => k.state === 'active')) throw refuse('rotation.bad_state', 'a JWT key is already active');
    return { keys: [...keys, rec], key: rec };
  }
  const pending = keys.find((k) => k.state === 'prepared');
  if (pending) throw refuse('rotation.already_prepared', `JWT key ${pending.kid} is already prepared: activate or retire it first`);
  const key = { ...rec, state: 'prepared' as const, preparedAt: iso(o.now) };
  return { keys: [...keys, key], key };
}

export function jwtActivate(keys: readonly JwtKeyRecord[], id: string | undefined, o: JwtTransitionOptions): JwtTransition {
  const target = id ? find(keys, id) : keys.find((k) => k.state === 'prepared');
  if (!target) throw refuse('rotation.nothing_prepared', 'no prepared JWT key to activate: run "castellan ca prepare --kind jwt" first');
  if (target.state !== 'prepared') throw refuse('rotation.bad_state', `JWT key ${target.kid} is ${target.state}; only a prepared key can be activated`);
  let forcedRisk: string | undefined;
  const since = ms(target.preparedAt) ?? o.now;
  if (o.now - since < o.propagationMs) {
    forcedRisk = guard(
      o,
      `JWT key ${target.kid} has been in the JWT bundle for ${Math.round((o.now - since) / 1000)}s, less than the propagation time (${Math.round(o.propagationMs / 1000)}s)`,
      'validators that have not received the new JWT bundle yet will reject every JWT-SVID the new key signs',
    );
  }
  const key = { ...target, state: 'active' as const, activatedAt: iso(o.now) };
  const cur = keys.find((k) => k.state === 'active');
  const changed = cur ? [key, { ...cur, state: 'old' as const, deactivatedAt: iso(o.now) }] : [key];
  return { keys: replace(keys, changed), key, forcedRisk };
}

export function jwtTaint(keys: readonly JwtKeyRecord[], id: string | undefined, o: JwtTransitionOptions): JwtTransition {
  const target = id ? find(keys, id) : previous(keys, ['old']);
  if (!target) throw refuse('rotation.nothing_to_taint', 'no previous JWT key to taint (only a key that was active and was replaced can be tainted)');
  if (target.state === 'active') throw refuse('rotation.active', `JWT key ${target.kid} is the active one: activate another key first, then taint this one`);
  if (target.state !== 'old') throw refuse('rotation.bad_state', `JWT key ${target.kid} is ${target.state}; only an old (replaced) key can be tainted`);
  const key = { ...target, state: 'tainted' as const, taintedAt: iso(o.now) };
  return { keys: replace(keys, [key]), key };
}

/** When retiring a key becomes safe: when the last token it signed has expired (ms). */
export function jwtRetireSafeAt(k: JwtKeyRecord, now: number): number {
  return k.state === 'prepared' ? now : (ms(k.tokens.lastNotAfter) ?? now);
}

export function jwtRetire(keys: readonly JwtKeyRecord[], id: string | undefined, o: JwtTransitionOptions): JwtTransition {
  const target = id ? find(keys, id) : previous(keys, ['tainted', 'old']);
  if (!target) throw refuse('rotation.nothing_to_retire', 'no previous JWT key to retire');
  if (target.state === 'active') throw refuse('rotation.active', `JWT key ${target.kid} is the active one: retiring it would leave nothing to sign JWT-SVIDs with; activate another key first`);
  if (target.state === 'retired') throw refuse('rotation.bad_state', `JWT key ${target.kid} is already retired`);
  let forcedRisk: string | undefined;
  const safeAt = jwtRetireSafeAt(target, o.now);
  if (safeAt > o.now) {
    forcedRisk = guard(o, `JWT key ${target.kid} signed JWT-SVIDs that are still valid (the last expires at ${iso(safeAt)})`, 'those JWT-SVIDs stop validating wherever the new JWT bundle arrives');
  }
  const key = { ...target, state: 'retired' as const, keyPem: '', retiredAt: iso(o.now) };
  return { keys: replace(keys, [key]), key, forcedRisk };
}

/** Adds token accounting (counts add up; lastNotAfter is a max). */
export function jwtAddTokens(keys: readonly JwtKeyRecord[], deltas: ReadonlyMap<string, { issued: number; lastNotAfter: number }>): JwtKeyRecord[] {
  return keys.map((k) => {
    const d = deltas.get(k.kid);
    if (!d) return k;
    return { ...k, tokens: { issued: k.tokens.issued + d.issued, lastNotAfter: iso(Math.max(ms(k.tokens.lastNotAfter) ?? 0, d.lastNotAfter)) } };
  });
}

export type JwtAutoStep = { kind: 'prepare' } | { kind: 'activate'; id: string } | { kind: 'retire'; id: string };

/** What automatic rotation of JWT keys should do now, if anything, and when to look again. */
export function jwtNextAutoStep(keys: readonly JwtKeyRecord[], now: number, propagationMs: number): { step?: JwtAutoStep; recheckAt: number } {
  const candidates: number[] = [];
  for (const k of keys) {
    if (k.state !== 'old' && k.state !== 'tainted') continue;
    const safe = jwtRetireSafeAt(k, now);
    if (safe <= now) return { step: { kind: 'retire', id: k.kid }, recheckAt: now };
    candidates.push(safe);
  }
  const active = keys.find((k) => k.state === 'active');
  if (active) {
    const start = ms(active.activatedAt) ?? ms(active.createdAt)!;
    const end = Date.parse(active.notAfter);
    const t = autoThresholds(start, end);
    const prepared = keys.find((k) => k.state === 'prepared');
    if (!prepared) {
      const at = end - t.prepareAt;
      if (now >= at) return { step: { kind: 'prepare' }, recheckAt: now };
      candidates.push(at);
    } else {
      const at = Math.max(end - t.activateAt, (ms(prepared.preparedAt) ?? now) + propagationMs);
      if (now >= at) return { step: { kind: 'activate', id: prepared.kid }, recheckAt: now };
      candidates.push(at);
    }
  }
  return { recheckAt: Math.min(...candidates, now + 3_600_000) };
}
