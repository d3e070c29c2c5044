/**
 * The configuration the manifests give Castellan is configuration Castellan
 * accepts: the server's config file (ConfigMap) plus its container args go
 * through the server's own loader (parseCommand + resolveServerConfig), the
 * agents' args through the agent's (parseCommand + resolveAgentConfig). An
 * unknown key or flag fails, except the pending ones listed below.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { AGENT_FLAGS, resolveAgentConfig } from '../../src/agent/config.ts';
import { camel, parseCommand, type FlagSpec } from '../../src/config/flags.ts';
import { resolveServerConfig, SERVER_FLAGS } from '../../src/server/config.ts';
import { DEPLOY, kustomizeBuild, readDocs, renderChart, yamlFiles, type Obj } from './support.ts';
import { peers, skipWithout } from '../support/peers.ts';

/**
 * Server flags the manifests use before they exist: issue 6 (keyring in a
 * Kubernetes Secret, leader election, trust-bundle publication, admin socket)
 * adds them under exactly these names. Each is used only until SERVER_FLAGS
 * defines it; from then on the real definition is checked instead (and its
 * type must be the one assumed here). Anything not in SERVER_FLAGS and not in
 * this list fails the test: a manifest cannot use a flag nobody defined.
 */
const PENDING_SERVER_FLAGS: (FlagSpec & { check: (v: unknown) => boolean })[] = [
  { name: 'keystore', type: 'string', default: 'file', help: 'file|kubernetes', check: (v) => v === 'file' || v === 'kubernetes' },
  { name: 'ca-secret', type: 'string', default: 'castellan-system/castellan-ca', help: 'NAMESPACE/NAME of the keyring Secret', check: (v) => typeof v === 'string' && /^[a-z0-9-]+\/[a-z0-9.-]+$/.test(v) },
  { name: 'leader-lease', type: 'string', default: 'castellan-system/castellan-leader', help: 'NAMESPACE/NAME of the leader Lease', check: (v) => typeof v === 'string' && /^[a-z0-9-]+\/[a-z0-9.-]+$/.test(v) },
  { name: 'publish-trust-bundle', type: 'boolean', default: false, help: 'write ConfigMap istio-ca-root-cert into namespaces', check: (v) => typeof v === 'boolean' },
  { name: 'trust-bundle-namespaces', type: 'string', help: 'label selector of namespaces (default: all)', check: (v) => typeof v === 'string' },
  { name: 'admin-socket', type: 'string', help: 'default <data-dir>/admin.sock', check: (v) => typeof v === 'string' && v.startsWith('/') },
];

const landed = (name: string): FlagSpec | undefined => SERVER_FLAGS.find((f) => f.name === name);
const serverSpecs: FlagSpec[] = [...SERVER_FLAGS, ...PENDING_SERVER_FLAGS.filter((p) => !landed(p.name))];

const tmp = mkdtempSync(join(tmpdir(), 'castellan-deploy-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface ServerSetup {
  configText: string;
  args: string[];
  deployment: Obj;
  objs: Obj[];
}

function serverSetup(objs: Obj[]): ServerSetup {
  const deployment = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'castellan')!;
  const pod = deployment.spec.template.spec as Obj;
  const c = (pod.containers as Obj[]).find((x) => x.name === 'castellan')!;
  const args = [...(c.args as string[])];
  expect(args[0]).toBe('server');
  const i = args.indexOf('--config');
  expect(i).toBeGreaterThan(0);
  // --config must point at the ConfigMap's key through its volume mount.
  const path = args[i + 1]!;
  const mount = (c.volumeMounts as Obj[]).find((m) => path.startsWith(m.mountPath + '/'))!;
  const vol = (pod.volumes as Obj[]).find((v) => v.name === mount.name)!;
  const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === vol.configMap?.name)!;
  const key = path.slice(mount.mountPath.length + 1);
  expect(cm?.data?.[key], `ConfigMap key for ${path}`).toBeTypeOf('string');
  return { configText: cm.data[key] as string, args: args.slice(1), deployment, objs };
}

