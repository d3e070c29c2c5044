/**
 * The keyring at run time: loads (or on first start creates) the keyring
 * through a Keystore, keeps the current view, applies admin transitions and
 * automatic rotation (rotator.ts) with optimistic concurrency (re-read and
 * retry on a conflicting write), follows changes made by other replicas,
 * flushes the leaves each authority signs (leaf-ledger.ts), and tells
 * listeners whenever the view changes (signer, trust bundle, server TLS
 * identity, publishers, agents). Status is a pure function (authority-status.ts).
 *
 * A keyring that becomes unreadable or invalid (a corrupted file, a bad
 * Secret edit) never replaces the last good view: it is logged and counted,
 * and the CA keeps signing and serving the bundle it had (security.md P4).
 */
import { CastellanError } from '../platform/errors.ts';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import { createSelfSignedRoot, buildAuthority } from './authority.ts';
import { authorityStatus, type AuthorityStatus } from './authority-status.ts';
import { federationFingerprint } from './federation.ts';
import { emptyLeaves, withBundleSequence, type AuthorityRecord, type KeyringDoc } from './keyring-doc.ts';
import { activate, addLeaves, addPrepared, buildView, nextAutoStep, retire, taint, type KeyringView, type TransitionResult } from './keyring.ts';
import type { CaKeyType } from './keys.ts';
import type { Keystore, LeaderElector, StoredKeyring } from './keystore.ts';
import { alwaysLeader } from './keystore.ts';
import { LeafLedger } from './leaf-ledger.ts';
import { parseCertificatesPem } from '../platform/pem.ts';
import { pluginRecord, pluginRecordFromTexts, type CacertsTexts } from './plugin.ts';
import { Rotator } from './rotator.ts';

export type { AuthorityStatus };

export type CaMode = { kind: 'self-signed'; keyType: CaKeyType; rootTtlMs: number } | { kind: 'plugin'; cacertsDir: string };

export interface CaManagerOptions {
  keystore: Keystore;
  trustDomain: string;
  mode: CaMode;
  /** ms a prepared authority must sit in the bundle before activation (guard and automatic rotation) */
  propagationMs: number;
  /** automatic rotation of self-signed roots (on the leader only) */
  autoRotate: boolean;
  /** longest leaf lifetime (ms), for status hints */
  maxLeafTtlMs: number;
  leader?: LeaderElector;
  clock: Clock;
  logger: Logger;
  /** ms between flushes of leaf accounting to the keystore; default 30 000 */
  flushIntervalMs?: number;
}

export type ChangeListener = (view: KeyringView, previous: KeyringView | undefined) => void;

export class CaManager {
  private readonly o: CaManagerOptions;
  private readonly leader: LeaderElector;
  private stored!: StoredKeyring;
  private current!: KeyringView;
  private readonly listeners = new Set<ChangeListener>();
  private readonly ledger = new LeafLedger();
  private readonly rotator: Rotator;
  private stopWatch: (() => void) | undefined;
  private flushTimer: TimerHandle | undefined;
  private serial: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** keyring changes that could not be used (corrupt documents), for metrics */
  rejectedUpdates = 0;

  private constructor(o: CaManagerOptions) {
    this.o = o;
    this.leader = o.leader ?? alwaysLeader();
    this.rotator = new Rotator(
      { flush: () => this.flush(), doc: () => this.stored.doc, prepare: () => this.prepare(), activate: (id) => this.activate(id), retire: (id) => this.retire(id) },
      { enabled: o.autoRotate, propagationMs: o.propagationMs, leader: this.leader, clock: o.clock, logger: o.logger },
    );
  }

  /** Loads or creates the keyring; throws FAILED_PRECONDITION with a precise message when it cannot be used. */
  static async start(o: CaManagerOptions): Promise<CaManager> {
    const m = new CaManager(o);
    await m.bootstrap();
    m.stopWatch = o.keystore.watch(
      (k) => m.external(k),
      (e) => {
        m.rejectedUpdates++;
        o.logger.error({ event: 'keyring.update_rejected', err: e instanceof CastellanError ? e.message : String(e) }, 'keyring change ignored: the stored keyring is unusable; keeping the last good one');
      },
    );
    m.leader.onChange((leader) => {
      o.logger.info({ event: 'ca.leadership', leader }, leader ? 'this replica now rotates the keyring' : 'this replica no longer rotates the keyring');
      if (leader) m.rotator.schedule(0);
    });
    m.rotator.schedule(0);
    m.scheduleFlush();
    return m;
  }

