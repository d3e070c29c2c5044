/**
 * The Helm chart renders the same objects as the kustomize directories:
 * default values = deploy/kubernetes/base, pluginCA.secretName=cacerts =
 * overlays/plugin-ca, policyWatch.enabled = overlays/policy-watch,
 * ambient.trustedNodeAccounts=[istio-system/ztunnel] = overlays/ambient,
 * federation.bundleEndpoint.enabled = overlays/federation.
 *
 * Renderer: no helm binary can be installed here (neither the npm registry
 * nor Debian ships one), so helm-render/main.go renders the chart with Go's
 * text/template, the engine inside Helm, plus the handful of Helm functions
 * the chart uses (include, nindent, indent, quote, default, toYaml); a
 * template calling any other function fails to parse, so the chart cannot
 * outgrow the renderer unnoticed. Release: `helm template castellan
 * deploy/helm/castellan -n castellan-system`. The kustomize side is the
 * emulated `kustomize build` of support.ts.
 */
import { join } from 'node:path';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { byId, CHART, DEPLOY, kustomizeBuild, renderChart, renderChartFiles, type Obj } from './support.ts';
import { describeWith, peers } from '../support/peers.ts';

function sameObjects(helm: Obj[], kustomize: Obj[]): void {
  const h = byId(helm);
  const k = byId(kustomize);
  expect([...h.keys()].sort()).toEqual([...k.keys()].sort());
  for (const [id, o] of k) expect(h.get(id), id).toStrictEqual(o);
}

