/**
 * RBAC grants nothing beyond the allow-list below, in the kustomize builds
 * and in the chart's renders. A rule passes only if every (apiGroup,
 * resource, verb) it names is allowed for its kind of role, and, where the
 * allow-list limits an entry to resourceNames, the rule names a subset of
 * them. Wildcards, non-resource URLs, aggregation, escalate/bind/impersonate
 * and bindings to any role not defined here fail.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY, idOf, kustomizeBuild, readDocs, renderChart, yamlFiles, type Obj } from './support.ts';

interface Allowed {
  kind: 'Role' | 'ClusterRole';
  apiGroup: string;
  resource: string;
  verbs: string[];
  /** When set, rules must be limited to (a subset of) these names. */
  resourceNames?: string[];
  /** Only in an optional component: policy-watch (policyWatch.enabled) or ambient (ambient.trustedNodeAccounts). */
  optional?: Optional;
  why: string;
}

type Optional = 'policyWatch' | 'ambient';

const NS = 'castellan-system';
const SA = 'castellan';

/** The whole of what the CA server may do (issue 7 and the issue 6 flags it runs with). */
const ALLOWED: Allowed[] = [
  { kind: 'Role', apiGroup: '', resource: 'secrets', verbs: ['get', 'update', 'watch'], resourceNames: ['castellan-ca'], why: 'keyring Secret (--ca-secret)' },
  { kind: 'Role', apiGroup: '', resource: 'secrets', verbs: ['create'], why: 'first start creates the keyring; create cannot be limited by name' },
  { kind: 'Role', apiGroup: 'coordination.k8s.io', resource: 'leases', verbs: ['get', 'update'], resourceNames: ['castellan-leader'], why: 'leader election (--leader-lease)' },
  { kind: 'Role', apiGroup: 'coordination.k8s.io', resource: 'leases', verbs: ['create'], why: 'first election creates the Lease' },
  { kind: 'ClusterRole', apiGroup: 'authentication.k8s.io', resource: 'tokenreviews', verbs: ['create'], why: '--token-review' },
  { kind: 'ClusterRole', apiGroup: '', resource: 'configmaps', verbs: ['get', 'create'], why: 'trust bundle in every namespace (--publish-trust-bundle)' },
  { kind: 'ClusterRole', apiGroup: '', resource: 'configmaps', verbs: ['update'], resourceNames: ['istio-ca-root-cert'], why: 'refresh the trust bundle only' },
  { kind: 'ClusterRole', apiGroup: '', resource: 'namespaces', verbs: ['list', 'watch'], why: 'publish into new namespaces (--trust-bundle-namespaces)' },
  { kind: 'ClusterRole', apiGroup: 'security.istio.io', resource: 'authorizationpolicies', verbs: ['get', 'list', 'watch'], optional: 'policyWatch', why: 'policy watch (optional)' },
  { kind: 'ClusterRole', apiGroup: '', resource: 'pods', verbs: ['get', 'list', 'watch'], optional: 'ambient', why: 'node authorization of ztunnel (--trusted-node-accounts, optional)' },
];

