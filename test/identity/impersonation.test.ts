/**
 * Node authorization of ImpersonatedIdentity (src/identity/impersonation.ts)
 * over an in-memory pod index: Istio's checks in Istio's order, each refusal
 * by its reason (log and metric) behind one short PERMISSION_DENIED, the
 * mTLS combination refused clearly, UNAVAILABLE before the first pod list;
 * and the configuration: NS/SA lists and Istio's environment name.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createImpersonationMetrics, NodeAuthorizer, parseTrustedNodeAccounts, withIstioEnvAliases, type RefusalReason } from '../../src/identity/impersonation.ts';
import type { Caller } from '../../src/identity/types.ts';
import { PodIndex, type PodObject } from '../../src/kube/pod-cache.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { createLogger } from '../../src/platform/logger.ts';

const TD = 'cluster.local';
const pod = (ns: string, name: string, uid: string, sa: string, node?: string): PodObject => ({ metadata: { namespace: ns, name, uid }, spec: { serviceAccountName: sa, nodeName: node } });

function setup(o: { synced?: boolean } = {}) {
  const pods = new PodIndex();
  pods.replace([
    pod('istio-system', 'ztunnel-a', 'uid-za', 'ztunnel', 'n1'),
    pod('istio-system', 'ztunnel-pending', 'uid-zp', 'ztunnel'),
    pod('istio-system', 'impostor', 'uid-im', 'other', 'n1'),
    pod('shop', 'cart-0', 'uid-c0', 'cart', 'n1'),
    pod('shop', 'pay-0', 'uid-p0', 'pay', 'n2'),
  ]);
  if (o.synced === false) pods.synced = false;
  const registry = new Registry();
  const metrics = createImpersonationMetrics(registry);
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  const authz = new NodeAuthorizer({ trustDomain: TD, accounts: parseTrustedNodeAccounts(['istio-system/ztunnel']), pods, logger, metrics });
  const refused = async (reason: RefusalReason): Promise<number> => (await metrics.refused.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  return { pods, authz, lines, refused };
}

function caller(ns: string, sa: string, pod?: { name?: string; uid?: string }, method: Caller['method'] = 'tokenreview'): Caller {
  return { spiffeId: `spiffe://${TD}/ns/${ns}/sa/${sa}`, identity: { trustDomain: TD, namespace: ns, serviceAccount: sa }, method, pod };
}
const ZTUNNEL = caller('istio-system', 'ztunnel', { name: 'ztunnel-a', uid: 'uid-za' });
const CART = `spiffe://${TD}/ns/shop/sa/cart`;

function refusal(fn: () => unknown): CastellanError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CastellanError) return e;
    throw e;
  }
  throw new Error('not refused');
}

describe('node authorization of ImpersonatedIdentity', () => {
  it('ok/a trusted node agent gets a workload on its own node', () => {
    const { authz } = setup();
    expect(authz.authorize(ZTUNNEL, CART, 'r1')).toEqual({ spiffeId: CART, identity: { trustDomain: TD, namespace: 'shop', serviceAccount: 'cart' }, node: 'n1', nodeAccount: 'istio-system/ztunnel' });
  });

  it.each<[string, Caller, unknown, RefusalReason]>([
    ['an untrusted caller (even asking for a malformed identity: trust is checked first)', caller('shop', 'cart', { name: 'cart-0', uid: 'uid-c0' }), 'not a spiffe id', 'not_node_account'],
    ['a pod of the node account\'s namespace under another service account', caller('istio-system', 'other', { name: 'impostor', uid: 'uid-im' }), CART, 'not_node_account'],
    ['a malformed identity', ZTUNNEL, 'spiffe://cluster.local/ns/shop', 'bad_identity'],
    ['an identity that is not a string', ZTUNNEL, { ns: 'shop' }, 'bad_identity'],
    ['an empty identity', ZTUNNEL, '', 'bad_identity'],
    ['another trust domain', ZTUNNEL, 'spiffe://other.example/ns/shop/sa/cart', 'foreign_trust_domain'],
    ['a token bound to no pod', caller('istio-system', 'ztunnel'), CART, 'no_pod_claim'],
    ['a token whose pod is gone', caller('istio-system', 'ztunnel', { name: 'ztunnel-gone', uid: 'uid-zg' }), CART, 'caller_pod_missing'],
    ['a token of a pod since re-created under the same name (UID mismatch)', caller('istio-system', 'ztunnel', { name: 'ztunnel-a', uid: 'uid-old' }), CART, 'caller_pod_uid'],
    ['a token naming a pod of another service account', caller('istio-system', 'ztunnel', { name: 'impostor', uid: 'uid-im' }), CART, 'caller_pod_service_account'],
    ['a caller pod not scheduled', caller('istio-system', 'ztunnel', { name: 'ztunnel-pending', uid: 'uid-zp' }), CART, 'caller_pod_unscheduled'],
    ['a workload on another node', ZTUNNEL, `spiffe://${TD}/ns/shop/sa/pay`, 'not_on_node'],
    ['a service account with no pod at all', ZTUNNEL, `spiffe://${TD}/ns/shop/sa/ghost`, 'not_on_node'],
  ])('C1/refuses %s: PERMISSION_DENIED, the reason only in the log and the metric', async (_n, who, requested, reason) => {
    const { authz, lines, refused } = setup();
    const e = refusal(() => authz.authorize(who, requested, 'r2'));
    expect([e.kind, e.code, e.message]).toEqual(['PERMISSION_DENIED', 'auth.impersonation', 'ImpersonatedIdentity is not permitted for this caller']);
    expect(lines.at(-1)).toMatchObject({ event: 'ca.impersonation_refused', requestId: 'r2', reason, caller: who.spiffeId });
    expect(await refused(reason)).toBe(1);
  });

  it('C1/refuses impersonation over an mTLS renewal clearly', () => {
    const { authz } = setup();
    const e = refusal(() => authz.authorize({ ...ZTUNNEL, method: 'mtls', pod: undefined }, CART, 'r3'));
    expect([e.kind, e.code]).toEqual(['PERMISSION_DENIED', 'auth.impersonation_mtls']);
    expect(e.message).toMatch(/client certificate.*service-account token/);
  });

  it('answers UNAVAILABLE (retryable) while the pods are not listed yet, and only to a trusted caller with a valid request', () => {
    const { authz } = setup({ synced: false });
    expect(refusal(() => authz.authorize(ZTUNNEL, CART, 'r4')).kind).toBe('UNAVAILABLE');
    expect(refusal(() => authz.authorize(caller('shop', 'cart'), CART, 'r4')).code).toBe('auth.impersonation');
    expect(refusal(() => authz.authorize(ZTUNNEL, 'nope', 'r4')).code).toBe('auth.impersonation');
  });

  it('follows the index: a workload leaving the node is refused from then on', () => {
    const { authz, pods } = setup();
    expect(authz.authorize(ZTUNNEL, CART, 'r5').node).toBe('n1');
    pods.apply('DELETED', pod('shop', 'cart-0', 'uid-c0', 'cart', 'n1'));
    expect(refusal(() => authz.authorize(ZTUNNEL, CART, 'r6')).code).toBe('auth.impersonation');
  });
});

describe('trusted node accounts configuration', () => {
  it('parses NS/SA lists, repeated or comma-separated, blanks ignored, duplicates merged', () => {
    expect(parseTrustedNodeAccounts(['istio-system/ztunnel, kube-system/node-agent', 'istio-system/ztunnel', ''])).toEqual([
      { namespace: 'istio-system', serviceAccount: 'ztunnel' },
      { namespace: 'kube-system', serviceAccount: 'node-agent' },
    ]);
  });

  it.each(['ztunnel', 'istio-system/', '/ztunnel', 'a/b/c', 'Istio-System/ztunnel', 'istio-system/zt unnel'])('refuses "%s" with a message naming it (Istio skips it silently)', (v) => {
    expect(() => parseTrustedNodeAccounts([v])).toThrow(new RegExp(`"${v.replace(/[/.]/g, '\\$&')}" is not NAMESPACE/SERVICEACCOUNT`));
  });

  it("reads Istio's CA_TRUSTED_NODE_ACCOUNTS as CASTELLAN_TRUSTED_NODE_ACCOUNTS; both set differently is a usage error", () => {
    expect(withIstioEnvAliases({ CA_TRUSTED_NODE_ACCOUNTS: 'istio-system/ztunnel' }).CASTELLAN_TRUSTED_NODE_ACCOUNTS).toBe('istio-system/ztunnel');
    expect(withIstioEnvAliases({ CA_TRUSTED_NODE_ACCOUNTS: 'a/b', CASTELLAN_TRUSTED_NODE_ACCOUNTS: 'a/b' }).CASTELLAN_TRUSTED_NODE_ACCOUNTS).toBe('a/b');
    expect(() => withIstioEnvAliases({ CA_TRUSTED_NODE_ACCOUNTS: 'a/b', CASTELLAN_TRUSTED_NODE_ACCOUNTS: 'c/d' })).toThrow(/both set/);
    expect(withIstioEnvAliases({}).CASTELLAN_TRUSTED_NODE_ACCOUNTS).toBeUndefined();
  });
});
