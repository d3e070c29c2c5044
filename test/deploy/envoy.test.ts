/**
 * deploy/envoy/bootstrap-sds.yaml: every field is a field of Envoy's v3 API
 * (checked against Envoy's own .proto files, shipped in @grpc/grpc-js-xds's
 * deps and loaded with protobufjs: names, nesting, oneofs, enums, Any types),
 * and it is wired to the agent: cluster sds-grpc speaks HTTP/2 over the Unix
 * socket the agents in deploy/agent serve, and certificates come only from
 * the SDS resources the agent has (default, ROOTCA). Envoy's
 * protoc-gen-validate rules (required fields, ranges) are not checked here:
 * only a real Envoy does that (`envoy --mode validate -c ...`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { RESOURCE_NAMES } from '../../src/sds/resources.ts';
import { DEPLOY, readDocs, ROOT, yamlFiles, type Obj } from './support.ts';

const BOOTSTRAP = join(DEPLOY, 'envoy/bootstrap-sds.yaml');
const DEPS = join(ROOT, 'node_modules/@grpc/grpc-js-xds/deps');
const PROTO_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(DEPS, d)).concat(join(ROOT, 'node_modules/protobufjs'));
// protobufjs has these well-known types built in.
const BUILT_IN = /^google\/protobuf\/(any|duration|empty|struct|timestamp|wrappers|field_mask)\.proto$/;

let root: protobuf.Root;
beforeAll(() => {
  root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (BUILT_IN.test(target)) return target;
    for (const d of PROTO_DIRS) if (existsSync(join(d, target))) return join(d, target);
    return target;
  };
  root.loadSync(
    [
      'envoy/config/bootstrap/v3/bootstrap.proto',
      'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
      'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
      'envoy/extensions/transport_sockets/tls/v3/tls.proto',
    ],
    { keepCase: true },
  );
  root.resolveAll();
});

const INTS = new Set(['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64']);

/** Problems of `v` as the proto3 JSON (YAML) form of `type`. */
function protoProblems(v: unknown, type: protobuf.Type, path: string, out: string[]): void {
  const name = type.fullName.slice(1);
  if (name === 'google.protobuf.Duration') {
    if (typeof v !== 'string' || !/^-?\d+(\.\d{1,9})?s$/.test(v)) out.push(`${path}: a Duration is a string like "1s"`);
    return;
  }
  if (name === 'google.protobuf.Struct' || name === 'google.protobuf.Value' || name === 'google.protobuf.ListValue') return;
  if (/^google\.protobuf\.(U?Int(32|64)|Double|Float)Value$/.test(name)) {
    if (typeof v !== 'number') out.push(`${path}: expected a number`);
    return;
  }
  if (name === 'google.protobuf.BoolValue') {
    if (typeof v !== 'boolean') out.push(`${path}: expected true or false`);
    return;
  }
  if (name === 'google.protobuf.StringValue') {
    if (typeof v !== 'string') out.push(`${path}: expected a string`);
    return;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    out.push(`${path}: expected a ${name} message`);
    return;
  }
  const fields = v as Obj;
  if (name === 'google.protobuf.Any') {
    const url = fields['@type'];
    const m = typeof url === 'string' ? /^type\.googleapis\.com\/(.+)$/.exec(url) : null;
    const t = m ? (root.lookup(m[1]!) as protobuf.Type | null) : null;
    if (!t || !(t instanceof protobuf.Type)) {
      out.push(`${path}: unknown "@type" ${String(url)}`);
      return;
    }
    const { '@type': _drop, ...rest } = fields;
    protoProblems(rest, t, `${path}<${m![1]}>`, out);
    return;
  }
  const byJson = new Map(Object.values(type.fields).map((f) => [f.options?.json_name ?? camelOf(f.name), f]));
  const setOneofs = new Map<string, string>();
  for (const [k, x] of Object.entries(fields)) {
    const f = type.fields[k] ?? byJson.get(k);
    if (!f) {
      out.push(`${path}.${k}: no such field in ${name}`);
      continue;
    }
    if (f.partOf) {
      const other = setOneofs.get(f.partOf.name);
      if (other) out.push(`${path}: ${other} and ${k} are both set, but are one of ${f.partOf.name}`);
      setOneofs.set(f.partOf.name, k);
    }
    const where = `${path}.${k}`;
    if (f instanceof protobuf.MapField) {
      if (typeof x !== 'object' || x === null || Array.isArray(x)) out.push(`${where}: expected a map`);
      else for (const [mk, mv] of Object.entries(x as Obj)) valueProblems(mv, f, `${where}.${mk}`, out);
    } else if (f.repeated) {
      if (!Array.isArray(x)) out.push(`${where}: expected a list`);
      else x.forEach((e, i) => valueProblems(e, f, `${where}[${i}]`, out));
    } else valueProblems(x, f, where, out);
  }
}