/** Problems of the RBAC objects of one build; `optionals` says which optional entries may appear. */
function rbacProblems(objs: Obj[], optionals: Optional[] = []): string[] {
  const problems: string[] = [];
  const roles = objs.filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole');
  const defined = new Set(roles.map((r) => `${r.kind}/${r.metadata.name}`));
  for (const role of roles) {
    const id = idOf(role);
    if (role.aggregationRule) problems.push(`${id}: aggregationRule pulls in other roles' rules`);
    if (role.kind === 'Role' && role.metadata.namespace !== NS) problems.push(`${id}: Role outside ${NS}`);
    for (const [i, rule] of ((role.rules ?? []) as Obj[]).entries()) {
      const where = `${id} rule ${i}`;
      if (rule.nonResourceURLs) problems.push(`${where}: nonResourceURLs`);
      const groups = (rule.apiGroups ?? []) as string[];
      const resources = (rule.resources ?? []) as string[];
      const verbs = (rule.verbs ?? []) as string[];
      const names = rule.resourceNames as string[] | undefined;
      if ([...groups, ...resources, ...verbs, ...(names ?? [])].some((x) => x.includes('*'))) problems.push(`${where}: wildcard`);
      if (groups.length === 0 || resources.length === 0 || verbs.length === 0) problems.push(`${where}: empty apiGroups, resources or verbs`);
      for (const g of groups) {
        for (const r of resources) {
          for (const v of verbs) {
            const ok = ALLOWED.find(
              (a) =>
                a.kind === role.kind &&
                a.apiGroup === g &&
                a.resource === r &&
                a.verbs.includes(v) &&
                (!a.optional || optionals.includes(a.optional)) &&
                (!a.resourceNames || (names !== undefined && names.length > 0 && names.every((n) => a.resourceNames!.includes(n)))),
            );
            if (!ok) problems.push(`${where}: ${v} ${g || 'core'}/${r}${names ? ` [${names.join(',')}]` : ''} is not in the allow-list for a ${role.kind}`);
          }
        }
      }
    }
  }
  for (const b of objs.filter((o) => o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding')) {
    const id = idOf(b);
    const want = b.kind === 'RoleBinding' ? 'Role' : 'ClusterRole';
    if (b.roleRef?.kind !== want || b.roleRef?.apiGroup !== 'rbac.authorization.k8s.io') problems.push(`${id}: must refer to a ${want}`);
    if (!defined.has(`${b.roleRef?.kind}/${b.roleRef?.name}`)) problems.push(`${id}: binds ${b.roleRef?.kind}/${b.roleRef?.name}, which this build does not define`);
    if (b.kind === 'RoleBinding' && b.metadata.namespace !== NS) problems.push(`${id}: outside ${NS}`);
    for (const s of (b.subjects ?? []) as Obj[]) {
      if (s.kind !== 'ServiceAccount' || s.name !== SA || s.namespace !== NS) problems.push(`${id}: subject ${s.kind}/${s.namespace}/${s.name} is not the CA's ServiceAccount`);
    }
    if (!b.subjects?.length) problems.push(`${id}: no subjects`);
  }
  return problems;
}

function rulesUsed(objs: Obj[]): Set<Allowed> {
  const used = new Set<Allowed>();
  for (const role of objs.filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole')) {
    for (const rule of role.rules as Obj[]) {
      for (const a of ALLOWED) {
        if (a.kind === role.kind && rule.apiGroups.includes(a.apiGroup) && rule.resources.includes(a.resource) && a.verbs.every((v) => rule.verbs.includes(v))) used.add(a);
      }
    }
  }
  return used;
}

const builds: [string, () => Obj[], Optional[]][] = [
  ['kustomize base', () => kustomizeBuild(join(DEPLOY, 'kubernetes/base')), []],
  ['kustomize overlays/plugin-ca', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca')), []],
  ['kustomize overlays/policy-watch', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/policy-watch')), ['policyWatch']],
  ['kustomize overlays/ambient', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/ambient')), ['ambient']],
  // Federation needs no API access beyond the base: foreign bundles live in the keyring Secret.
  ['kustomize overlays/federation', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/federation')), []],
  ['helm defaults', () => renderChart(), []],
  ['helm policyWatch.enabled', () => renderChart({ policyWatch: { enabled: true } }), ['policyWatch']],
  ['helm ambient.trustedNodeAccounts', () => renderChart({ ambient: { trustedNodeAccounts: ['istio-system/ztunnel'] } }), ['ambient']],
  ['helm pluginCA', () => renderChart({ pluginCA: { secretName: 'cacerts' } }), []],
  ['helm federation', () => renderChart({ federation: { bundleEndpoint: { enabled: true }, trustDomains: [{ trustDomain: 'a.example', bundleEndpointUrl: 'https://ca.a.example:8443/' }] } }), []],
];

describe('RBAC', () => {
  it.each(builds)('%s grants nothing beyond the allow-list', (_name, build, optionals) => {
    expect(rbacProblems(build(), optionals)).toEqual([]);
  });

  it('the base uses every non-optional entry, and AuthorizationPolicy access only comes with the policy-watch component', () => {
    const base = kustomizeBuild(join(DEPLOY, 'kubernetes/base'));
    expect([...rulesUsed(base)].map((a) => a.why).sort()).toEqual(ALLOWED.filter((a) => !a.optional).map((a) => a.why).sort());
    expect(rbacProblems(kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/policy-watch'))).join('\n')).toMatch(/authorizationpolicies/);
    const component = readDocs(join(DEPLOY, 'kubernetes/components/policy-watch/rbac.yaml'));
    expect(rulesUsed(component).size).toBe(1);
  });

  it('pod access (get/list/watch, nothing more) only comes with the ambient component or ambient.trustedNodeAccounts', () => {
    for (const objs of [kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/ambient')), renderChart({ ambient: { trustedNodeAccounts: ['istio-system/ztunnel'] } })]) {
      expect(rbacProblems(objs).join('\n')).toMatch(/core\/pods/);
      const pods = objs.filter((o) => o.kind === 'ClusterRole').flatMap((r) => (r.rules as Obj[]).filter((x) => x.resources.includes('pods')));
      expect(pods).toEqual([{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }]);
    }
    for (const objs of [kustomizeBuild(join(DEPLOY, 'kubernetes/base')), renderChart(), renderChart({ policyWatch: { enabled: true } })]) {
      expect(objs.filter((o) => o.kind === 'ClusterRole').flatMap((r) => (r.rules as Obj[]).filter((x) => x.resources.includes('pods')))).toEqual([]);
    }
    expect(rulesUsed(readDocs(join(DEPLOY, 'kubernetes/components/ambient/rbac.yaml'))).size).toBe(1);
  });

  it('the agent examples need and carry no RBAC at all', () => {
    const kinds = yamlFiles(join(DEPLOY, 'agent')).flatMap((f) => readDocs(f).map((o) => o.kind as string));
    expect(kinds.filter((k) => /Role/.test(k as string))).toEqual([]);
  });

  it('the checker itself refuses what it should', () => {
    const role = (rules: Obj[], kind = 'ClusterRole', namespace?: string): Obj => ({ apiVersion: 'rbac.authorization.k8s.io/v1', kind, metadata: { name: 'castellan', namespace }, rules });
    const bad: [string, Obj[]][] = [
      ['wildcard verb', [role([{ apiGroups: [''], resources: ['configmaps'], verbs: ['*'] }])]],
      ['extra verb', [role([{ apiGroups: [''], resources: ['configmaps'], verbs: ['delete'] }])]],
      ['secrets cluster-wide', [role([{ apiGroups: [''], resources: ['secrets'], verbs: ['get'], resourceNames: ['castellan-ca'] }])]],
      ['secret get without resourceNames', [role([{ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }], 'Role', NS)]],
      ['another secret by name', [role([{ apiGroups: [''], resources: ['secrets'], verbs: ['get'], resourceNames: ['other'] }], 'Role', NS)]],
      ['update any configmap', [role([{ apiGroups: [''], resources: ['configmaps'], verbs: ['update'] }])]],
      ['non-resource URL', [role([{ nonResourceURLs: ['/metrics'], verbs: ['get'] }])]],
      ['policy watch in the base', [role([{ apiGroups: ['security.istio.io'], resources: ['authorizationpolicies'], verbs: ['list'] }])]],
      ['pods in the base', [role([{ apiGroups: [''], resources: ['pods'], verbs: ['list'] }])]],
      [
        'binding to cluster-admin',
        [{ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'x' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' }, subjects: [{ kind: 'ServiceAccount', name: SA, namespace: NS }] }],
      ],
      [
        'binding another subject',
        [role([]), { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'x' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'castellan' }, subjects: [{ kind: 'Group', name: 'system:authenticated' }] }],
      ],
    ];
    for (const [what, objs] of bad) expect(rbacProblems(objs), what).not.toEqual([]);
  });
});
