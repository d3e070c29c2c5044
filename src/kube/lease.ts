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
  readonly lastSeen: () => V1Lease | undefined;
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
  const leaseDurationMs = o.leaseDurationMs ?? 15_000;
  const renewIntervalMs = o.renewIntervalMs ?? 5_000;
  if (!(leaseDurationMs > 0) || !(renewIntervalMs > 0) || renewIntervalMs >= leaseDurationMs) {
    throw new CastellanError('INVALID_ARGUMENT', 'lease.config', `lease renew interval (${renewIntervalMs} ms) must be positive and shorter than the lease duration (${leaseDurationMs} ms)`);
  }
  if (!o.identity) throw new CastellanError('INVALID_ARGUMENT', 'lease.config', 'lease holder identity must not be empty');
  const kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
  const api = kc.makeApiClient(CoordinationV1Api);
  const clock = o.clock ?? systemClock;
  const logger = o.logger ?? silentLogger();
  const { namespace, name, identity } = o;
  const where = `Lease ${namespace}/${name}`;
  const durationSec = Math.max(1, Math.ceil(leaseDurationMs / 1000));
  /** a leader that has not renewed for this long steps down */
  const renewDeadlineMs = leaseDurationMs - renewIntervalMs;
  /** an API call that takes longer is abandoned (its answer, if any, is ignored until the next read) */
  const callTimeoutMs = renewIntervalMs;

  const listeners = new Set<(leader: boolean) => void>();
  let leader = false;
  let closed = false;
  let lease: V1Lease | undefined;
  /** when this elector first saw the Lease in its current state (holder, renewTime, resourceVersion) */
  let observed: { key: string; at: number } | undefined;
  let timer: TimerHandle | undefined;
  let deadline: TimerHandle | undefined;
  let busy: Promise<void> = Promise.resolve();
  let failing = false;

  const setLeader = (v: boolean, why: string): void => {
    if (v === leader) return;
    leader = v;
    if (v) logger.info({ event: 'lease.acquired', where, identity }, `this replica (${identity}) now holds ${where}: ${why}`);
    else logger.info({ event: 'lease.lost', where, identity }, `this replica (${identity}) no longer holds ${where}: ${why}`);
    for (const l of listeners) {
      try {
        l(v);
      } catch (e) {
        logger.error({ event: 'lease.listener_failed', err: e }, 'a leadership listener failed');
      }
    }
  };

  const renewed = (at: number): void => {
    deadline?.cancel();
    deadline = clock.setTimer(() => {
      deadline = undefined;
      if (!closed) setLeader(false, `could not renew it for ${renewDeadlineMs} ms`);
    }, renewDeadlineMs - (clock.now() - at));
  };

  const withTimeout = <T>(p: Promise<T>, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = clock.setTimer(() => reject(new CastellanError('DEADLINE_EXCEEDED', 'lease.timeout', `${what} ${where} took longer than ${callTimeoutMs} ms`)), callTimeoutMs);
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

  const observe = (l: V1Lease, now: number): void => {
    lease = l;
    const key = `${l.spec?.holderIdentity ?? ''}|${timeOf(l.spec?.renewTime) ?? ''}|${l.metadata?.resourceVersion ?? ''}`;
    if (observed?.key !== key) observed = { key, at: now };
  };

  /** When the Lease as last seen stops being valid (by its record and by this elector's own observation). */
  const expiresAt = (l: V1Lease): number => {
    const dur = (l.spec?.leaseDurationSeconds ?? durationSec) * 1000;
    const renew = timeOf(l.spec?.renewTime) ?? timeOf(l.spec?.acquireTime) ?? 0;
    return Math.max(renew, observed?.at ?? clock.now()) + dur;
  };

  const spec = (prev: V1Lease | undefined, now: number, takeover: boolean): V1Lease['spec'] => ({
    holderIdentity: identity,
    leaseDurationSeconds: durationSec,
    acquireTime: takeover || !prev?.spec?.acquireTime ? new V1MicroTime(now) : prev.spec.acquireTime,
    renewTime: new V1MicroTime(now),
    leaseTransitions: (prev?.spec?.leaseTransitions ?? 0) + (takeover && prev ? 1 : 0),
  });

  const put = (current: V1Lease, s: V1Lease['spec'], what: string): Promise<V1Lease> =>
    withTimeout(api.replaceNamespacedLease({ name, namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { ...current.metadata, name, namespace }, spec: s } }), what);

  const fail = (what: string, e: unknown): void => {
    const level = failing ? 'debug' : 'warn';
    failing = true;
    logger[level]({ event: 'lease.api_failed', where, identity, why: e instanceof CastellanError ? e.message : describeKubeFailure(e), leader }, `cannot ${what} ${where}`);
  };

  /** One attempt: read (or use what this leader wrote last), then create, renew, take over or follow. */
  const attempt = async (retryOnConflict: boolean): Promise<void> => {
    let current: V1Lease | null;
    if (leader && lease) current = lease;
    else {
      try {
        current = await withTimeout(api.readNamespacedLease({ name, namespace }), 'get');
      } catch (e) {
        if (isStatus(e, 404)) current = null;
        else return fail('get', e);
      }
    }
    if (closed) return;
    const now = clock.now();
    if (current === null) {
      try {
        const l = await withTimeout(api.createNamespacedLease({ namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: spec(undefined, now, true) } }), 'create');
        failing = false;
        observe(l, now);
        if (closed) return;
        renewed(now);
        setLeader(true, 'created it');
      } catch (e) {
        if (isStatus(e, 409)) {
          lease = undefined;
          logger.debug({ event: 'lease.create_lost', where, identity }, 'another replica created the Lease first');
          if (retryOnConflict) return attempt(false);
        } else if (isStatus(e, 404)) fail('create (its namespace does not exist)', e);
        else fail('create', e);
      }
      return;
    }
    const holder = current.spec?.holderIdentity;
    const mine = holder === identity;
    if (!mine) observe(current, now);
    const free = !holder || now > expiresAt(current);
    if (!mine && !free) {
      failing = false;
      setLeader(false, `held by ${holder}`);
      return;
    }
    try {
      const l = await put(current, spec(current, now, !mine), mine ? 'renew' : 'take over');
      failing = false;
      observe(l, now);
      if (closed) return;
      renewed(now);
      setLeader(true, mine ? 'renewed' : holder ? `took it over from ${holder} (expired)` : 'it was released');
    } catch (e) {
      if (isStatus(e, 409)) {
        // changed under us: someone renewed, took over or edited it; look again at once
        lease = undefined;
        if (retryOnConflict) return attempt(false);
      } else if (isStatus(e, 404)) {
        lease = undefined;
        if (retryOnConflict) return attempt(false);
      } else fail(mine ? 'renew' : 'take over', e);
    }
  };

  const schedule = (): void => {
    if (closed) return;
    let delay = renewIntervalMs;
    if (!leader && lease?.spec?.holderIdentity && lease.spec.holderIdentity !== identity) {
      // wake up right when the holder's lease runs out, if that is sooner
      delay = Math.max(1, Math.min(renewIntervalMs, expiresAt(lease) - clock.now() + 1));
    }
    timer = clock.setTimer(() => {
      timer = undefined;
      run();
    }, delay);
  };

  function run(): void {
    if (closed) return;
    busy = attempt(true)
      .catch((e: unknown) => fail('use', e))
      .finally(schedule);
  }

  run();

  return {
    isLeader: () => leader && !closed,
    onChange(listener) {
      listeners.add(listener);
    },
    idle: () => busy,
    lastSeen: () => lease,
    async close() {
      if (closed) return;
      closed = true;
      timer?.cancel();
      await busy.catch(() => undefined);
      deadline?.cancel();
      const held = lease?.spec?.holderIdentity === identity;
      setLeader(false, 'closing');
      if (!held || !lease) return;
      const release = async (current: V1Lease): Promise<void> => {
        const now = clock.now();
        await put(current, { leaseDurationSeconds: 1, leaseTransitions: current.spec?.leaseTransitions ?? 0, acquireTime: new V1MicroTime(now), renewTime: new V1MicroTime(now) }, 'release');
      };
      try {
        await release(lease);
        logger.info({ event: 'lease.released', where, identity }, `released ${where}`);
      } catch (e) {
        if (isStatus(e, 409)) {
          try {
            const l = await withTimeout(api.readNamespacedLease({ name, namespace }), 'get');
            if (l.spec?.holderIdentity === identity) await release(l);
          } catch (e2) {
            fail('release', e2);
          }
        } else fail('release', e);
      }
    },
  };
}
