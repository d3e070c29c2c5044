/** Istio's validation rules and warnings, with the field path of each issue. */
import { describe, expect, it } from 'vitest';
import { issuesOf, policy, type Doc } from './helpers.ts';

const rule = (r: Doc): Doc => policy('p', { action: 'ALLOW', rules: [r] });
const src = (s: Doc): Doc => rule({ from: [{ source: s }] });
const op = (o: Doc): Doc => rule({ to: [{ operation: o }] });
const cond = (c: Doc, action = 'ALLOW'): Doc => policy('p', { action, ...(action === 'CUSTOM' ? { provider: { name: 'ext' } } : {}), rules: [{ when: [c] }] });

const INVALID: [string, Doc, string, RegExp][] = [
  ['fail/deny-without-rules', policy('p', { action: 'DENY' }), 'spec.rules', /DENY policy without rules/],
  ['fail/deny-with-empty-rules', policy('p', { action: 'DENY', rules: [] }), 'spec.rules', /DENY policy without rules/],
  ['fail/custom-without-rules', policy('p', { action: 'CUSTOM', provider: { name: 'ext' } }), 'spec.rules', /CUSTOM policy without rules/],
  ['fail/custom-without-provider', policy('p', { action: 'CUSTOM', rules: [{}] }), 'spec.provider.name', /provider.name must be set/],
  ['fail/provider-with-allow', policy('p', { provider: { name: 'ext' }, rules: [{}] }), 'spec.provider', /only with CUSTOM/],
  ['fail/provider-with-deny', policy('p', { action: 'DENY', provider: { name: 'ext' }, rules: [{}] }), 'spec.provider', /only with CUSTOM/],
  ['fail/unknown-action', policy('p', { action: 'REJECT' }), 'spec.action', /must be one of ALLOW, DENY, AUDIT, CUSTOM/],
  ['fail/lowercase-action', policy('p', { action: 'deny', rules: [{}] }), 'spec.action', /must be one of/],
  ['fail/empty-from', rule({ from: [] }), 'spec.rules[0].from', /"from" must not be empty/],
  ['fail/empty-to', rule({ to: [] }), 'spec.rules[0].to', /"to" must not be empty/],
  ['fail/empty-source', src({}), 'spec.rules[0].from[0].source', /source must not be empty/],
  ['fail/source-with-only-empty-lists', src({ principals: [] }), 'spec.rules[0].from[0].source', /source must not be empty/],
  ['fail/missing-source', rule({ from: [{}] }), 'spec.rules[0].from[0].source', /"source" must be set/],
  ['fail/empty-operation', op({}), 'spec.rules[0].to[0].operation', /operation must not be empty/],
  ['fail/missing-operation', rule({ to: [{}] }), 'spec.rules[0].to[0].operation', /"operation" must be set/],
  ['fail/null-rule', policy('p', { rules: [null] }), 'spec.rules[0]', /must not be null/],
  ['fail/unknown-when-key', cond({ key: 'request.method', values: ['GET'] }), 'spec.rules[0].when[0].key', /unknown key "request.method"/],
  ['fail/destination-namespace-key', cond({ key: 'destination.namespace', values: ['x'] }), 'spec.rules[0].when[0].key', /metadata.namespace/],
  ['fail/destination-labels-key', cond({ key: 'destination.labels[app]', values: ['x'] }), 'spec.rules[0].when[0].key', /workload selector/],
  ['fail/destination-user-key', cond({ key: 'destination.user', values: ['x'] }), 'spec.rules[0].when[0].key', /v1alpha1/],
  ['fail/when-without-values', cond({ key: 'source.ip' }), 'spec.rules[0].when[0]', /at least one of "values" or "notValues"/],
  ['fail/when-with-empty-lists', cond({ key: 'source.ip', values: [], notValues: [] }), 'spec.rules[0].when[0]', /at least one of/],
  ['fail/when-without-key', cond({ values: ['x'] }), 'spec.rules[0].when[0].key', /must not be empty/],
  ['fail/header-key-without-name', cond({ key: 'request.headers[]', values: ['x'] }), 'spec.rules[0].when[0].key', /request.headers\[<header-name>\]/],
  ['fail/header-key-without-brackets', cond({ key: 'request.headers', values: ['x'] }), 'spec.rules[0].when[0].key', /bad key/],
  ['fail/claims-key-without-brackets', cond({ key: 'request.auth.claims', values: ['x'] }), 'spec.rules[0].when[0].key', /bad key/],
  ['fail/bad-source-ip-condition', cond({ key: 'source.ip', values: ['10.0.0.256'] }), 'spec.rules[0].when[0].values[0]', /bad IP address/],
  ['fail/bad-cidr-condition', cond({ key: 'destination.ip', notValues: ['10.0.0.0/33'] }), 'spec.rules[0].when[0].notValues[0]', /bad CIDR/],
  ['fail/bad-port-condition', cond({ key: 'destination.port', values: ['http'] }), 'spec.rules[0].when[0].values[0]', /bad port/],
  ['fail/port-out-of-range', op({ ports: ['65536'] }), 'spec.rules[0].to[0].operation.ports[0]', /bad port/],
  ['fail/port-as-number', op({ ports: [8080] }), 'spec.rules[0].to[0].operation.ports[0]', /must be a string.*quote it/],
  ['fail/bad-ip-block', src({ ipBlocks: ['1.2.3'] }), 'spec.rules[0].from[0].source.ipBlocks[0]', /bad IP address/],
  ['fail/ip-leading-zero', src({ remoteIpBlocks: ['010.0.0.1'] }), 'spec.rules[0].from[0].source.remoteIpBlocks[0]', /bad IP address/],
  ['fail/ip-with-zone', src({ notIpBlocks: ['fe80::1%eth0'] }), 'spec.rules[0].from[0].source.notIpBlocks[0]', /bad IP address/],
  ['fail/empty-value', src({ principals: [''] }), 'spec.rules[0].from[0].source.principals[0]', /empty value/],
  ['fail/empty-method', op({ methods: ['GET', ''] }), 'spec.rules[0].to[0].operation.methods[1]', /empty value/],
  ['fail/sa-with-principals', src({ serviceAccounts: ['a/b'], principals: ['x'] }), 'spec.rules[0].from[0].source', /cannot be set together with principals/],
  ['fail/sa-with-namespaces', src({ notServiceAccounts: ['a/b'], namespaces: ['x'] }), 'spec.rules[0].from[0].source', /cannot be set together/],
  ['fail/sa-wildcard', src({ serviceAccounts: ['bar/*'] }), 'spec.rules[0].from[0].source.serviceAccounts[0]', /wildcards are not allowed/],
  ['fail/sa-three-segments', src({ serviceAccounts: ['a/b/c'] }), 'spec.rules[0].from[0].source.serviceAccounts[0]', /expected "<serviceAccount>" or "<namespace>\/<serviceAccount>"/],
  ['fail/sa-empty-namespace', src({ serviceAccounts: ['/sleep'] }), 'spec.rules[0].from[0].source.serviceAccounts[0]', /expected/],
  ['fail/sa-too-many', src({ serviceAccounts: Array.from({ length: 17 }, (_, i) => `ns/sa${i}`) }), 'spec.rules[0].from[0].source.serviceAccounts', /more than 16/],
  ['fail/trust-domain-two-wildcards', src({ trustDomains: ['*a*'] }), 'spec.rules[0].from[0].source.trustDomains[0]', /at most one wildcard/],
  ['fail/trust-domain-middle-wildcard', src({ trustDomains: ['a*b'] }), 'spec.rules[0].from[0].source.trustDomains[0]', /start or the end/],
  ['fail/trust-domain-slash', src({ notTrustDomains: ['td/x'] }), 'spec.rules[0].from[0].source.notTrustDomains[0]', /must not contain "\/"/],
  ['fail/unknown-source-field', src({ principal: ['x'] }), 'spec.rules[0].from[0].source.principal', /unknown field "principal" \(did you mean "principals"\?\)/],
  ['fail/unknown-operation-field', op({ path: ['/x'] }), 'spec.rules[0].to[0].operation.path', /did you mean "paths"/],
  ['fail/unknown-spec-field', policy('p', { rule: [] }), 'spec.rule', /did you mean "rules"/],
  ['fail/unknown-rule-field', rule({ form: [] }), 'spec.rules[0].form', /unknown field "form"/],
  ['fail/values-not-a-list', src({ principals: 'cluster.local/ns/a/sa/b' }), 'spec.rules[0].from[0].source.principals', /must be a list of strings/],
  ['fail/rules-not-a-list', policy('p', { rules: {} }), 'spec.rules', /must be a list/],
  ['fail/selector-wildcard', policy('p', { selector: { matchLabels: { app: 'web*' } } }), 'spec.selector.matchLabels.app', /wildcards are not supported/],
  ['fail/selector-non-string', policy('p', { selector: { matchLabels: { replicas: 3 } } }), 'spec.selector.matchLabels.replicas', /must be strings/],
  ['fail/selector-and-target-ref', policy('p', { selector: { matchLabels: { a: 'b' } }, targetRef: { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'g' } }), 'spec', /only one of selector, targetRef or targetRefs/],
  ['fail/target-ref-kind', policy('p', { targetRef: { kind: 'Deployment', name: 'x' } }), 'spec.targetRef', /must refer to a Service/],
  ['fail/target-ref-namespace', policy('p', { targetRef: { kind: 'Service', name: 'x', namespace: 'other' } }), 'spec.targetRef.namespace', /cross-namespace/],
  ['fail/custom-with-principals', policy('p', { action: 'CUSTOM', provider: { name: 'ext' }, rules: [{ from: [{ source: { principals: ['x'] } }] }] }), 'spec.rules[0].from[0].source.principals', /not supported with the CUSTOM action/],
  ['fail/custom-with-namespace-condition', cond({ key: 'source.namespace', values: ['x'] }, 'CUSTOM'), 'spec.rules[0].when[0].key', /not supported with the CUSTOM action/],
  ['fail/custom-with-jwt-condition', cond({ key: 'request.auth.claims[iss]', values: ['x'] }, 'CUSTOM'), 'spec.rules[0].when[0].key', /not supported with the CUSTOM action/],
  ['fail/path-template-after-any', op({ paths: ['/a/{**}/{*}'] }), 'spec.rules[0].to[0].operation.paths[0]', /\{\*\*\} must be the last operator/],
  ['fail/path-template-partial-segment', op({ paths: ['/a/{*}.txt'] }), 'spec.rules[0].to[0].operation.paths[0]', /outside a \{\*\} or \{\*\*\} operator/],
  ['fail/path-template-with-star', op({ paths: ['/a*/{*}'] }), 'spec.rules[0].to[0].operation.paths[0]', /may not contain/],
  ['fail/path-brace', op({ notPaths: ['/a/{id}'] }), 'spec.rules[0].to[0].operation.notPaths[0]', /outside a/],
  ['fail/pattern-too-long', op({ paths: ['/' + 'a'.repeat(1100)] }), 'spec.rules[0].to[0].operation.paths[0]', /at most 1024/],
  ['fail/api-version', policy('p', {}, { apiVersion: 'security.istio.io/v1alpha1' }), 'apiVersion', /unsupported apiVersion/],
  ['fail/no-name', { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { namespace: 'foo' }, spec: {} }, 'metadata.name', /metadata.name is required/],
  ['fail/bad-namespace', { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'x', namespace: 'Foo_Bar' }, spec: {} }, 'metadata.namespace', /DNS-1123/],
  ['fail/spec-not-a-mapping', { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'x' }, spec: [] }, 'spec', /must be a mapping/],
  ['fail/dry-run-annotation', policy('p', {}, { annotations: { 'istio.io/dry-run': 'yes' } }), 'metadata.annotations.istio.io/dry-run', /"true" or "false"/],
];

