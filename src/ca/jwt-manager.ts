/**
 * The JWT-SVID signing keys at run time, kept in the keyring document next
 * to the X.509 authorities and written through CaManager (same keystore,
 * same optimistic concurrency, same change notifications): creates the
 * first key, mints JWT-SVIDs with the active one, counts what each key
 * signed, applies the admin transitions (with their guard rails) and rotates
 * automatically on the leader (SPIRE's thresholds, as for self-signed roots).
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import type { KeyringDoc } from './keyring-doc.ts';
import type { LeaderElector } from './keystore.ts';
import { alwaysLeader } from './keystore.ts';
import {
  buildJwtView,
  jwtActivate,
  jwtAddKey,
  jwtAddTokens,
  jwtNextAutoStep,
  jwtRetire,
  jwtRetireSafeAt,
  jwtTaint,
  newJwtKeyRecord,
  type JwtAlg,
  type JwtKeyRecord,
  type JwtKeysView,
  type JwtTransition,
  type JwtTransitionOptions,
} from './jwt-keys.ts';

/** The part of CaManager the JWT keys use. */
export interface KeyringDocumentPort {
  document(): KeyringDoc;
  updateDocument(fn: (doc: KeyringDoc) => KeyringDoc): Promise<KeyringDoc>;
  onChange(l: () => void): () => void;
}

export interface JwtKeyManagerOptions {
  keyring: KeyringDocumentPort;
  alg: JwtAlg;
  /** planned life of a key, ms */
  keyTtlMs: number;
  propagationMs: number;
  autoRotate: boolean;
  leader?: LeaderElector;
  clock: Clock;
  logger: Logger;
}

export interface JwtKeyStatus {
  kid: string;
  state: JwtKeyRecord['state'];
  alg: JwtAlg;
  createdAt: string;
  notAfter: string;
  issued: number;
  lastTokenNotAfter: string | null;
  retireSafeAt: string | null;
  preparedAt?: string;
  activatedAt?: string;
  deactivatedAt?: string;
  taintedAt?: string;
  retiredAt?: string;
}

export interface MintedJwtSvid {
  token: string;
  kid: string;
  /** ms */
  issuedAt: number;
  expiresAt: number;
}

const HOUR = 3_600_000;

export class JwtKeyManager {
  private readonly o: JwtKeyManagerOptions;
  private readonly leader: LeaderElector;
  private cached: { doc: KeyringDoc; view: JwtKeysView } | undefined;
  private signingKey: { kid: string; key: KeyObject } | undefined;
  private readonly pending = new Map<string, { issued: number; lastNotAfter: number }>();
  private rotateTimer: TimerHandle | undefined;
  private flushTimer: TimerHandle | undefined;
  private closed = false;
  private stopListening: (() => void) | undefined;

  private constructor(o: JwtKeyManagerOptions) {
    this.o = o;
    this.leader = o.leader ?? alwaysLeader();
  }

  /** Makes sure a key is active (creating the first one), then rotates on schedule. */
  static async start(o: JwtKeyManagerOptions): Promise<JwtKeyManager> {
    const m = new JwtKeyManager(o);
    if (!m.view().active) {
      const rec = newJwtKeyRecord(o.alg, o.keyTtlMs, o.clock.now(), 'active');
      await o.keyring.updateDocument((doc) => (buildJwtView(doc.jwtKeys).active ? doc : withKeys(doc, jwtAddKey(doc.jwtKeys ?? [], rec, m.opts()).keys)));
      o.logger.info({ event: 'ca.jwt_key_created', kid: m.view().active?.kid, alg: o.alg }, 'JWT-SVID signing key created');
    }
    m.stopListening = o.keyring.onChange(() => m.scheduleRotation(0));
    m.leader.onChange((l) => l && m.scheduleRotation(0));
    m.scheduleRotation(0);
    m.scheduleFlush();
    return m;
  }

  private get now(): number {
    return this.o.clock.now();
  }

  private opts(force = false): JwtTransitionOptions {
    return { now: this.now, force, propagationMs: this.o.propagationMs };
  }

  view(): JwtKeysView {
    const doc = this.o.keyring.document();
    if (this.cached?.doc !== doc) this.cached = { doc, view: buildJwtView(doc.jwtKeys) };
    return this.cached.view;
  }

  /**
   * Signs a JWT-SVID for `spiffeId`: header alg, kid, typ JWT; claims sub,
   * aud, exp, iat. The caller has checked the audiences and the lifetime.
   */
  async mint(spiffeId: string, audiences: readonly string[], ttlMs: number): Promise<MintedJwtSvid> {
    const active = this.view().active;
    if (!active) throw new CastellanError('UNAVAILABLE', 'jwt.no_key', 'no active JWT signing key');
    if (this.signingKey?.kid !== active.kid) this.signingKey = { kid: active.kid, key: createPrivateKey(active.keyPem) };
    const iat = Math.floor(this.now / 1000);
    const exp = iat + Math.max(1, Math.round(ttlMs / 1000));
    const token = await new SignJWT({ sub: spiffeId, aud: [...audiences] })
      .setProtectedHeader({ alg: active.alg, kid: active.kid, typ: 'JWT' })
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(this.signingKey.key);
    const p = this.pending.get(active.kid);
    if (p) {
      p.issued++;
      p.lastNotAfter = Math.max(p.lastNotAfter, exp * 1000);
    } else this.pending.set(active.kid, { issued: 1, lastNotAfter: exp * 1000 });
    return { token, kid: active.kid, issuedAt: iat * 1000, expiresAt: exp * 1000 };
  }

