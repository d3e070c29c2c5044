/**
 * Lease leader election through @kubernetes/client-node against an HTTP
 * double of the Kubernetes API (test/kube/apiserver-double.ts). Time is a
 * FakeClock moved in 1 s steps, each followed by waiting for every
 * elector's API calls to finish, so the 15 s lease plays out in
 * milliseconds; one test uses the system clock with a 1 s lease.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { leaseElector, type LeaseElector, type LeaseElectorOptions } from '../../src/kube/lease.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { startDouble, until, type DoubleEnv } from './helpers.ts';

const NS = 'castellan-system';
let env: DoubleEnv;
let n = 0;

interface Replica {
  id: string;
  token: string;
  e: LeaseElector;
  changes: boolean[];
}

let clock: FakeClock;
let replicas: Replica[] = [];

function elect(lease: string, id: string, o: Partial<LeaseElectorOptions> = {}): Replica {
  const token = `token-${lease}-${id}`;
  const e = leaseElector({ kubeConfig: env.kcAs(token), namespace: NS, name: lease, identity: id, clock, ...o });
  const r: Replica = { id, token, e, changes: [] };
  e.onChange((v) => r.changes.push(v));
  replicas.push(r);
  return r;
}

const settle = async (): Promise<void> => {
  await Promise.all(replicas.map((r) => r.e.idle()));
};

/** Moves the fake clock `ms` in 1 s steps; after each, checks that at most one replica leads. */
async function run(ms: number, check: () => void = () => undefined): Promise<void> {
  for (let t = 0; t < ms; t += 1000) {
    clock.advance(Math.min(1000, ms - t));
    await settle();
    expect(leaders().length).toBeLessThanOrEqual(1);
    check();
  }
}

const leaders = (): Replica[] => replicas.filter((r) => r.e.isLeader());

/** Runs until `cond` holds; returns the fake time it took. */
async function runUntil(cond: () => boolean, maxMs: number): Promise<number> {
  const start = clock.now();
  while (!cond()) {
    if (clock.now() - start > maxMs) throw new Error(`condition not met within ${maxMs} ms of fake time`);
    await run(1000);
  }
  return clock.now() - start;
}

const leaseName = (): string => `castellan-leader-${++n}`;

beforeAll(async () => {
  env = await startDouble('castellan-lease-');
  env.api.createNamespace(NS);
});
afterEach(async () => {
  env.api.faults.length = 0;
  env.api.partitioned.clear();
  await Promise.all(replicas.map((r) => r.e.close()));
  replicas = [];
});
afterAll(async () => {
  await env.stop();
});