describe('validation errors (Istio rules)', () => {
  it.each(INVALID)('%s', (_name, doc, path, message) => {
    const errors = issuesOf(doc).filter((i) => i.severity === 'error');
    expect(errors.length, JSON.stringify(issuesOf(doc))).toBeGreaterThan(0);
    expect(errors.some((e) => e.path === path && message.test(e.message)), JSON.stringify(errors, null, 1)).toBe(true);
  });

  it.each([
    ['ok/spec-empty', policy('p', {})],
    ['ok/allow-empty-rule', policy('p', { rules: [{}] })],
    ['ok/deny-empty-rule', policy('p', { action: 'DENY', rules: [{}] })],
    ['ok/audit-no-rules', policy('p', { action: 'AUDIT' })],
    ['ok/custom', policy('p', { action: 'CUSTOM', provider: { name: 'ext' }, rules: [{ to: [{ operation: { paths: ['/x'] } }] }] })],
    ['ok/every-source-field', src({ principals: ['a'], notPrincipals: ['b'], requestPrincipals: ['i/s'], notRequestPrincipals: ['*'], namespaces: ['n'], notNamespaces: ['m'], ipBlocks: ['10.0.0.0/8', '::1'], notIpBlocks: ['1.2.3.4'], remoteIpBlocks: ['2001:db8::/32'], notRemoteIpBlocks: ['0.0.0.0/0'], trustDomains: ['td', '*.td', 'td.*', '*'], notTrustDomains: ['x'] })],
    ['ok/service-accounts', src({ serviceAccounts: ['sleep', 'bar/sleep'], notServiceAccounts: ['x/y'], ipBlocks: ['10.0.0.1'] })],
    ['ok/every-operation-field', op({ hosts: ['a'], notHosts: ['b'], ports: ['0', '65535'], notPorts: ['1'], methods: ['GET'], notMethods: ['POST'], paths: ['/a', '/b/{*}', '/c/{**}'], notPaths: ['/d'] })],
    ['ok/every-when-key', policy('p', { rules: [{ when: [
      { key: 'request.headers[x-a]', values: ['v'] }, { key: 'source.ip', values: ['10.0.0.0/8'] }, { key: 'remote.ip', notValues: ['1.1.1.1'] },
      { key: 'source.namespace', values: ['n'] }, { key: 'source.principal', values: ['p'] }, { key: 'source.serviceAccount', values: ['n/s'] },
      { key: 'source.trustDomain', values: ['td'] }, { key: 'request.auth.principal', values: ['i/s'] }, { key: 'request.auth.audiences', values: ['a'] },
      { key: 'request.auth.presenter', values: ['p'] }, { key: 'request.auth.claims[groups]', values: ['g'] }, { key: 'request.auth.claims[a][b]', values: ['c'] },
      { key: 'destination.ip', values: ['10.0.0.1'] }, { key: 'destination.port', values: ['80'] }, { key: 'connection.sni', values: ['*.x'] },
    ] }] })],
    ['ok/target-ref', policy('p', { targetRef: { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'gw' }, rules: [{}] })],
    ['ok/v1beta1', policy('p', {}, { apiVersion: 'security.istio.io/v1beta1' })],
    ['ok/dry-run', policy('p', { action: 'DENY', rules: [{}] }, { annotations: { 'istio.io/dry-run': 'true' } })],
  ])('%s', (_name, doc) => {
    const errors = issuesOf(doc).filter((i) => i.severity === 'error');
    expect(errors).toEqual([]);
  });
});