  private get now(): number {
    return this.o.clock.now();
  }

  private async bootstrap(): Promise<void> {
    const { keystore, mode, trustDomain, logger } = this.o;
    let stored = await keystore.read();
    if (!stored) {
      const first = await this.firstAuthority();
      const doc: KeyringDoc = { version: 2, trustDomain, generation: 1, authorities: [first] };
      const r = await keystore.createIfAbsent(doc);
      stored = r.stored;
      if (r.created) logger.info({ event: 'ca.keyring_created', where: keystore.where, id: first.id, source: first.source }, 'keyring created');
      else logger.info({ event: 'ca.keyring_race_lost', where: keystore.where }, 'another replica created the keyring first; using it');
    }
    if (stored.doc.trustDomain !== trustDomain) {
      throw new CastellanError(
        'FAILED_PRECONDITION',
        'keystore.trust_domain',
        `keyring ${keystore.where} belongs to trust domain "${stored.doc.trustDomain}", not "${trustDomain}": pass --trust-domain ${stored.doc.trustDomain} or use another keyring`,
      );
    }
    this.adopt(stored);
    if (mode.kind === 'plugin') {
      // A cacerts directory whose signing certificate the keyring does not know yet (the
      // Secret was updated) comes in as prepared; an admin activates it when ready.
      const { record } = await pluginRecord(mode.cacertsDir, this.now, 'prepared');
      if (!this.stored.doc.authorities.some((a) => a.id === record.id)) {
        if (this.stored.doc.authorities.some((a) => a.state === 'prepared')) {
          logger.warn({ event: 'ca.plugin_not_imported', id: record.id }, `--cacerts-dir holds a new signing certificate (${record.id}) but another authority is already prepared; retire it or run "castellan ca import"`);
        } else {
          await this.mutate((doc) => addPrepared(doc, record, this.opts()));
          logger.info({ event: 'ca.plugin_imported', id: record.id }, `--cacerts-dir holds a new signing certificate: imported as prepared (activate it with "castellan ca activate")`);
        }
      }
    }
  }

  private async firstAuthority(): Promise<AuthorityRecord> {
    const { mode, trustDomain } = this.o;
    const now = this.now;
    if (mode.kind === 'plugin') return { ...(await pluginRecord(mode.cacertsDir, now, 'active')).record };
    return this.newSelfSignedRecord('active', mode.keyType, mode.rootTtlMs, trustDomain, now);
  }

  private async newSelfSignedRecord(state: 'active' | 'prepared', keyType: CaKeyType, ttlMs: number, trustDomain: string, now: number): Promise<AuthorityRecord> {
    const root = await createSelfSignedRoot({ trustDomain, keyType, ttlMs, now });
    const der = parseCertificatesPem(root.certPem, 'new root');
    const probe = buildAuthority({ certDer: der[0]!, keyPem: root.keyPem, chainDers: [], rootDers: der, now, what: 'new root' });
    const t = new Date(now).toISOString();
    return {
      id: probe.id,
      state,
      source: 'self-signed',
      keyType,
      certPem: root.certPem,
      keyPem: root.keyPem,
      chainPem: '',
      rootsPem: root.certPem,
      createdAt: t,
      ...(state === 'active' ? { activatedAt: t } : { preparedAt: t }),
      leaves: emptyLeaves(),
    };
  }