describe('Lease leader election (HTTP double of the Kubernetes API)', () => {
  it('two electors cold-starting together: exactly one leader; the Lease names it', async () => {
    clock = new FakeClock();
    const name = leaseName();
    const [a, b] = [elect(name, 'replica-a'), elect(name, 'replica-b')];
    await settle();
    expect(leaders()).toHaveLength(1);
    const leader = leaders()[0]!;
    const other = leader === a ? b : a;
    expect(leader.changes).toEqual([true]);
    expect(other.changes).toEqual([]);
    const l = env.api.get('leases', NS, name)!;
    expect(l.spec).toMatchObject({ holderIdentity: leader.id, leaseDurationSeconds: 15, leaseTransitions: 0 });
    expect((l.spec as { renewTime: string }).renewTime).toBe('2030-01-01T00:00:00.000000Z'); // MicroTime, RFC 3339 with microseconds
    const creates = env.api.writes.filter((w) => w.resource === 'leases' && w.name === name && w.verb === 'create');
    expect(creates.map((w) => w.status).sort()).toEqual([201, 409]);
  });

  it('three electors racing: exactly one leader; renewals keep it for a minute with no flapping', async () => {
    clock = new FakeClock();
    const name = leaseName();
    for (const id of ['r1', 'r2', 'r3']) elect(name, id);
    await settle();
    expect(leaders()).toHaveLength(1);
    const leader = leaders()[0]!;
    const renewsBefore = env.api.writeCount('leases', { verb: 'update', name });
    await run(60_000, () => expect(leaders()).toEqual([leader]));
    const renews = env.api.writeCount('leases', { verb: 'update', name }) - renewsBefore;
    expect(renews).toBeGreaterThanOrEqual(11); // every 5 s
    expect(renews).toBeLessThanOrEqual(13);
    for (const r of replicas) expect(r.changes).toEqual(r === leader ? [true] : []);
    expect(Date.parse((env.api.get('leases', NS, name)!.spec as { renewTime: string }).renewTime)).toBeGreaterThan(clock.now() - 5_001);
  });

  it('close() steps down and releases the Lease: the other takes over within one renew interval', async () => {
    clock = new FakeClock();
    const name = leaseName();
    const [a, b] = [elect(name, 'replica-a'), elect(name, 'replica-b')];
    await settle();
    const leader = leaders()[0]!;
    const other = leader === a ? b : a;
    await run(3000);
    await leader.e.close();
    expect(leader.changes).toEqual([true, false]);
    expect(leader.e.isLeader()).toBe(false);
    expect((env.api.get('leases', NS, name)!.spec as { holderIdentity?: string }).holderIdentity).toBeUndefined();
    const took = await runUntil(() => other.e.isLeader(), 10_000);
    expect(took).toBeLessThanOrEqual(5_000);
    expect(env.api.get('leases', NS, name)!.spec).toMatchObject({ holderIdentity: other.id, leaseTransitions: 1 });
  });

  it('a leader that crashes (stops renewing): the other takes over after about the lease duration, never two leaders', async () => {
    clock = new FakeClock();
    const name = leaseName();
    const [a, b] = [elect(name, 'replica-a'), elect(name, 'replica-b')];
    await settle();
    const leader = leaders()[0]!;
    const other = leader === a ? b : a;
    await run(7000);
    const lastRenew = Date.parse((env.api.get('leases', NS, name)!.spec as { renewTime: string }).renewTime);
    // the leader's process is cut off from the API server (a crash, as far as the cluster can tell)
    env.api.partitioned.add(leader.token);
    const took = await runUntil(() => other.e.isLeader(), 30_000);
    const at = clock.now() - lastRenew;
    expect(at).toBeGreaterThanOrEqual(15_000); // not before the lease ran out
    expect(at).toBeLessThanOrEqual(21_000); // within lease duration + one renew interval
    expect(took).toBeGreaterThan(0);
    // the cut-off leader stepped down on its own before that: leaseDuration − renewInterval after its last renewal
    expect(leader.changes).toEqual([true, false]);
    expect(env.api.get('leases', NS, name)!.spec).toMatchObject({ holderIdentity: other.id, leaseTransitions: 1 });
    // back on the network it follows
    env.api.partitioned.delete(leader.token);
    await run(20_000, () => expect(leaders()).toEqual([other]));
    expect(leader.changes).toEqual([true, false]);
  });

  it('a leader whose renewals fail steps down at leaseDuration − renewInterval, before anyone may take over', async () => {
    clock = new FakeClock();
    const name = leaseName();
    const a = elect(name, 'replica-a');
    await settle();
    expect(a.e.isLeader()).toBe(true);
    const lastRenew = clock.now();
    env.api.inject({ resource: 'leases', status: 503, count: 1000 });
    let lostAt: number | undefined;
    await run(15_000, () => {
      if (lostAt === undefined && !a.e.isLeader()) lostAt = clock.now();
    });
    expect(lostAt! - lastRenew).toBe(10_000);
    expect(a.changes).toEqual([true, false]);
    // the API comes back; the Lease is still its own, so it renews and leads again
    env.api.faults.length = 0;
    await runUntil(() => a.e.isLeader(), 6_000);
    expect(a.changes).toEqual([true, false, true]);
  });

  it('three electors, the leader crashes: exactly one of the others takes over (the other loses the race with a 409)', async () => {
    clock = new FakeClock();
    const name = leaseName();
    for (const id of ['r1', 'r2', 'r3']) elect(name, id);
    await settle();
    const leader = leaders()[0]!;
    env.api.partitioned.add(leader.token);
    await runUntil(() => leaders().length === 1 && leaders()[0] !== leader, 30_000);
    const next = leaders()[0]!;
    await run(10_000, () => expect(leaders()).toEqual([next]));
    expect(env.api.get('leases', NS, name)!.spec).toMatchObject({ holderIdentity: next.id, leaseTransitions: 1 });
    for (const r of replicas) if (r !== leader && r !== next) expect(r.changes).toEqual([]);
  });

  it('with the system clock (1 s lease, 200 ms renewals): one leader; after close() the other leads within a second', async () => {
    const name = leaseName();
    const opts = { clock: undefined, leaseDurationMs: 1000, renewIntervalMs: 200 };
    const [a, b] = [elect(name, 'replica-a', opts), elect(name, 'replica-b', opts)];
    await until(() => leaders().length === 1);
    const leader = leaders()[0]!;
    const other = leader === a ? b : a;
    const t0 = performance.now();
    await leader.e.close();
    await until(() => other.e.isLeader(), 5000);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(leaders()).toEqual([other]);
  });

  it('refuses a renew interval not shorter than the lease duration', () => {
    clock = new FakeClock();
    const make = () => leaseElector({ kubeConfig: env.kc(), namespace: NS, name: 'x', identity: 'y', leaseDurationMs: 5000, renewIntervalMs: 5000, clock });
    expect(make).toThrow(CastellanError);
    expect(make).toThrow(/shorter than the lease duration/);
  });
});