describeWith([peers.go], 'Helm chart (rendered by test/deploy/helm-render, Go)', () => {
  it('with default values renders exactly the kustomize base', () => {
    sameObjects(renderChart(), kustomizeBuild(join(DEPLOY, 'kubernetes/base')));
  });

  it('with pluginCA.secretName=cacerts renders exactly overlays/plugin-ca', () => {
    sameObjects(renderChart({ pluginCA: { secretName: 'cacerts' } }), kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca')));
  });

  it('with policyWatch.enabled renders exactly overlays/policy-watch', () => {
    sameObjects(renderChart({ policyWatch: { enabled: true } }), kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/policy-watch')));
  });

  it('with prometheusRule.enabled renders exactly overlays/observability (deploy/observability/alerts.yaml)', () => {
    sameObjects(renderChart({ prometheusRule: { enabled: true } }), kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/observability')));
    const rule = renderChart({ prometheusRule: { enabled: true, labels: { release: 'kube-prometheus' }, queueMax: '20000' } }).find((o) => o.kind === 'PrometheusRule')!;
    expect(rule.metadata.labels).toEqual({ 'app.kubernetes.io/name': 'castellan', 'app.kubernetes.io/instance': 'castellan', release: 'kube-prometheus' });
    const queue = (rule.spec.groups as Obj[]).flatMap((g) => g.rules as Obj[]).find((r) => r.alert === 'CastellanSignerQueueNearLimit')!;
    expect(queue.expr).toMatch(/> 0\.8 \* 20000$/);
    expect(renderChart().some((o) => o.kind === 'PrometheusRule')).toBe(false);
  });

  it('with ambient.trustedNodeAccounts=[istio-system/ztunnel] renders exactly overlays/ambient', () => {
    sameObjects(renderChart({ ambient: { trustedNodeAccounts: ['istio-system/ztunnel'] } }), kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/ambient')));
    const args = renderChart({ ambient: { trustedNodeAccounts: ['istio-system/ztunnel', 'kube-system/node-agent'] } }).find((o) => o.kind === 'Deployment')!.spec.template.spec.containers[0].args as string[];
    expect(args.filter((a) => a.startsWith('--trusted-node-accounts'))).toEqual(['--trusted-node-accounts=istio-system/ztunnel', '--trusted-node-accounts=kube-system/node-agent']);
  });

  it('with federation.bundleEndpoint.enabled renders exactly overlays/federation', () => {
    sameObjects(renderChart({ federation: { bundleEndpoint: { enabled: true } } }), kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/federation')));
  });

  it('federation: port, profile, refresh hint, the Service type and annotations, and the foreign trust domains into the config file', () => {
    const trustDomains = [
      { trustDomain: 'a.example', bundleEndpointUrl: 'https://ca.a.example:8443/' },
      { trustDomain: 'partner.example', bundleEndpointUrl: 'https://bundle.partner.example/', profile: 'https_web', caFile: '/etc/castellan/partner-ca.pem' },
    ];
    const annotations = { 'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb', 'example.com/on': 'yes' };
    const objs = renderChart({ name: 'ca', federation: { bundleEndpoint: { enabled: true, port: 9443, refreshHint: '2m', service: { type: 'LoadBalancer', annotations } }, trustDomains } });
    const svc = objs.find((o) => o.kind === 'Service' && o.metadata.name === 'ca-bundle-endpoint')!;
    expect(svc.spec.type).toBe('LoadBalancer');
    expect(svc.metadata.annotations).toStrictEqual(annotations);
    expect(svc.spec.ports).toStrictEqual([{ name: 'https-bundle', port: 9443, targetPort: 'https-bundle', protocol: 'TCP', appProtocol: 'https' }]);
    expect(objs.find((o) => o.kind === 'Service' && o.metadata.name === 'ca')!.spec.type).toBe('ClusterIP');
    const c = objs.find((o) => o.kind === 'Deployment')!.spec.template.spec.containers[0] as Obj;
    expect((c.args as string[]).filter((a) => a.startsWith('--bundle'))).toEqual(['--bundle-endpoint-listen=0.0.0.0:9443', '--bundle-endpoint-profile=https_spiffe', '--bundle-refresh-hint=2m']);
    expect((c.ports as Obj[]).find((p) => p.name === 'https-bundle')!.containerPort).toBe(9443);
    const config = parse(objs.find((o) => o.kind === 'ConfigMap')!.data['config.yaml'] as string) as Obj;
    expect(config.federation).toStrictEqual(trustDomains);
    // Foreign trust domains alone (fetching without serving): no endpoint, no second Service.
    const fetchOnly = renderChart({ federation: { trustDomains: trustDomains.slice(0, 1) } });
    expect(fetchOnly.filter((o) => o.kind === 'Service').map((o) => o.metadata.name)).toEqual(['castellan']);
    expect((parse(fetchOnly.find((o) => o.kind === 'ConfigMap')!.data['config.yaml'] as string) as Obj).federation).toStrictEqual(trustDomains.slice(0, 1));
    expect(JSON.stringify(fetchOnly.find((o) => o.kind === 'Deployment'))).not.toMatch(/bundle/);
  });

  it('carries the values into the config file and the Deployment', () => {
    const objs = renderChart({
      trustDomain: 'example.org',
      ttl: { default: '1h', max: '48h' },
      caKeyType: 'ec-p384',
      replicas: 3,
      image: { repository: 'registry.example/castellan', tag: '1.2.3' },
      resources: { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '4', memory: '2Gi' } },
      signerWorkers: '3',
      auth: { oidcIssuer: 'https://kubernetes.default.svc.cluster.local' },
      trustBundle: { publish: false, namespaces: 'istio-injection=enabled' },
      nodeSelector: { 'kubernetes.io/os': 'linux' },
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'mesh', effect: 'NoSchedule' }],
    });
    const cm = objs.find((o) => o.kind === 'ConfigMap')!;
    const config = parse(cm.data['config.yaml'] as string) as Obj;
    expect(config).toMatchObject({
      trustDomain: 'example.org',
      defaultTtl: '1h',
      maxTtl: '48h',
      caKeyType: 'ec-p384',
      signerWorkers: '3',
      oidcIssuer: 'https://kubernetes.default.svc.cluster.local',
      publishTrustBundle: false,
      trustBundleNamespaces: 'istio-injection=enabled',
    });
    const dep = objs.find((o) => o.kind === 'Deployment')!;
    expect(dep.spec.replicas).toBe(3);
    const pod = dep.spec.template.spec as Obj;
    expect(pod.containers[0].image).toBe('registry.example/castellan:1.2.3');
    expect(pod.containers[0].resources).toStrictEqual({ requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '4', memory: '2Gi' } });
    expect(pod.nodeSelector).toStrictEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toStrictEqual([{ key: 'dedicated', operator: 'Equal', value: 'mesh', effect: 'NoSchedule' }]);
  });

  it('follows name and namespace into RBAC resourceNames, the config and the server DNS names', () => {
    const objs = renderChart({ name: 'ca', namespace: { name: 'pki' } });
    for (const o of objs.filter((x) => x.kind !== 'Namespace' && x.metadata.namespace !== undefined)) expect(o.metadata.namespace, o.kind).toBe('pki');
    const role = objs.find((o) => o.kind === 'Role')!;
    expect(role.rules.flatMap((r: Obj) => r.resourceNames ?? [])).toEqual(['ca-ca', 'ca-leader']);
    const config = parse(objs.find((o) => o.kind === 'ConfigMap')!.data['config.yaml'] as string) as Obj;
    expect(config.caSecret).toBe('pki/ca-ca');
    expect(config.leaderLease).toBe('pki/ca-leader');
    expect(config.serverDns).toEqual(['ca.pki.svc', 'ca.pki.svc.cluster.local', 'ca.pki', 'ca']);
    expect(objs.find((o) => o.kind === 'Namespace')!.metadata.name).toBe('pki');
    expect(renderChart({ namespace: { create: false } }).some((o) => o.kind === 'Namespace')).toBe(false);
  });

  it('values.yaml reads the same as YAML 1.1 (Helm) and YAML 1.2', () => {
    const text = readFileSync(join(CHART, 'values.yaml'), 'utf8');
    expect(parse(text, { version: '1.1' })).toStrictEqual(parse(text, { version: '1.2' }));
  });

  it('renders NOTES.txt apart from the manifests, and no empty template leaves a stray document', () => {
    const files = renderChartFiles();
    expect(Object.keys(files)).not.toContain('castellan/templates/NOTES.txt');
    expect(files['castellan/templates/rbac-policy-watch.yaml']!.trim()).toBe('');
    expect(files['castellan/templates/rbac-ambient.yaml']!.trim()).toBe('');
  });

  describe('the renderer itself', () => {
    let dir = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'castellan-chart-'));
      mkdirSync(join(dir, 'templates'));
      writeFileSync(join(dir, 'Chart.yaml'), 'apiVersion: v2\nname: probe\nversion: 0.0.1\n');
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('refuses a function it does not implement, so the chart cannot outgrow it unnoticed', () => {
      writeFileSync(join(dir, 'values.yaml'), '{}\n');
      writeFileSync(join(dir, 'templates', 'x.yaml'), 'a: {{ sha256sum "x" }}\n');
      expect(() => renderChartFiles({}, { chartDir: dir })).toThrow(/function "sha256sum" not defined/);
      rmSync(join(dir, 'templates', 'x.yaml'));
    });

    it('toYaml | nindent gives back the same data, awkward strings included; missing values render empty', () => {
      const data = {
        plain: 'abc',
        words: ['yes', 'no', 'on', 'off', 'null', '~', 'true', 'y', 'n'],
        numbers: ['0755', '1.0', '1e3', '250m', '-1', '+1', '.5', '0x1F', '2'],
        odd: ['', ' lead', 'trail ', 'a: b', '#c', '- d', '@e', '*f', '&g', '!h', '%i', '{j}', '[k]', 'l,m', 'π', 'tab\tx', 'quote"s', "apos'", 'back\\slash', 'multi\nline'],
        nested: { list: [{ a: 1, b: [true, false, null] }, [], {}], empty: {}, none: [] },
        n: 3,
        f: 2.5,
      };
      writeFileSync(join(dir, 'values.yaml'), JSON.stringify({ data }) + '\n');
      writeFileSync(join(dir, 'templates', 'y.yaml'), 'top:\n  data:\n    {{- toYaml .Values.data | nindent 4 }}\n  missing: "{{ .Values.nothing }}"\n  q: {{ quote "a\\"b" }}\n  d: {{ default "dflt" .Values.unset }}\n');
      const out = renderChartFiles({}, { chartDir: dir });
      const doc = parse(out['probe/templates/y.yaml']!, { version: '1.1' }) as Obj;
      expect(doc.top.data).toStrictEqual(data);
      expect(parse(out['probe/templates/y.yaml']!, { version: '1.2' })).toStrictEqual(doc);
      expect(doc.top.missing).toBe('');
      expect(doc.top.q).toBe('a"b');
      expect(doc.top.d).toBe('dflt');
      rmSync(join(dir, 'templates', 'y.yaml'));
    });
  });
});