  /** Makes `stored` current if it builds; notifies listeners. */
  private adopt(stored: StoredKeyring): void {
    const view = buildView(stored.doc, this.now, this.o.keystore.where);
    const previous = this.current;
    const previousDoc = this.stored?.doc;
    this.stored = stored;
    this.current = view;
    // Leaf accounting changes the document often; listeners care about states only.
    if (previous && statesOf(previous, previousDoc) === statesOf(view, stored.doc)) return;
    for (const l of this.listeners) {
      try {
        l(view, previous);
      } catch (e) {
        this.o.logger.error({ event: 'keyring.listener_failed', err: e }, 'a keyring listener failed');
      }
    }
  }

  /** A keyring written elsewhere (another replica, an admin edit). */
  private external(k: StoredKeyring): void {
    if (this.closed || k.version === this.stored.version) return;
    if (k.doc.generation < this.stored.doc.generation) return; // an older document seen late
    try {
      this.adopt(k);
      this.o.logger.info({ event: 'keyring.reloaded', generation: k.doc.generation, active: this.current.active.id }, 'keyring changed in the keystore; reloaded');
      this.rotator.schedule(0);
    } catch (e) {
      this.rejectedUpdates++;
      this.o.logger.error({ event: 'keyring.update_rejected', err: e instanceof CastellanError ? e.message : String(e) }, 'keyring change ignored: it cannot be used; keeping the last good one');
    }
  }

  private opts(force = false): { now: number; force: boolean; propagationMs: number } {
    return { now: this.now, force, propagationMs: this.o.propagationMs };
  }

  /** Read-modify-write with retry on conflicts; one mutation at a time in this process. */
  private mutate(fn: (doc: KeyringDoc) => TransitionResult | KeyringDoc): Promise<TransitionResult | KeyringDoc> {
    const run = async (): Promise<TransitionResult | KeyringDoc> => {
      for (let attempt = 0; ; attempt++) {
        const base = this.stored;
        const out = fn(base.doc);
        const changed = 'doc' in out && 'authority' in out ? out.doc : (out as KeyringDoc);
        if (changed === base.doc) return out;
        const doc = withBundleSequence(base.doc, changed);
        buildView(doc, this.now, this.o.keystore.where); // never store what would not load
        try {
          const stored = await this.o.keystore.update(doc, base.version);
          this.adopt(stored);
          return out;
        } catch (e) {
          if (!(e instanceof CastellanError && e.code === 'keystore.conflict') || attempt >= 5) throw e;
          const fresh = await this.o.keystore.read();
          if (!fresh) throw new CastellanError('UNAVAILABLE', 'keystore.vanished', `keyring ${this.o.keystore.where} disappeared`);
          this.adopt(fresh);
        }
      }
    };
    const p = this.serial.then(run, run);
    this.serial = p.catch(() => undefined);
    return p;
  }

  private async transition(name: string, fn: (doc: KeyringDoc) => TransitionResult): Promise<TransitionResult> {
    await this.flush(); // the guards look at leaf accounting: make it current first
    const r = (await this.mutate(fn)) as TransitionResult;
    this.o.logger.info(
      { event: `ca.authority_${name}`, id: r.authority.id, state: r.authority.state, forced: r.forcedRisk !== undefined, risk: r.forcedRisk, generation: r.doc.generation },
      `authority ${r.authority.id} is now ${r.authority.state}${r.forcedRisk ? ' (forced)' : ''}`,
    );
    this.rotator.schedule(0);
    return r;
  }

  // ---- public surface ----

  view(): KeyringView {
    return this.current;
  }

  /** The keyring document now (the JWT keys live in it, src/ca/jwt-manager.ts). */
  document(): KeyringDoc {
    return this.stored.doc;
  }

  /**
   * Read-modify-write of the document with the keyring's concurrency rules
   * (retried on conflict: `fn` may run more than once). For the JWT keys.
   */
  async updateDocument(fn: (doc: KeyringDoc) => KeyringDoc): Promise<KeyringDoc> {
    return (await this.mutate(fn)) as KeyringDoc;
  }

  /** What automatic rotation would do next and when (shown by the admin API's Status). */
  nextAutoStep(): ReturnType<typeof nextAutoStep> {
    return nextAutoStep(this.stored.doc, this.now, this.o.propagationMs);
  }