/** What the server makes of its container args and config file. */
function loadServer(s: ServerSetup) {
  const file = join(tmp, `config-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, s.configText);
  const args = s.args.map((a, i) => (s.args[i - 1] === '--config' ? file : a));
  const parsed = parseCommand('server', args, serverSpecs, { env: {} });
  return { values: parsed.values, config: resolveServerConfig(parsed.values) };
}

/** Two foreign trust domains as the chart's federation.trustDomains takes them (every field of an entry). */
const FOREIGN = [
  { trustDomain: 'a.example', bundleEndpointUrl: 'https://ca.a.example:8443/', profile: 'https_spiffe', endpointSpiffeId: 'spiffe://a.example/spire/server', bootstrapBundle: '/etc/castellan/a.example.bundle.json' },
  { trustDomain: 'partner.example', bundleEndpointUrl: 'https://bundle.partner.example/', profile: 'https_web', caFile: '/etc/castellan/partner-ca.pem' },
];

const serverBuilds: [string, () => Obj[]][] = [
  ['kustomize base', () => kustomizeBuild(join(DEPLOY, 'kubernetes/base'))],
  ['kustomize overlays/plugin-ca', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca'))],
  ['kustomize overlays/federation', () => kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/federation'))],
  // the chart is rendered by test/deploy/helm-render (Go)
  ...(skipWithout(peers.go)
    ? []
    : ([
        ['helm defaults', () => renderChart()],
        ['helm with every option', () =>
          renderChart({
            pluginCA: { secretName: 'cacerts' },
            auth: { oidcIssuer: 'https://kubernetes.default.svc.cluster.local' },
            trustBundle: { namespaces: 'mesh=on' },
            federation: { bundleEndpoint: { enabled: true, port: 9443, refreshHint: '1m' }, trustDomains: FOREIGN },
          })],
      ] as [string, () => Obj[]][])),
];

describe('CA server configuration in the manifests', () => {
  it.each(serverBuilds)('%s: the config file and args load with the server\'s own loader', (_n, build) => {
    const s = serverSetup(build());
    const { values, config } = loadServer(s);
    const pod = s.deployment.spec.template.spec as Obj;
    const c = (pod.containers as Obj[])[0]!;
    const mounts = c.volumeMounts as Obj[];
    const volume = (path: string): Obj | undefined => {
      const m = mounts.filter((x) => path === x.mountPath || path.startsWith(x.mountPath + '/')).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
      return m && (pod.volumes as Obj[]).find((v) => v.name === m.name);
    };
    // The data dir is created by the server (0700) inside a writable emptyDir, not the mount itself (0777).
    const dataVol = volume(config.dataDir);
    expect(dataVol?.emptyDir, 'data dir on an emptyDir').toBeDefined();
    expect(mounts.some((m) => m.mountPath === config.dataDir)).toBe(false);
    expect(mounts.find((m) => m.name === dataVol!.name)!.readOnly).not.toBe(true);
    // Ports agree with the container's ports and probes.
    const port = (name: string): number => (c.ports as Obj[]).find((p) => p.name === name)!.containerPort as number;
    expect(config.grpcListen).toBe(`0.0.0.0:${port('grpc')}`);
    expect(config.httpListen).toBe(`0.0.0.0:${port('http-metrics')}`);
    expect(config.plaintext).toBe(false);
    // Signing threads: one less than the CPU limit, at least one (the main thread keeps a core).
    expect(config.signer.workers).toBe(Math.max(1, Number(c.resources.limits.cpu) - 1));
    // Token auth is configured (TokenReview in-cluster, optionally JWKS too).
    expect(config.auth.tokenReview).toBeDefined();
    expect(config.auth.audiences).toEqual(['istio-ca']);
    // The bundle endpoint listens on the container port its Service targets.
    if (config.federation.endpoint) {
      expect(config.federation.endpoint.listen).toBe(`0.0.0.0:${port('https-bundle')}`);
      expect(config.federation.endpoint.profile).toBe('https_spiffe');
    } else expect((c.ports as Obj[]).some((p) => p.name === 'https-bundle')).toBe(false);
    // Plug-in mode reads from a mounted volume.
    if (config.cacertsDir) expect(volume(config.cacertsDir)?.emptyDir).toBeDefined();
    // The pending issue 6 flags: values as they will be defined.
    expect(values.keystore).toBe('kubernetes');
    expect(values['publish-trust-bundle']).toBe(true);
    for (const p of PENDING_SERVER_FLAGS) if (values[p.name] !== undefined && values[p.name] !== p.default) expect(p.check(values[p.name]), p.name).toBe(true);
  });

  it.each(serverBuilds)('%s: the keyring Secret, Lease and server DNS names agree with RBAC and the Service', (_n, build) => {
    const s = serverSetup(build());
    const { values, config } = loadServer(s);
    const ns = s.deployment.metadata.namespace as string;
    const role = s.objs.find((o) => o.kind === 'Role')!;
    const named = (resource: string): string[] => (role.rules as Obj[]).filter((r) => r.resources.includes(resource) && r.resourceNames).flatMap((r) => r.resourceNames as string[]);
    expect(values['ca-secret']).toBe(`${ns}/${named('secrets')[0]}`);
    expect(values['leader-lease']).toBe(`${ns}/${named('leases')[0]}`);
    const svc = s.objs.find((o) => o.kind === 'Service')!;
    expect(config.serverDns).toContain(`${svc.metadata.name}.${ns}.svc`);
    expect(config.serverDns).toContain(`${svc.metadata.name}.${ns}.svc.cluster.local`);
    expect(config.trustDomain).toBe('cluster.local');
  });

  it('a key nobody defined fails the loader (the test has teeth)', () => {
    const s = serverSetup(kustomizeBuild(join(DEPLOY, 'kubernetes/base')));
    expect(() => loadServer({ ...s, configText: s.configText + 'publishTrustBundles: true\n' })).toThrow(/unknown key "publishTrustBundles"/);
    expect(() => loadServer({ ...s, args: [...s.args, '--leader-elect'] })).toThrow(/leader-elect/);
  });

  it('pending flags that have since been defined kept the type the manifests assume', () => {
    for (const p of PENDING_SERVER_FLAGS) {
      const real = landed(p.name);
      if (real) expect({ type: real.type, multiple: real.multiple ?? false }, p.name).toEqual({ type: p.type, multiple: false });
    }
    // No pending name collides with a config key of another flag.
    const keys = new Set(SERVER_FLAGS.map((f) => camel(f.name)));
    for (const p of PENDING_SERVER_FLAGS.filter((x) => !landed(x.name))) expect(keys.has(camel(p.name))).toBe(false);
  });

  it('the config file parses the same as YAML 1.1 and 1.2 (the loader reads 1.2, people read it either way)', () => {
    const { configText } = serverSetup(kustomizeBuild(join(DEPLOY, 'kubernetes/base')));
    expect(parse(configText, { version: '1.1' })).toStrictEqual(parse(configText, { version: '1.2' }));
  });
});

/** Every castellan agent container in deploy/agent, with its pod. */
function agents(): { id: string; pod: Obj; c: Obj }[] {
  const out: { id: string; pod: Obj; c: Obj }[] = [];
  for (const f of yamlFiles(join(DEPLOY, 'agent'))) {
    for (const o of readDocs(f)) {
      const pod = o.spec?.template?.spec as Obj | undefined;
      if (!pod) continue;
      for (const c of [...((pod.initContainers ?? []) as Obj[]), ...((pod.containers ?? []) as Obj[])]) {
        if ((c.args as string[] | undefined)?.[0] === 'agent') out.push({ id: `${o.kind}/${o.metadata.name}`, pod, c });
      }
    }
  }
  return out;
}

describe('agent configuration in deploy/agent', () => {
  it('there are two agents: the sidecar and the per-node one', () => {
    expect(agents().map((a) => a.id).sort()).toEqual(['DaemonSet/node-daemon', 'Deployment/demo']);
  });

  it.each(agents().map((a) => [a.id, a] as const))('%s: args load with the agent\'s own loader and point at what the pod mounts', (_id, { pod, c }) => {
    const parsed = parseCommand('agent', (c.args as string[]).slice(1), AGENT_FLAGS, { env: {} });
    const cfg = resolveAgentConfig(parsed.values);
    const mountOf = (path: string): Obj => {
      const m = (c.volumeMounts as Obj[]).find((x) => path.startsWith(x.mountPath + '/'));
      expect(m, `a mount for ${path}`).toBeDefined();
      return (pod.volumes as Obj[]).find((v) => v.name === m!.name)!;
    };
    // Token: projected, audience istio-ca, 12 h, at --token-file.
    const tokenVol = mountOf(cfg.tokenFile);
    const src = (tokenVol.projected.sources as Obj[]).find((x) => x.serviceAccountToken)!.serviceAccountToken as Obj;
    expect(src).toMatchObject({ audience: 'istio-ca', expirationSeconds: 43200 });
    expect(cfg.tokenFile.endsWith('/' + src.path)).toBe(true);
    // Root: the istio-ca-root-cert ConfigMap, key root-cert.pem.
    const root = cfg.caRootCertFile ?? '';
    expect(mountOf(root).configMap?.name).toBe('istio-ca-root-cert');
    expect(root.endsWith('/root-cert.pem')).toBe(true);
    // Socket: in a subdirectory of an emptyDir (the agent creates the directory it checks).
    expect(mountOf(cfg.sdsSocket).emptyDir).toBeDefined();
    expect((c.volumeMounts as Obj[]).some((m) => m.mountPath === cfg.sdsSocket.slice(0, cfg.sdsSocket.lastIndexOf('/')))).toBe(false);
    // The socket group is Envoy's group; Envoy mounts the same emptyDir at the same path.
    const envoy = (pod.containers as Obj[]).find((x) => x.name === 'envoy')!;
    expect(String(envoy.securityContext.runAsGroup)).toBe(cfg.sdsSocketGroup);
    const sdsMount = (c.volumeMounts as Obj[]).find((m) => cfg.sdsSocket.startsWith(m.mountPath + '/'))!;
    expect((envoy.volumeMounts as Obj[]).find((m) => m.name === sdsMount.name)?.mountPath).toBe(sdsMount.mountPath);
    // The agent's http port is what the probes use.
    expect(cfg.httpListen).toBe(`0.0.0.0:${(c.ports as Obj[]).find((p) => p.name === c.startupProbe.httpGet.port)!.containerPort}`);
    expect(cfg.trustDomain).toBe('cluster.local');
  });

  it.each(agents().map((a) => [a.id, a] as const))('%s: --ca-address is the CA Service, under a name in its certificate', (_id, { c }) => {
    const cfg = resolveAgentConfig(parseCommand('agent', (c.args as string[]).slice(1), AGENT_FLAGS, { env: {} }).values);
    const s = serverSetup(kustomizeBuild(join(DEPLOY, 'kubernetes/base')));
    const { config } = loadServer(s);
    const [host, port] = cfg.caAddress.split(':');
    expect(config.serverDns).toContain(host);
    const svc = s.objs.find((o) => o.kind === 'Service')!;
    expect(`${svc.metadata.name}.${svc.metadata.namespace}.svc`).toBe(host);
    expect((svc.spec.ports as Obj[]).find((p) => p.name === 'grpc')!.port).toBe(Number(port));
  });
});
