/**
 * Leader election on a coordination.k8s.io/v1 Lease (the LeaderElector port):
 * the one replica that creates and rotates keys.
 *
 * Every `renewIntervalMs` each elector reads the Lease and:
 * - creates it, holding it, when it does not exist (409: another won);
 * - renews it (renewTime = now, PUT with its resourceVersion) when it holds it;
 * - takes it over (PUT with the read resourceVersion, leaseTransitions + 1)
 *   when it is released (no holderIdentity) or expired; 409 means another
 *   replica was faster;
 * - otherwise follows.
 * Optimistic concurrency on the resourceVersion makes at most one takeover of
 * a given Lease state succeed.
 *
 * Expired means: the holder's renewTime + leaseDurationSeconds is past, AND
 * this elector itself has seen the Lease unchanged for leaseDurationSeconds
 * (its own clock: a follower whose clock runs ahead cannot steal a live lease).
 * A leader that has not renewed for leaseDurationMs − renewIntervalMs steps
 * down (onChange(false)) before anyone else may take over; it keeps trying
 * and comes back if the Lease is still its own. `close()` steps down and
 * releases the Lease (clears holderIdentity) so a successor need not wait.
 * All timing is on the Clock port.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { LeaderElector } from '../ca/keystore.ts';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { describeKubeFailure, isStatus } from './api-errors.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export interface LeaseElectorOptions {
  /** path of a kubeconfig; default $KUBECONFIG, else the in-cluster service account */
  kubeconfig?: string;
  /** an already loaded KubeConfig (takes precedence over `kubeconfig`) */
  kubeConfig?: KubeConfig;
  namespace: string;
  name: string;
  /** this replica's name in the Lease (holderIdentity); unique per process */
  identity: string;
  /** default 15 000 ms; written to the Lease in whole seconds (at least 1) */
  leaseDurationMs?: number;
  /** how often the holder renews and the others check; default 5 000 ms; must be below leaseDurationMs */
  renewIntervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

export interface LeaseElector extends LeaderElector {
  /** Resolves when no attempt is in flight (tests driving a FakeClock wait on it). */
  idle(): Promise<void>;
  /** The Lease as last read or written (diagnostics). */
  lastSeen(): V1Lease | undefined;
}