function camelOf(s: string): string {
  return s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function valueProblems(v: unknown, f: protobuf.Field, path: string, out: string[]): void {
  const t = f.resolvedType;
  if (t instanceof protobuf.Type) return protoProblems(v, t, path, out);
  if (t instanceof protobuf.Enum) {
    if (!(typeof v === 'string' && v in t.values) && typeof v !== 'number') out.push(`${path}: ${String(v)} is not one of ${Object.keys(t.values).join(', ')}`);
    return;
  }
  if (f.type === 'bool') {
    if (typeof v !== 'boolean') out.push(`${path}: expected true or false`);
  } else if (f.type === 'string' || f.type === 'bytes') {
    if (typeof v !== 'string') out.push(`${path}: expected a string`);
  } else if (INTS.has(f.type)) {
    if (!(typeof v === 'number' && Number.isInteger(v)) && !(typeof v === 'string' && /^-?\d+$/.test(v))) out.push(`${path}: expected an integer`);
  } else if (f.type === 'double' || f.type === 'float') {
    if (typeof v !== 'number') out.push(`${path}: expected a number`);
  } else out.push(`${path}: unhandled field type ${f.type}`);
}

function bootstrap(): Obj {
  return parse(readFileSync(BOOTSTRAP, 'utf8')) as Obj;
}

function problems(doc: Obj): string[] {
  const out: string[] = [];
  protoProblems(doc, root.lookupType('envoy.config.bootstrap.v3.Bootstrap'), 'bootstrap', out);
  return out;
}

/** Every object (recursively) having `key`. */
function withKey(v: unknown, key: string, out: Obj[] = []): Obj[] {
  if (Array.isArray(v)) v.forEach((x) => withKey(x, key, out));
  else if (v && typeof v === 'object') {
    if (key in v) out.push(v as Obj);
    Object.values(v).forEach((x) => withKey(x, key, out));
  }
  return out;
}

describe('Envoy bootstrap (deploy/envoy/bootstrap-sds.yaml)', () => {
  it('is made only of fields of the Envoy v3 Bootstrap API', () => {
    expect(problems(bootstrap())).toEqual([]);
  });

  it('the check has teeth: a misspelled field, a bad enum, a bad @type and a doubled oneof are refused', () => {
    const typo = bootstrap();
    typo.static_resources.clusters[0].conect_timeout = '1s';
    const badEnum = bootstrap();
    badEnum.static_resources.clusters[0].type = 'STATICK';
    const badAny = bootstrap();
    badAny.static_resources.listeners[0].filter_chains[0].filters[0].typed_config['@type'] = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxi';
    const oneof = bootstrap();
    oneof.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address = { address: '127.0.0.1', port_value: 1 };
    expect(problems(typo).join()).toMatch(/conect_timeout: no such field/);
    expect(problems(badEnum).join()).toMatch(/STATICK is not one of/);
    expect(problems(badAny).join()).toMatch(/unknown "@type"/);
    expect(problems(oneof).join()).toMatch(/both set/);
  });

  it('cluster sds-grpc: HTTP/2 to the Unix socket every agent example serves', () => {
    const sds = (bootstrap().static_resources.clusters as Obj[]).find((c) => c.name === 'sds-grpc')!;
    expect(sds.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config).toEqual({ http2_protocol_options: {} });
    const pipes = withKey(sds, 'pipe').map((x) => x.pipe.path as string);
    expect(pipes).toHaveLength(1);
    const sockets = yamlFiles(join(DEPLOY, 'agent'))
      .flatMap((f) => readDocs(f))
      .flatMap((o) => [...((o.spec?.template?.spec?.initContainers ?? []) as Obj[]), ...((o.spec?.template?.spec?.containers ?? []) as Obj[])])
      .flatMap((c) => ((c.args ?? []) as string[]).filter((a) => a.startsWith('--sds-socket=')).map((a) => a.slice('--sds-socket='.length)));
    expect(sockets.length).toBe(2);
    for (const s of sockets) expect(s).toBe(pipes[0]);
  });

  it('takes certificates only from SDS on sds-grpc, as default and ROOTCA', () => {
    const doc = bootstrap();
    const sources = withKey(doc, 'sds_config');
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      expect(s.sds_config.api_config_source).toMatchObject({ api_type: 'GRPC', transport_api_version: 'V3' });
      expect((s.sds_config.api_config_source.grpc_services as Obj[]).map((g) => g.envoy_grpc.cluster_name)).toEqual(['sds-grpc']);
      expect(RESOURCE_NAMES).toContain(s.name);
    }
    expect(new Set(sources.map((s) => s.name))).toEqual(new Set(RESOURCE_NAMES));
    // No certificate or key given inline or from files.
    expect(withKey(doc, 'tls_certificates')).toEqual([]);
    expect(withKey(doc, 'trusted_ca')).toEqual([]);
    // Both TLS contexts use both secrets.
    for (const ctx of withKey(doc, 'common_tls_context').map((x) => x.common_tls_context as Obj)) {
      expect(ctx.tls_certificate_sds_secret_configs.map((s: Obj) => s.name)).toEqual(['default']);
      expect(ctx.combined_validation_context.validation_context_sds_secret_config.name).toBe('ROOTCA');
    }
    // Inbound insists on a client certificate.
    const inbound = (doc.static_resources.listeners as Obj[]).find((l) => l.name === 'inbound_mtls')!;
    expect(inbound.filter_chains[0].transport_socket.typed_config.require_client_certificate).toBe(true);
  });

  it('every cluster a listener names exists, and admin listens on loopback only', () => {
    const doc = bootstrap();
    const clusters = new Set((doc.static_resources.clusters as Obj[]).map((c) => c.name as string));
    for (const l of withKey(doc.static_resources.listeners, 'stat_prefix')) expect(clusters.has(l.cluster as string), l.cluster as string).toBe(true);
    expect(doc.admin.address.socket_address.address).toBe('127.0.0.1');
  });

  it('the agent examples embed this very file', () => {
    const [cm] = readDocs(join(DEPLOY, 'agent/envoy-bootstrap.yaml'));
    expect(cm!.data['bootstrap.yaml']).toBe(readFileSync(BOOTSTRAP, 'utf8'));
  });
});