  /** Writes pending token accounting into the keyring. */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const deltas = new Map(this.pending);
    this.pending.clear();
    try {
      await this.o.keyring.updateDocument((doc) => withKeys(doc, jwtAddTokens(doc.jwtKeys ?? [], deltas)));
    } catch (e) {
      for (const [kid, d] of deltas) {
        const p = this.pending.get(kid);
        if (p) {
          p.issued += d.issued;
          p.lastNotAfter = Math.max(p.lastNotAfter, d.lastNotAfter);
        } else this.pending.set(kid, d);
      }
      this.o.logger.warn({ event: 'keyring.jwt_flush_failed', err: e instanceof CastellanError ? e.message : String(e) }, 'could not record JWT-SVID counts in the keystore; will retry');
    }
  }

  status(): JwtKeyStatus[] {
    const now = this.now;
    return (this.o.keyring.document().jwtKeys ?? []).map((k) => {
      const p = this.pending.get(k.kid);
      const last = Math.max(k.tokens.lastNotAfter ? Date.parse(k.tokens.lastNotAfter) : 0, p?.lastNotAfter ?? 0);
      const withPending: JwtKeyRecord = { ...k, tokens: { issued: k.tokens.issued + (p?.issued ?? 0), lastNotAfter: last ? new Date(last).toISOString() : null } };
      return {
        kid: k.kid,
        state: k.state,
        alg: k.alg,
        createdAt: k.createdAt,
        notAfter: k.notAfter,
        issued: withPending.tokens.issued,
        lastTokenNotAfter: withPending.tokens.lastNotAfter,
        retireSafeAt: k.state === 'retired' ? null : new Date(k.state === 'active' ? Math.max(now, last) : jwtRetireSafeAt(withPending, now)).toISOString(),
        preparedAt: k.preparedAt,
        activatedAt: k.activatedAt,
        deactivatedAt: k.deactivatedAt,
        taintedAt: k.taintedAt,
        retiredAt: k.retiredAt,
      };
    });
  }

  private async transition(name: string, fn: (keys: JwtKeyRecord[]) => JwtTransition): Promise<JwtTransition> {
    await this.flush(); // the retire guard looks at token accounting
    let r: JwtTransition | undefined;
    await this.o.keyring.updateDocument((doc) => {
      r = fn(doc.jwtKeys ?? []);
      return withKeys(doc, r.keys);
    });
    this.o.logger.info({ event: `ca.jwt_key_${name}`, kid: r!.key.kid, state: r!.key.state, forced: r!.forcedRisk !== undefined, risk: r!.forcedRisk }, `JWT key ${r!.key.kid} is now ${r!.key.state}${r!.forcedRisk ? ' (forced)' : ''}`);
    this.scheduleRotation(0);
    return r!;
  }

  /** A new key as prepared (published, signing nothing). `force` is unused: preparing has no guard. */
  prepare(_force = false): Promise<JwtTransition> {
    const rec = newJwtKeyRecord(this.o.alg, this.o.keyTtlMs, this.now, 'prepared');
    return this.transition('prepared', (keys) => jwtAddKey(keys, rec, this.opts()));
  }

  activate(id: string | undefined, force = false): Promise<JwtTransition> {
    return this.transition('activated', (keys) => jwtActivate(keys, id, this.opts(force)));
  }

  taint(id: string | undefined, force = false): Promise<JwtTransition> {
    return this.transition('tainted', (keys) => jwtTaint(keys, id, this.opts(force)));
  }

  retire(id: string | undefined, force = false): Promise<JwtTransition> {
    return this.transition('retired', (keys) => jwtRetire(keys, id, this.opts(force)));
  }

  private scheduleFlush(): void {
    if (this.closed) return;
    this.flushTimer = this.o.clock.setTimer(() => void this.flush().finally(() => this.scheduleFlush()), 30_000);
  }

  private scheduleRotation(delayMs: number): void {
    if (this.closed || !this.o.autoRotate) return;
    this.rotateTimer?.cancel();
    this.rotateTimer = this.o.clock.setTimer(() => void this.rotateOnce(), Math.max(0, delayMs));
  }

  /** One step of automatic rotation (leader only), then re-arms. */
  async rotateOnce(): Promise<void> {
    if (this.closed) return;
    if (!this.leader.isLeader()) return this.scheduleRotation(HOUR);
    try {
      await this.flush();
      const { step, recheckAt } = jwtNextAutoStep(this.o.keyring.document().jwtKeys ?? [], this.now, this.o.propagationMs);
      if (!step) return this.scheduleRotation(recheckAt - this.now);
      if (step.kind === 'prepare') await this.prepare();
      else if (step.kind === 'activate') await this.activate(step.id);
      else await this.retire(step.id);
      this.o.logger.info({ event: 'ca.jwt_auto_rotation', step: step.kind }, `automatic JWT key rotation: ${step.kind}`);
    } catch (e) {
      this.o.logger.error({ event: 'ca.jwt_auto_rotation_failed', err: e instanceof CastellanError ? e.message : String(e) }, 'automatic JWT key rotation step failed; retrying in a minute');
      this.scheduleRotation(60_000);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    this.stopListening?.();
    this.rotateTimer?.cancel();
    this.flushTimer?.cancel();
  }
}

function withKeys(doc: KeyringDoc, keys: JwtKeyRecord[]): KeyringDoc {
  return { ...doc, generation: doc.generation + 1, jwtKeys: keys };
}