describe('validation warnings (validate)', () => {
  const warnings = (doc: Doc): { path: string; message: string }[] => issuesOf(doc).filter((i) => i.severity === 'warning');

  it('DENY with only HTTP fields and no ports denies all TCP (Istio warning)', () => {
    const w = warnings(policy('p', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }] }] }));
    expect(w.some((x) => x.path === 'spec.rules[0]' && /ALL TCP traffic/.test(x.message))).toBe(true);
  });
  it('DENY with HTTP fields but ports does not warn about TCP', () => {
    const w = warnings(policy('p', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'], ports: ['8080'] } }] }] }));
    expect(w.filter((x) => /TCP/.test(x.message))).toEqual([]);
  });
  it('DENY with a principal and HTTP fields without ports widens on TCP', () => {
    const w = warnings(policy('p', { action: 'DENY', rules: [{ from: [{ source: { principals: ['a'] } }], to: [{ operation: { paths: ['/x'] } }] }] }));
    expect(w.some((x) => /every TCP connection its other fields match/.test(x.message))).toBe(true);
  });
  it('DENY with only an HTTP when condition denies all TCP', () => {
    const w = warnings(policy('p', { action: 'DENY', rules: [{ when: [{ key: 'request.headers[x]', values: ['y'] }] }] }));
    expect(w.some((x) => /ALL TCP traffic/.test(x.message))).toBe(true);
  });
  it('ALLOW with notPaths and DENY with paths are fragile under normalisation', () => {
    expect(warnings(policy('p', { rules: [{ to: [{ operation: { notPaths: ['/admin'] } }] }] })).some((x) => x.path === 'spec.rules[0].to[0].operation.notPaths' && /fragile/.test(x.message))).toBe(true);
    expect(warnings(policy('p', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'], ports: ['80'] } }] }] })).some((x) => x.path === 'spec.rules[0].to[0].operation.paths' && /fragile/.test(x.message))).toBe(true);
    expect(warnings(policy('p', { rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] }))).toEqual([]);
  });
  it('principals written with spiffe:// never match', () => {
    expect(warnings(src({ principals: ['spiffe://cluster.local/ns/a/sa/b'] })).some((x) => /never matches/.test(x.message))).toBe(true);
  });
  it('a star inside a value is literal', () => {
    expect(warnings(op({ hosts: ['a.*.example.com'] })).some((x) => /literal/.test(x.message))).toBe(true);
  });
  it('requestPrincipals that Istio splits inside the scheme', () => {
    expect(warnings(src({ requestPrincipals: ['https://accounts.example*'] })).some((x) => /split at its last/.test(x.message))).toBe(true);
    expect(warnings(src({ requestPrincipals: ['https://accounts.example/*'] }))).toEqual([]);
  });
  it('experimental keys cannot be evaluated', () => {
    expect(warnings(cond({ key: 'experimental.envoy.filters.a.b[c]', values: ['x'] })).some((x) => /fail safe/.test(x.message))).toBe(true);
  });
  it('a selector without labels', () => {
    expect(warnings(policy('p', { selector: { matchLabels: {} } })).some((x) => /without labels/.test(x.message))).toBe(true);
  });
  it('notes: default namespace, allow-nothing, targetRef', () => {
    const notes = issuesOf({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'x' }, spec: {} }).filter((i) => i.severity === 'note');
    expect(notes.map((n) => n.message).join('\n')).toMatch(/assuming "default"[\s\S]*allows nothing/);
  });
});