function timeOf(v: unknown): number | undefined {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

export function leaseElector(o: LeaseElectorOptions): LeaseElector {
  return new KubeLeaseElector(o);
}

/** One elector: the state of the Lease as this replica sees it, and the loop that keeps it. */
class KubeLeaseElector implements LeaseElector {
  private readonly api: CoordinationV1Api;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly namespace: string;
  private readonly name: string;
  private readonly identity: string;
  private readonly where: string;
  private readonly renewIntervalMs: number;
  private readonly durationSec: number;
  /** a leader that has not renewed for this long steps down */
  private readonly renewDeadlineMs: number;
  /** an API call that takes longer is abandoned (its answer, if any, is ignored until the next read) */
  private readonly callTimeoutMs: number;

  private readonly listeners = new Set<(leader: boolean) => void>();
  private leader = false;
  private closed = false;
  private lease: V1Lease | undefined;
  /** when this elector first saw the Lease in its current state (holder, renewTime, resourceVersion) */
  private observed: { key: string; at: number } | undefined;
  private timer: TimerHandle | undefined;
  private deadline: TimerHandle | undefined;
  private busy: Promise<void> = Promise.resolve();
  private failing = false;

  constructor(o: LeaseElectorOptions) {
    const leaseDurationMs = o.leaseDurationMs ?? 15_000;
    const renewIntervalMs = o.renewIntervalMs ?? 5_000;
    if (!(leaseDurationMs > 0) || !(renewIntervalMs > 0) || renewIntervalMs >= leaseDurationMs) {
      throw new CastellanError('INVALID_ARGUMENT', 'lease.config', `lease renew interval (${renewIntervalMs} ms) must be positive and shorter than the lease duration (${leaseDurationMs} ms)`);
    }
    if (!o.identity) throw new CastellanError('INVALID_ARGUMENT', 'lease.config', 'lease holder identity must not be empty');
    const kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.clock = o.clock ?? systemClock;
    this.logger = o.logger ?? silentLogger();
    this.namespace = o.namespace;
    this.name = o.name;
    this.identity = o.identity;
    this.where = `Lease ${o.namespace}/${o.name}`;
    this.renewIntervalMs = renewIntervalMs;
    this.durationSec = Math.max(1, Math.ceil(leaseDurationMs / 1000));
    this.renewDeadlineMs = leaseDurationMs - renewIntervalMs;
    this.callTimeoutMs = renewIntervalMs;
    this.run();
  }

  isLeader(): boolean {
    return this.leader && !this.closed;
  }

  onChange(listener: (leader: boolean) => void): void {
    this.listeners.add(listener);
  }

  idle(): Promise<void> {
    return this.busy;
  }

  lastSeen(): V1Lease | undefined {
    return this.lease;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timer?.cancel();
    await this.busy.catch(() => undefined);
    this.deadline?.cancel();
    const held = this.lease?.spec?.holderIdentity === this.identity;
    this.setLeader(false, 'closing');
    if (!held || !this.lease) return;
    try {
      await this.release(this.lease);
      this.logger.info({ event: 'lease.released', where: this.where, identity: this.identity }, `released ${this.where}`);
    } catch (e) {
      if (isStatus(e, 409)) {
        try {
          const l = await this.withTimeout(this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }), 'get');
          if (l.spec?.holderIdentity === this.identity) await this.release(l);
        } catch (e2) {
          this.fail('release', e2);
        }
      } else this.fail('release', e);
    }
  }

  private async release(current: V1Lease): Promise<void> {
    const now = this.clock.now();
    await this.put(current, { leaseDurationSeconds: 1, leaseTransitions: current.spec?.leaseTransitions ?? 0, acquireTime: new V1MicroTime(now), renewTime: new V1MicroTime(now) }, 'release');
  }

  private setLeader(v: boolean, why: string): void {
    if (v === this.leader) return;
    this.leader = v;
    const { where, identity } = this;
    if (v) this.logger.info({ event: 'lease.acquired', where, identity }, `this replica (${identity}) now holds ${where}: ${why}`);
    else this.logger.info({ event: 'lease.lost', where, identity }, `this replica (${identity}) no longer holds ${where}: ${why}`);
    for (const l of this.listeners) {
      try {
        l(v);
      } catch (e) {
        this.logger.error({ event: 'lease.listener_failed', err: e }, 'a leadership listener failed');
      }
    }
  }

  private renewed(at: number): void {
    this.deadline?.cancel();
    this.deadline = this.clock.setTimer(() => {
      this.deadline = undefined;
      if (!this.closed) this.setLeader(false, `could not renew it for ${this.renewDeadlineMs} ms`);
    }, this.renewDeadlineMs - (this.clock.now() - at));
  }

  private withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = this.clock.setTimer(() => reject(new CastellanError('DEADLINE_EXCEEDED', 'lease.timeout', `${what} ${this.where} took longer than ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
      p.then(
        (v) => {
          t.cancel();
          resolve(v);
        },
        (e: unknown) => {
          t.cancel();
          reject(e);
        },
      );
    });
  }

  private observe(l: V1Lease, now: number): void {
    this.lease = l;
    const key = `${l.spec?.holderIdentity ?? ''}|${timeOf(l.spec?.renewTime) ?? ''}|${l.metadata?.resourceVersion ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, at: now };
  }

  /** When the Lease as last seen stops being valid (by its record and by this elector's own observation). */
  private expiresAt(l: V1Lease): number {
    const dur = (l.spec?.leaseDurationSeconds ?? this.durationSec) * 1000;
    const renew = timeOf(l.spec?.renewTime) ?? timeOf(l.spec?.acquireTime) ?? 0;
    return Math.max(renew, this.observed?.at ?? this.clock.now()) + dur;
  }

  private spec(prev: V1Lease | undefined, now: number, takeover: boolean): V1Lease['spec'] {
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.durationSec,
      acquireTime: takeover || !prev?.spec?.acquireTime ? new V1MicroTime(now) : prev.spec.acquireTime,
      renewTime: new V1MicroTime(now),
      leaseTransitions: (prev?.spec?.leaseTransitions ?? 0) + (takeover && prev ? 1 : 0),
    };
  }

  private put(current: V1Lease, s: V1Lease['spec'], what: string): Promise<V1Lease> {
    const { name, namespace } = this;
    return this.withTimeout(this.api.replaceNamespacedLease({ name, namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { ...current.metadata, name, namespace }, spec: s } }), what);
  }

  private fail(what: string, e: unknown): void {
    const level = this.failing ? 'debug' : 'warn';
    this.failing = true;
    this.logger[level]({ event: 'lease.api_failed', where: this.where, identity: this.identity, why: e instanceof CastellanError ? e.message : describeKubeFailure(e), leader: this.leader }, `cannot ${what} ${this.where}`);
  }

  /** One attempt: read (or use what this leader wrote last), then create, renew, take over or follow. */
  private async attempt(retryOnConflict: boolean): Promise<void> {
    let current: V1Lease | null;
    if (this.leader && this.lease) current = this.lease;
    else {
      try {
        current = await this.withTimeout(this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }), 'get');
      } catch (e) {
        if (isStatus(e, 404)) current = null;
        else return this.fail('get', e);
      }
    }
    if (this.closed) return;
    const now = this.clock.now();
    if (current === null) return this.create(now, retryOnConflict);
    return this.renewOrTakeOver(current, now, retryOnConflict);
  }

  /** No Lease yet: create it, holding it (409: another replica won). */
  private async create(now: number, retryOnConflict: boolean): Promise<void> {
    const { name, namespace } = this;
    try {
      const l = await this.withTimeout(this.api.createNamespacedLease({ namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: this.spec(undefined, now, true) } }), 'create');
      this.failing = false;
      this.observe(l, now);
      if (this.closed) return;
      this.renewed(now);
      this.setLeader(true, 'created it');
    } catch (e) {
      if (isStatus(e, 409)) {
        this.lease = undefined;
        this.logger.debug({ event: 'lease.create_lost', where: this.where, identity: this.identity }, 'another replica created the Lease first');
        if (retryOnConflict) return this.attempt(false);
      } else if (isStatus(e, 404)) this.fail('create (its namespace does not exist)', e);
      else this.fail('create', e);
    }
  }

  /** The Lease exists: renew it if ours, take it over if released or expired, else follow. */
  private async renewOrTakeOver(current: V1Lease, now: number, retryOnConflict: boolean): Promise<void> {
    const holder = current.spec?.holderIdentity;
    const mine = holder === this.identity;
    if (!mine) this.observe(current, now);
    const free = !holder || now > this.expiresAt(current);
    if (!mine && !free) {
      this.failing = false;
      this.setLeader(false, `held by ${holder}`);
      return;
    }
    try {
      const l = await this.put(current, this.spec(current, now, !mine), mine ? 'renew' : 'take over');
      this.failing = false;
      this.observe(l, now);
      if (this.closed) return;
      this.renewed(now);
      this.setLeader(true, mine ? 'renewed' : holder ? `took it over from ${holder} (expired)` : 'it was released');
    } catch (e) {
      if (isStatus(e, 409) || isStatus(e, 404)) {
        // 409: changed under us (someone renewed, took over or edited it); 404: deleted; look again at once
        this.lease = undefined;
        if (retryOnConflict) return this.attempt(false);
      } else this.fail(mine ? 'renew' : 'take over', e);
    }
  }

  private schedule(): void {
    if (this.closed) return;
    let delay = this.renewIntervalMs;
    const holder = this.lease?.spec?.holderIdentity;
    if (!this.leader && this.lease && holder && holder !== this.identity) {
      // wake up right when the holder's lease runs out, if that is sooner
      delay = Math.max(1, Math.min(this.renewIntervalMs, this.expiresAt(this.lease) - this.clock.now() + 1));
    }
    this.timer = this.clock.setTimer(() => {
      this.timer = undefined;
      this.run();
    }, delay);
  }

  private run(): void {
    if (this.closed) return;
    this.busy = this.attempt(true)
      .catch((e: unknown) => this.fail('use', e))
      .finally(() => this.schedule());
  }
}
