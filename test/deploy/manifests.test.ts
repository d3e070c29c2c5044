/**
 * Every manifest under deploy/ and every render of the chart is valid against
 * the Kubernetes OpenAPI schemas (kubernetes-models validators, plus
 * @kubernetes/client-node's models for unknown fields: see support.ts), and
 * the pods are hardened the same way everywhere.
 */
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY, idOf, kustomizeBuild, podSpecs, readDocs, renderChart, schemaProblems, yamlFiles, type Obj } from './support.ts';

/**
 * The Kubernetes manifests of deploy/kubernetes and deploy/agent (other
 * folders of deploy/ hold other things: the chart's sources, Envoy config,
 * policy examples), less kustomize's own files and patches.
 */
function isManifestFile(path: string): boolean {
  const rel = relative(DEPLOY, path);
  if (/(^|\/)kustomization\.ya?ml$/.test(rel)) return false;
  if (/^kubernetes\/(overlays\/plugin-ca|components\/ambient|components\/federation)\/deployment-patch\.yaml$/.test(rel)) return false;
  return true;
}

const builds: [string, () => Obj[]][] = [
  ['kustomize base', () => kustomizeBuild(join(DEPLOY, 'kubernetes/base'))],
  ['kustomize overlays/plugin-ca', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca'))],
  ['kustomize overlays/policy-watch', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/policy-watch'))],
  ['kustomize overlays/observability', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/observability'))],
  ['kustomize overlays/ambient', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/ambient'))],
  ['kustomize overlays/federation', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/federation'))],
  ['kustomize deploy/agent', () => kustomizeBuild(join(DEPLOY, 'agent'))],
  ['helm defaults', () => renderChart()],
  ['helm every option', () =>
    renderChart({
      pluginCA: { secretName: 'cacerts' },
      policyWatch: { enabled: true },
      prometheusRule: { enabled: true, labels: { release: 'prometheus' }, queueMax: '20000' },
      ambient: { trustedNodeAccounts: ['istio-system/ztunnel'] },
      federation: {
        bundleEndpoint: { enabled: true, port: 9443, refreshHint: '1m', service: { type: 'LoadBalancer', annotations: { 'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb' } } },
        trustDomains: [{ trustDomain: 'a.example', bundleEndpointUrl: 'https://ca.a.example:8443/' }],
      },
      auth: { oidcIssuer: 'https://kubernetes.default.svc.cluster.local' },
      trustBundle: { publish: false, namespaces: 'mesh=on' },
      nodeSelector: { 'kubernetes.io/os': 'linux' },
      tolerations: [{ operator: 'Exists' }],
      replicas: 3,
    })],
  ['helm namespace.create=false', () => renderChart({ namespace: { create: false } })],
];

describe('Kubernetes schemas', () => {
  const files = [...yamlFiles(join(DEPLOY, 'kubernetes')), ...yamlFiles(join(DEPLOY, 'agent'))].filter(isManifestFile);

  it('finds the manifests', () => {
    expect(files.map((f) => relative(DEPLOY, f))).toEqual(
      expect.arrayContaining(['kubernetes/base/deployment.yaml', 'kubernetes/base/rbac.yaml', 'kubernetes/components/policy-watch/rbac.yaml', 'kubernetes/components/ambient/rbac.yaml', 'agent/sidecar.yaml', 'agent/node-daemon.yaml']),
    );
  });

  it.each(files.map((f) => [relative(DEPLOY, f), f]))('%s is valid', (_rel, f) => {
    const docs = readDocs(f);
    expect(docs.length).toBeGreaterThan(0);
    expect(docs.flatMap(schemaProblems)).toEqual([]);
  });

  it.each(builds)('%s: every object is valid', (_n, build) => {
    expect(build().flatMap(schemaProblems)).toEqual([]);
  });

  it('the validation has teeth: a misspelled field, a wrong type and a missing required field are refused', () => {
    const [dep] = readDocs(join(DEPLOY, 'kubernetes/base/deployment.yaml'));
    const typo = structuredClone(dep!);
    typo.spec.template.spec.containers[0].readinesProbe = typo.spec.template.spec.containers[0].readinessProbe;
    expect(schemaProblems(typo).join()).toMatch(/readinesProbe: unknown field/);
    const type = structuredClone(dep!);
    type.spec.template.spec.containers[0].ports[0].containerPort = '15012';
    expect(schemaProblems(type).join()).toMatch(/containerPort must be integer/);
    const missing = structuredClone(dep!);
    delete missing.spec.selector;
    expect(schemaProblems(missing).join()).toMatch(/selector/);
    expect(schemaProblems({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } }).join()).toMatch(/no schema registered/);
    const [rule] = readDocs(join(DEPLOY, 'observability/alerts.yaml'));
    expect(schemaProblems(rule!)).toEqual([]);
    const bad = structuredClone(rule!);
    bad.spec.groups[0].rules[0].for = '10 minutes';
    bad.spec.groups[0].rules[1].severity = 'warning';
    delete bad.spec.groups[0].rules[2].expr;
    expect(schemaProblems(bad).join('\n')).toMatch(/rules\.0\.for: must be a Prometheus duration[^]*rules\.1: Unrecognized key[^]*rules\.2\.expr/);
  });
});

function containersOf(spec: Obj): Obj[] {
  return [...((spec.initContainers ?? []) as Obj[]), ...((spec.containers ?? []) as Obj[])];
}

describe('pod hardening', () => {
  it.each(builds)('%s: non-root, read-only root, no capabilities, RuntimeDefault seccomp, no automounted token, limits', (_n, build) => {
    const objs = build();
    const pods = podSpecs(objs);
    expect(pods.length).toBeGreaterThan(0);
    for (const { id, spec } of pods) {
      expect(spec.automountServiceAccountToken, id).toBe(false);
      expect(spec.securityContext?.runAsNonRoot, id).toBe(true);
      expect(spec.securityContext?.seccompProfile, id).toEqual({ type: 'RuntimeDefault' });
      expect(spec.hostNetwork ?? false, id).toBe(false);
      expect(spec.hostPID ?? false, id).toBe(false);
      expect(spec.hostIPC ?? false, id).toBe(false);
      const sa = objs.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === spec.serviceAccountName);
      expect(sa, `${id}: its ServiceAccount`).toBeDefined();
      expect(sa!.automountServiceAccountToken, `${id}: ServiceAccount automount`).toBe(false);
      const volumes = new Map(((spec.volumes ?? []) as Obj[]).map((v) => [v.name as string, v]));
      for (const v of volumes.values()) expect(v.hostPath, `${id}: hostPath volume ${v.name}`).toBeUndefined();
      for (const c of containersOf(spec)) {
        const where = `${id} container ${c.name}`;
        const sc = (c.securityContext ?? {}) as Obj;
        expect(sc.allowPrivilegeEscalation, where).toBe(false);
        expect(sc.readOnlyRootFilesystem, where).toBe(true);
        expect(sc.privileged ?? false, where).toBe(false);
        expect(sc.capabilities?.drop, where).toEqual(['ALL']);
        expect(sc.capabilities?.add, where).toBeUndefined();
        expect(sc.runAsUser ?? spec.securityContext.runAsUser, `${where}: numeric non-root uid`).toBeGreaterThan(0);
        expect(c.resources?.requests?.cpu, where).toBeDefined();
        expect(c.resources?.requests?.memory, where).toBeDefined();
        expect(c.resources?.limits?.memory, where).toBeDefined();
        expect(c.image, where).toMatch(/:[\w][\w.-]*$/);
        expect(c.image, where).not.toMatch(/:latest$/);
        for (const m of (c.volumeMounts ?? []) as Obj[]) expect(volumes.has(m.name as string), `${where}: mount of undefined volume ${m.name}`).toBe(true);
        // Only serviceAccountToken projections carry tokens, and only where mounted read-only.
        for (const m of (c.volumeMounts ?? []) as Obj[]) {
          const v = volumes.get(m.name as string)!;
          if (v.projected?.sources?.some((s: Obj) => s.serviceAccountToken)) expect(m.readOnly, `${where}: token mount ${m.name}`).toBe(true);
          if (v.secret) expect(m.readOnly, `${where}: secret mount ${m.name}`).toBe(true);
        }
      }
    }
  });
});

describe('CA server objects', () => {
  it.each(builds.filter(([n]) => !n.includes('agent')))('%s: replicas, probes, anti-affinity, PDB, Service and the API token', (_n, build) => {
    const objs = build();
    const dep = objs.find((o) => o.kind === 'Deployment')!;
    const pod = dep.spec.template.spec as Obj;
    const labels = dep.spec.template.metadata.labels as Obj;
    expect(dep.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(dep.spec.selector.matchLabels).toEqual(Object.fromEntries(Object.entries(labels).filter(([k]) => k in dep.spec.selector.matchLabels)));
    const c = (pod.containers as Obj[]).find((x) => x.name === 'castellan')!;
    const port = (name: string | number): number => (typeof name === 'number' ? name : (c.ports as Obj[]).find((p) => p.name === name)!.containerPort);
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(port(c.readinessProbe.httpGet.port)).toBe(15014);
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(port(c.livenessProbe.httpGet.port)).toBe(15014);
    expect(port('grpc')).toBe(15012);
    // Replicas spread over nodes.
    const aa = pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
    expect(aa.topologyKey).toBe('kubernetes.io/hostname');
    expect(aa.labelSelector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    // PDB keeps one.
    const pdb = objs.find((o) => o.kind === 'PodDisruptionBudget')!;
    expect(pdb.spec.selector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    expect(pdb.spec.minAvailable).toBe(1);
    // Service: gRPC 15012 and metrics 15014, to named container ports.
    const svc = objs.find((o) => o.kind === 'Service' && o.metadata.name === dep.metadata.name)!;
    expect(svc.spec.selector).toEqual(dep.spec.selector.matchLabels);
    // The CA's own API is never exposed outside the cluster, whatever else is.
    expect(svc.spec.type).toBe('ClusterIP');
    expect((svc.spec.ports as Obj[]).map((p) => [p.name, p.port, port(p.targetPort)])).toEqual([
      ['grpc', 15012, 15012],
      ['http-metrics', 15014, 15014],
    ]);
    // Any other Service is the bundle endpoint's, to its own container port, and the server listens there.
    for (const other of objs.filter((o) => o.kind === 'Service' && o !== svc)) {
      expect(other.metadata.name).toBe(`${dep.metadata.name}-bundle-endpoint`);
      expect(other.spec.selector).toEqual(dep.spec.selector.matchLabels);
      expect((other.spec.ports as Obj[]).map((p) => [p.name, p.port === port(p.targetPort)])).toEqual([['https-bundle', true]]);
      expect(c.args).toContain(`--bundle-endpoint-listen=0.0.0.0:${port('https-bundle')}`);
    }
    // The one token: for the API server (no audience), at the in-cluster path, with CA and namespace.
    const tokenVols = (pod.volumes as Obj[]).filter((v) => v.projected?.sources?.some((s: Obj) => s.serviceAccountToken));
    expect(tokenVols.length).toBe(1);
    const sources = tokenVols[0]!.projected.sources as Obj[];
    expect(sources.find((s) => s.serviceAccountToken)!.serviceAccountToken.audience).toBeUndefined();
    expect(sources.find((s) => s.configMap)!.configMap).toMatchObject({ name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] });
    expect(sources.find((s) => s.downwardAPI)!.downwardAPI.items).toEqual([{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }]);
    const mounts = (c.volumeMounts as Obj[]).filter((m) => m.name === tokenVols[0]!.name);
    expect(mounts.map((m) => m.mountPath)).toEqual(['/var/run/secrets/kubernetes.io/serviceaccount']);
    // Init containers (plug-in CA) get no token.
    for (const ic of (pod.initContainers ?? []) as Obj[]) expect((ic.volumeMounts as Obj[]).some((m) => m.name === tokenVols[0]!.name)).toBe(false);
    // The CA's own namespace is the one everything else is in.
    for (const o of objs.filter((x) => x.metadata.namespace)) expect(o.metadata.namespace, idOf(o)).toBe('castellan-system');
  });

  it('plug-in CA: the Secret is mounted only into the init container, which writes a memory emptyDir the server mounts read-only', () => {
    const dep = kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca')).find((o) => o.kind === 'Deployment')!;
    const pod = dep.spec.template.spec as Obj;
    const secretVol = (pod.volumes as Obj[]).find((v) => v.secret)!;
    expect(secretVol.secret.secretName).toBe('cacerts');
    const users = containersOf(pod).filter((c) => (c.volumeMounts as Obj[]).some((m) => m.name === secretVol.name));
    expect(users.map((c) => c.name)).toEqual(['copy-cacerts']);
    const copyTo = (users[0]!.volumeMounts as Obj[]).find((m) => m.name !== secretVol.name)!;
    expect((pod.volumes as Obj[]).find((v) => v.name === copyTo.name)!.emptyDir.medium).toBe('Memory');
    const server = (pod.containers as Obj[])[0]!;
    expect((server.volumeMounts as Obj[]).find((m) => m.name === copyTo.name)).toMatchObject({ mountPath: copyTo.mountPath, readOnly: true });
    expect(server.args).toContain(`--cacerts-dir=${copyTo.mountPath}`);
    // The group that may read the Secret's files is the pod's fsGroup, i.e. the init container's.
    expect(secretVol.secret.defaultMode).toBe(0o440);
    expect(pod.securityContext.fsGroup).toBe(users[0]!.securityContext.runAsGroup ?? pod.securityContext.runAsGroup);
    // The script writes the four files of Istio's layout, the key 0600.
    const script = (users[0]!.args as string[]).join('\n');
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) expect(script).toContain(`'${f}'`);
    expect(script).toMatch(/ca-key\.pem' \? 0o600/);
  });
});