  /** Subscribes to view changes; returns the unsubscribe function. */
  onChange(l: ChangeListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Records one certificate signed by `issuerId` expiring at `notAfter` (ms). Cheap: in memory, flushed later. */
  recordIssued(issuerId: string, notAfter: number): void {
    this.ledger.record(issuerId, notAfter);
  }

  /** Leaves signed by `id` (this process, since start) that have not expired, counted by hour of expiry. */
  liveLeaves(id: string): number {
    return this.ledger.liveLeaves(id, this.now);
  }

  /** Writes pending leaf accounting to the keystore. */
  async flush(): Promise<void> {
    const deltas = this.ledger.take();
    if (deltas.size === 0) return;
    try {
      await this.mutate((doc) => addLeaves(doc, deltas));
    } catch (e) {
      this.ledger.restore(deltas); // kept for the next flush
      this.o.logger.warn({ event: 'keyring.flush_failed', err: e instanceof CastellanError ? e.message : String(e) }, 'could not record leaf counts in the keystore; will retry');
    }
  }

  status(): AuthorityStatus[] {
    const now = this.now;
    return this.stored.doc.authorities.map((a) => authorityStatus(a, { pending: this.ledger.pending(a.id), live: this.liveLeaves(a.id) }, now));
  }

  /** Self-signed: a new root (same key type and lifetime settings) as prepared. */
  async prepare(): Promise<TransitionResult> {
    const { mode } = this.o;
    if (mode.kind !== 'self-signed') {
      throw new CastellanError('FAILED_PRECONDITION', 'rotation.plugin_mode', 'this CA signs with a plug-in intermediate: bring the new one in with "castellan ca import --cacerts-dir DIR"');
    }
    const pending = this.stored.doc.authorities.find((a) => a.state === 'prepared');
    if (pending) throw new CastellanError('FAILED_PRECONDITION', 'rotation.already_prepared', `authority ${pending.id} is already prepared: activate or retire it first`);
    const rec = await this.newSelfSignedRecord('prepared', mode.keyType, mode.rootTtlMs, this.o.trustDomain, this.now);
    return this.transition('prepared', (doc) => addPrepared(doc, rec, this.opts()));
  }

  /** A plug-in intermediate (the four files of Istio's cacerts layout) as prepared. */
  async importPlugin(texts: CacertsTexts): Promise<TransitionResult> {
    const { record } = pluginRecordFromTexts(texts, 'imported cacerts', this.now, 'prepared');
    return this.transition('imported', (doc) => addPrepared(doc, record, this.opts()));
  }

  activate(id: string | undefined, force = false): Promise<TransitionResult> {
    return this.transition('activated', (doc) => activate(doc, id, this.opts(force)));
  }

  taint(id: string | undefined, force = false): Promise<TransitionResult> {
    return this.transition('tainted', (doc) => taint(doc, id, this.opts(force)));
  }

  retire(id: string | undefined, force = false): Promise<TransitionResult> {
    return this.transition('retired', (doc) => retire(doc, id, this.opts(force)));
  }

  // ---- timers ----

  private scheduleFlush(): void {
    if (this.closed) return;
    this.flushTimer = this.o.clock.setTimer(() => {
      void this.flush().finally(() => this.scheduleFlush());
    }, this.o.flushIntervalMs ?? 30_000);
  }

  /** Resolves when no keyring write or rotation step of this process is in progress (tests). */
  async idle(): Promise<void> {
    await this.rotator.idle();
    await this.serial;
  }

  /** One step of automatic rotation (leader only), then re-arms for the next threshold. */
  rotateOnce(): Promise<void> {
    return this.rotator.rotateOnce();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    this.stopWatch?.();
    this.rotator.close();
    this.flushTimer?.cancel();
    await this.serial;
    await this.leader.close();
    await this.o.keystore.close();
  }
}

function statesOf(v: KeyringView, doc?: KeyringDoc): string {
  return v.records.map((r) => `${r.id}:${r.state}`).join(',') + '|' + (doc?.jwtKeys ?? []).map((k) => `${k.kid}:${k.state}`).join(',') + '|' + (doc ? federationFingerprint(doc) : '');
}
