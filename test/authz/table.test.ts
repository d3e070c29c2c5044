/**
 * The semantics table (security.md A1–A5, protocols.md §6). Each case is
 * written from Istio's documented behaviour (the AuthorizationPolicy
 * reference, the conditions page, the normalisation table of the security
 * best practices) and, where the docs are silent, from what istiod's
 * generator emits for Envoy's RBAC filter; comments say which.
 */
import { describe, expect, it } from 'vitest';
import type { EngineOptions } from '../../src/authz/engine.ts';
import type { DecisionReason } from '../../src/authz/model.ts';
import type { PathNormalization } from '../../src/authz/path.ts';
import { allow, audit, custom, deny, engineOf, from, policy, req, TCP, to, when, type Doc } from './helpers.ts';

interface Case {
  readonly name: string;
  readonly policies: readonly Doc[];
  readonly request?: Doc;
  readonly expect: 'ALLOW' | 'DENY';
  /** The deciding policy (null: a default decision); undefined: not checked. */
  readonly by?: string | null;
  readonly rule?: number;
  readonly reason?: DecisionReason;
  readonly opts?: EngineOptions;
  readonly custom?: 'allow' | 'deny';
  readonly audit?: readonly string[];
  readonly provider?: string | null;
}

const SLEEP = 'cluster.local/ns/bar/sa/sleep';
const JWT = { request: { auth: { principal: 'https://issuer.example/alice', audiences: ['web', 'httpbin'], presenter: 'web', claims: { groups: ['dev', 'admin'], realm: { role: 'ops' }, level: 1 } } } };
const PLAINTEXT = { source: { principal: null } };
const ANY_RULE = [{}];
const NOPE = [from({ namespaces: ['nowhere'] })];
const dryRun = (d: Doc): Doc => ({ ...d, metadata: { ...(d.metadata as Doc), annotations: { 'istio.io/dry-run': 'true' } } });

const CASES: Case[] = [
  // --- decision order (A1) ---------------------------------------------------
  { name: 'order/no-policy-allows', policies: [], expect: 'ALLOW', by: null, reason: 'no-allow-policies' },
  { name: 'order/matching-allow-allows', policies: [allow('a', [from({ principals: [SLEEP] })])], expect: 'ALLOW', by: 'foo/a', rule: 0, reason: 'allow-matched' },
  { name: 'order/allow-present-none-match-denies', policies: [allow('a', NOPE)], expect: 'DENY', by: null, reason: 'no-allow-matched' },
  { name: 'order/deny-wins-over-allow', policies: [allow('a', ANY_RULE), deny('d', ANY_RULE)], expect: 'DENY', by: 'foo/d', reason: 'deny-matched' },
  { name: 'order/unmatched-deny-then-allow', policies: [deny('d', [to({ methods: ['POST'] })]), allow('a', ANY_RULE)], expect: 'ALLOW', by: 'foo/a' },
  { name: 'order/unmatched-deny-only-allows', policies: [deny('d', [to({ methods: ['POST'] })])], expect: 'ALLOW', by: null, reason: 'no-allow-policies' },
  { name: 'order/audit-alone-is-neutral', policies: [audit('au', ANY_RULE)], expect: 'ALLOW', by: null, audit: ['foo/au'] },
  { name: 'order/audit-does-not-allow', policies: [audit('au', ANY_RULE), allow('a', NOPE)], expect: 'DENY', by: null, audit: ['foo/au'] },
  { name: 'order/audit-does-not-deny', policies: [audit('au', ANY_RULE), allow('a', ANY_RULE)], expect: 'ALLOW', by: 'foo/a', audit: ['foo/au'] },
  { name: 'order/custom-denies-first', policies: [custom('c', 'ext', ANY_RULE), allow('a', ANY_RULE)], custom: 'deny', expect: 'DENY', by: 'foo/c', reason: 'custom-denied', provider: 'ext' },
  { name: 'order/custom-allows-then-deny-applies', policies: [custom('c', 'ext', ANY_RULE), deny('d', ANY_RULE)], custom: 'allow', expect: 'DENY', by: 'foo/d', provider: 'ext' },
  { name: 'order/custom-allows-then-allow-applies', policies: [custom('c', 'ext', ANY_RULE), allow('a', ANY_RULE)], custom: 'allow', expect: 'ALLOW', by: 'foo/a', provider: 'ext' },
  { name: 'order/custom-allows-no-allow-policy', policies: [custom('c', 'ext', ANY_RULE)], custom: 'allow', expect: 'ALLOW', by: null, provider: 'ext' },
  { name: 'order/custom-not-matching-is-not-asked', policies: [custom('c', 'ext', [to({ paths: ['/admin'] })])], custom: 'deny', expect: 'ALLOW', by: null, provider: null },
  { name: 'order/custom-allows-then-no-allow-match', policies: [custom('c', 'ext', ANY_RULE), allow('a', NOPE)], custom: 'allow', expect: 'DENY', by: null, reason: 'no-allow-matched' },
  { name: 'order/several-providers-deny-matching-requests', policies: [custom('c1', 'ext1', ANY_RULE), custom('c2', 'ext2', [to({ paths: ['/x'] })])], custom: 'allow', expect: 'DENY', by: 'foo/c1', reason: 'custom-multiple-providers' },
  { name: 'order/first-deny-by-namespace-then-name', policies: [deny('zeta', ANY_RULE), deny('alpha', ANY_RULE)], expect: 'DENY', by: 'foo/alpha' },
  { name: 'order/first-allow-by-name', policies: [allow('zz', ANY_RULE), allow('bb', ANY_RULE)], expect: 'ALLOW', by: 'foo/bb' },
  { name: 'order/deny-in-root-sorts-by-namespace', policies: [deny('istio-system/a', ANY_RULE), deny('foo/a', ANY_RULE)], expect: 'DENY', by: 'foo/a' },
  { name: 'order/dry-run-deny-not-enforced', policies: [dryRun(deny('d', ANY_RULE))], expect: 'ALLOW', by: null },
  { name: 'order/dry-run-allow-does-not-enable-deny-by-default', policies: [dryRun(allow('a', NOPE))], expect: 'ALLOW', by: null, reason: 'no-allow-policies' },
  { name: 'order/rule-index-of-first-matching-rule', policies: [allow('a', [from({ namespaces: ['x'] }), from({ namespaces: ['bar'] }), ANY_RULE[0]!])], expect: 'ALLOW', by: 'foo/a', rule: 1 },

  // --- empty forms -------------------------------------------------------------
  { name: 'empty/spec-empty-denies-selected', policies: [policy('allow-nothing', {})], expect: 'DENY', by: null, reason: 'no-allow-matched' },
  { name: 'empty/spec-empty-elsewhere-no-effect', policies: [policy('other/allow-nothing', {})], expect: 'ALLOW', by: null },
  { name: 'empty/allow-empty-rule-allows-all', policies: [allow('a', ANY_RULE)], expect: 'ALLOW', by: 'foo/a' },
  { name: 'empty/allow-empty-rule-allows-plaintext-tcp', policies: [allow('a', ANY_RULE)], request: { ...TCP, ...PLAINTEXT }, expect: 'ALLOW', by: 'foo/a' },
  { name: 'empty/deny-empty-rule-denies-all', policies: [deny('d', ANY_RULE)], expect: 'DENY', by: 'foo/d' },
  { name: 'empty/deny-empty-rule-denies-tcp', policies: [deny('d', ANY_RULE)], request: TCP, expect: 'DENY', by: 'foo/d' },
  { name: 'empty/allow-nothing-plus-allow', policies: [policy('allow-nothing', {}), allow('a', [to({ methods: ['GET'] })])], expect: 'ALLOW', by: 'foo/a' },
  { name: 'empty/allow-nothing-plus-unmatched-allow', policies: [policy('allow-nothing', {}), allow('a', [to({ methods: ['GET'] })])], request: { request: { method: 'POST' } }, expect: 'DENY', by: null },
  { name: 'empty/allow-with-empty-rules-list', policies: [policy('a', { action: 'ALLOW', rules: [] })], expect: 'DENY', by: null },
  { name: 'empty/audit-without-rules-audits-nothing', policies: [policy('au', { action: 'AUDIT' })], expect: 'ALLOW', audit: [] },
  { name: 'empty/action-defaults-to-allow', policies: [policy('a', { rules: [from({ namespaces: ['bar'] })] })], expect: 'ALLOW', by: 'foo/a' },

  // --- scope -------------------------------------------------------------------
  { name: 'scope/selector-selects', policies: [allow('a', NOPE, { app: 'httpbin' })], expect: 'DENY', by: null },
  { name: 'scope/selector-other-app-not-applied', policies: [allow('a', NOPE, { app: 'reviews' })], expect: 'ALLOW', by: null, reason: 'no-allow-policies' },
  { name: 'scope/selector-needs-every-label', policies: [deny('d', ANY_RULE, { app: 'httpbin', version: 'v2' })], expect: 'ALLOW' },
  { name: 'scope/selector-subset-of-labels', policies: [deny('d', ANY_RULE, { version: 'v1' })], expect: 'DENY', by: 'foo/d' },
  { name: 'scope/selector-on-unlabelled-workload', policies: [deny('d', ANY_RULE, { app: 'httpbin' })], request: { workload: { labels: null } }, expect: 'ALLOW' },
  { name: 'scope/other-namespace-not-applied', policies: [allow('other/a', NOPE), deny('other/d', ANY_RULE)], expect: 'ALLOW', by: null },
  { name: 'scope/root-namespace-applies-mesh-wide', policies: [allow('istio-system/a', NOPE)], expect: 'DENY', by: null },
  { name: 'scope/root-namespace-deny', policies: [deny('istio-system/d', ANY_RULE)], expect: 'DENY', by: 'istio-system/d' },
  { name: 'scope/root-namespace-selector-matches', policies: [deny('istio-system/d', ANY_RULE, { app: 'httpbin' })], expect: 'DENY', by: 'istio-system/d' },
  { name: 'scope/root-namespace-selector-other', policies: [deny('istio-system/d', ANY_RULE, { app: 'reviews' })], expect: 'ALLOW' },
  { name: 'scope/custom-root-namespace', policies: [deny('mesh-root/d', ANY_RULE)], opts: { rootNamespace: 'mesh-root' }, expect: 'DENY', by: 'mesh-root/d' },
  { name: 'scope/default-root-ignores-other-root', policies: [deny('mesh-root/d', ANY_RULE)], expect: 'ALLOW' },
  { name: 'scope/custom-root-makes-istio-system-plain', policies: [deny('istio-system/d', ANY_RULE)], opts: { rootNamespace: 'mesh-root' }, expect: 'ALLOW' },
  { name: 'scope/workload-in-root-namespace', policies: [deny('istio-system/d', ANY_RULE)], request: { workload: { namespace: 'istio-system' } }, expect: 'DENY', by: 'istio-system/d' },
  { name: 'scope/target-ref-policies-are-not-for-sidecars', policies: [policy('gw', { action: 'DENY', targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'gw' }], rules: ANY_RULE })], expect: 'ALLOW' },
  { name: 'scope/v1beta1-documents', policies: [policy('d', { action: 'DENY', rules: ANY_RULE }, { apiVersion: 'security.istio.io/v1beta1' })], expect: 'DENY', by: 'foo/d' },

  // --- source.principals --------------------------------------------------------
  { name: 'principals/exact', policies: [allow('a', [from({ principals: [SLEEP] })])], expect: 'ALLOW' },
  { name: 'principals/request-written-with-spiffe', policies: [allow('a', [from({ principals: [SLEEP] })])], request: { source: { principal: `spiffe://${SLEEP}` } }, expect: 'ALLOW' },
  { name: 'principals/prefix', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/*'] })])], expect: 'ALLOW' },
  { name: 'principals/suffix', policies: [allow('a', [from({ principals: ['*/sa/sleep'] })])], expect: 'ALLOW' },
  { name: 'principals/presence', policies: [allow('a', [from({ principals: ['*'] })])], expect: 'ALLOW' },
  { name: 'principals/presence-plaintext', policies: [allow('a', [from({ principals: ['*'] })])], request: PLAINTEXT, expect: 'DENY' },
  { name: 'principals/mismatch', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/other'] })])], expect: 'DENY' },
  { name: 'principals/case-sensitive', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/Sleep'] })])], expect: 'DENY' },
  { name: 'principals/spiffe-prefix-in-policy-never-matches', policies: [allow('a', [from({ principals: [`spiffe://${SLEEP}`] })])], expect: 'DENY' },
  { name: 'principals/plaintext-has-none', policies: [allow('a', [from({ principals: [SLEEP] })])], request: PLAINTEXT, expect: 'DENY' },
  { name: 'principals/not-star-denies-plaintext', policies: [deny('d', [from({ notPrincipals: ['*'] })])], request: PLAINTEXT, expect: 'DENY', by: 'foo/d' },
  { name: 'principals/not-star-passes-mtls', policies: [deny('d', [from({ notPrincipals: ['*'] })])], expect: 'ALLOW' },
  { name: 'principals/not-excludes', policies: [allow('a', [from({ notPrincipals: [SLEEP] })])], expect: 'DENY' },
  { name: 'principals/not-others-pass', policies: [allow('a', [from({ notPrincipals: [SLEEP] })])], request: { source: { principal: 'cluster.local/ns/bar/sa/other' } }, expect: 'ALLOW' },
  { name: 'principals/star-inside-is-literal', policies: [allow('a', [from({ principals: ['cluster.local/ns/*/sa/sleep'] })])], expect: 'DENY' },

  // --- source.requestPrincipals (iss and sub split at the last "/") ------------
  { name: 'reqp/exact', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example/alice'] })])], request: JWT, expect: 'ALLOW' },
  { name: 'reqp/no-jwt', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example/alice'] })])], expect: 'DENY' },
  { name: 'reqp/presence-with-jwt', policies: [allow('a', [from({ requestPrincipals: ['*'] })])], request: JWT, expect: 'ALLOW' },
  { name: 'reqp/presence-without-jwt', policies: [allow('a', [from({ requestPrincipals: ['*'] })])], expect: 'DENY' },
  { name: 'reqp/any-subject-of-issuer', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example/*'] })])], request: JWT, expect: 'ALLOW' },
  { name: 'reqp/subject-of-any-issuer', policies: [allow('a', [from({ requestPrincipals: ['*/alice'] })])], request: JWT, expect: 'ALLOW' },
  { name: 'reqp/other-subject', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example/bob'] })])], request: JWT, expect: 'DENY' },
  { name: 'reqp/deny-requests-without-jwt', policies: [deny('d', [from({ notRequestPrincipals: ['*'] })])], expect: 'DENY', by: 'foo/d' },
  { name: 'reqp/deny-requests-without-jwt-passes-jwt', policies: [deny('d', [from({ notRequestPrincipals: ['*'] })])], request: JWT, expect: 'ALLOW' },
  // Istio splits "https://issuer.example*" at its last "/": issuer "https:/", subject prefix "issuer.example".
  { name: 'reqp/prefix-without-slash-splits-inside-scheme', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example*'] })])], request: JWT, expect: 'DENY' },
  { name: 'reqp/from-iss-and-sub-claims', policies: [allow('a', [from({ requestPrincipals: ['https://issuer.example/alice'] })])], request: { request: { auth: { claims: { iss: 'https://issuer.example', sub: 'alice' } } } }, expect: 'ALLOW' },

  // --- source.namespaces (derived from the principal) --------------------------
  { name: 'namespaces/exact', policies: [allow('a', [from({ namespaces: ['bar'] })])], expect: 'ALLOW' },
  { name: 'namespaces/prefix', policies: [allow('a', [from({ namespaces: ['ba*'] })])], expect: 'ALLOW' },
  { name: 'namespaces/suffix', policies: [allow('a', [from({ namespaces: ['*ar'] })])], expect: 'ALLOW' },
  { name: 'namespaces/presence', policies: [allow('a', [from({ namespaces: ['*'] })])], expect: 'ALLOW' },
  { name: 'namespaces/presence-plaintext', policies: [allow('a', [from({ namespaces: ['*'] })])], request: PLAINTEXT, expect: 'DENY' },
  { name: 'namespaces/mismatch', policies: [allow('a', [from({ namespaces: ['baz'] })])], expect: 'DENY' },
  { name: 'namespaces/glob-in-the-middle', policies: [allow('a', [from({ namespaces: ['b*r'] })])], expect: 'ALLOW' },
  { name: 'namespaces/from-ns-segment-not-sa', policies: [allow('a', [from({ namespaces: ['bar'] })])], request: { source: { principal: 'cluster.local/ns/x/sa/bar' } }, expect: 'DENY' },
  { name: 'namespaces/not-excludes', policies: [deny('d', [from({ notNamespaces: ['bar'] })])], expect: 'ALLOW' },
  { name: 'namespaces/not-denies-others', policies: [deny('d', [from({ notNamespaces: ['bar'] })])], request: { source: { principal: 'cluster.local/ns/x/sa/y' } }, expect: 'DENY' },
  { name: 'namespaces/not-denies-plaintext', policies: [deny('d', [from({ notNamespaces: ['foo'] })])], request: PLAINTEXT, expect: 'DENY' },

  // --- source.serviceAccounts --------------------------------------------------
  { name: 'serviceAccounts/ns-and-sa', policies: [allow('a', [from({ serviceAccounts: ['bar/sleep'] })])], expect: 'ALLOW' },
  { name: 'serviceAccounts/sa-only-means-policy-namespace', policies: [allow('a', [from({ serviceAccounts: ['sleep'] })])], expect: 'DENY' },
  { name: 'serviceAccounts/sa-only-same-namespace', policies: [allow('a', [from({ serviceAccounts: ['sleep'] })])], request: { source: { principal: 'cluster.local/ns/foo/sa/sleep' } }, expect: 'ALLOW' },
  { name: 'serviceAccounts/other-sa', policies: [allow('a', [from({ serviceAccounts: ['bar/other'] })])], expect: 'DENY' },
  { name: 'serviceAccounts/no-prefix-match', policies: [allow('a', [from({ serviceAccounts: ['bar/sleep'] })])], request: { source: { principal: 'cluster.local/ns/bar/sa/sleep-admin' } }, expect: 'DENY' },
  { name: 'serviceAccounts/any-trust-domain', policies: [allow('a', [from({ serviceAccounts: ['bar/sleep'] })])], request: { source: { principal: 'other.example/ns/bar/sa/sleep' } }, expect: 'ALLOW' },
  { name: 'serviceAccounts/not-denies', policies: [deny('d', [from({ notServiceAccounts: ['bar/sleep'] })])], request: { source: { principal: 'cluster.local/ns/bar/sa/other' } }, expect: 'DENY' },
  { name: 'serviceAccounts/plaintext', policies: [allow('a', [from({ serviceAccounts: ['bar/sleep'] })])], request: PLAINTEXT, expect: 'DENY' },

  // --- source.trustDomains -----------------------------------------------------
  { name: 'trustDomains/exact', policies: [allow('a', [from({ trustDomains: ['cluster.local'] })])], expect: 'ALLOW' },
  { name: 'trustDomains/exact-other', policies: [allow('a', [from({ trustDomains: ['cluster'] })])], expect: 'DENY' },
  { name: 'trustDomains/prefix', policies: [allow('a', [from({ trustDomains: ['cluster.*'] })])], expect: 'ALLOW' },
  { name: 'trustDomains/suffix', policies: [allow('a', [from({ trustDomains: ['*.local'] })])], expect: 'ALLOW' },
  { name: 'trustDomains/presence-plaintext', policies: [allow('a', [from({ trustDomains: ['*'] })])], request: PLAINTEXT, expect: 'DENY' },
  { name: 'trustDomains/not-denies-foreign', policies: [deny('d', [from({ notTrustDomains: ['cluster.local'] })])], request: { source: { principal: 'evil.example/ns/bar/sa/sleep' } }, expect: 'DENY' },
  { name: 'trustDomains/not-passes-own', policies: [deny('d', [from({ notTrustDomains: ['cluster.local'] })])], expect: 'ALLOW' },

  // --- source.ipBlocks / remoteIpBlocks ----------------------------------------
  { name: 'ipBlocks/single-ip', policies: [allow('a', [from({ ipBlocks: ['10.1.2.3'] })])], expect: 'ALLOW' },
  { name: 'ipBlocks/cidr', policies: [allow('a', [from({ ipBlocks: ['10.1.0.0/16'] })])], expect: 'ALLOW' },
  { name: 'ipBlocks/cidr-miss', policies: [allow('a', [from({ ipBlocks: ['10.2.0.0/16'] })])], expect: 'DENY' },
  { name: 'ipBlocks/host-bits-ignored', policies: [allow('a', [from({ ipBlocks: ['10.1.2.99/24'] })])], expect: 'ALLOW' },
  { name: 'ipBlocks/ipv6', policies: [allow('a', [from({ ipBlocks: ['2001:db8::/32'] })])], request: { source: { ip: '2001:db8::7' } }, expect: 'ALLOW' },
  { name: 'ipBlocks/ipv6-single', policies: [allow('a', [from({ ipBlocks: ['2001:db8::7'] })])], request: { source: { ip: '2001:db8:0:0:0:0:0:7' } }, expect: 'ALLOW' },
  { name: 'ipBlocks/ipv4-block-vs-ipv6', policies: [allow('a', [from({ ipBlocks: ['10.0.0.0/8'] })])], request: { source: { ip: '2001:db8::7' } }, expect: 'DENY' },
  { name: 'ipBlocks/ipv4-mapped-request', policies: [deny('d', [from({ ipBlocks: ['10.1.0.0/16'] })])], request: { source: { ip: '::ffff:10.1.2.3' } }, expect: 'DENY', by: 'foo/d' },
  { name: 'ipBlocks/not-denies-outside', policies: [deny('d', [from({ notIpBlocks: ['10.0.0.0/8'] })])], request: { source: { ip: '192.168.1.1' } }, expect: 'DENY' },
  { name: 'ipBlocks/not-passes-inside', policies: [deny('d', [from({ notIpBlocks: ['10.0.0.0/8'] })])], expect: 'ALLOW' },
  { name: 'ipBlocks/no-source-address', policies: [allow('a', [from({ ipBlocks: ['0.0.0.0/0'] })])], request: { source: { ip: null } }, expect: 'DENY' },
  { name: 'remoteIpBlocks/original-client', policies: [allow('a', [from({ remoteIpBlocks: ['203.0.113.0/24'] })])], request: { source: { remoteIp: '203.0.113.9' } }, expect: 'ALLOW' },
  { name: 'remoteIpBlocks/ipBlocks-sees-direct-peer', policies: [allow('a', [from({ ipBlocks: ['203.0.113.0/24'] })])], request: { source: { remoteIp: '203.0.113.9' } }, expect: 'DENY' },
  { name: 'remoteIpBlocks/defaults-to-peer', policies: [allow('a', [from({ remoteIpBlocks: ['10.1.2.3'] })])], expect: 'ALLOW' },
  { name: 'remoteIpBlocks/not-denies', policies: [deny('d', [from({ notRemoteIpBlocks: ['203.0.113.0/24'] })])], request: { source: { remoteIp: '198.51.100.1' } }, expect: 'DENY' },

  // --- operation.hosts ----------------------------------------------------------
  { name: 'hosts/exact', policies: [allow('a', [to({ hosts: ['httpbin.foo'] })])], expect: 'ALLOW' },
  { name: 'hosts/case-insensitive-request', policies: [allow('a', [to({ hosts: ['httpbin.foo'] })])], request: { request: { host: 'HTTPBIN.Foo' } }, expect: 'ALLOW' },
  { name: 'hosts/case-insensitive-pattern', policies: [allow('a', [to({ hosts: ['HttpBin.FOO'] })])], expect: 'ALLOW' },
  { name: 'hosts/host-port-matches-host', policies: [allow('a', [to({ hosts: ['httpbin.foo'] })])], request: { request: { host: 'httpbin.foo:8000' } }, expect: 'ALLOW' },
  { name: 'hosts/pattern-with-port', policies: [allow('a', [to({ hosts: ['httpbin.foo:8000'] })])], request: { request: { host: 'httpbin.foo:8000' } }, expect: 'ALLOW' },
  { name: 'hosts/pattern-with-port-needs-port', policies: [allow('a', [to({ hosts: ['httpbin.foo:8000'] })])], expect: 'DENY' },
  { name: 'hosts/prefix', policies: [allow('a', [to({ hosts: ['httpbin.*'] })])], expect: 'ALLOW' },
  { name: 'hosts/suffix-with-port', policies: [allow('a', [to({ hosts: ['*.foo'] })])], request: { request: { host: 'httpbin.foo:80' } }, expect: 'ALLOW' },
  { name: 'hosts/presence', policies: [allow('a', [to({ hosts: ['*'] })])], expect: 'ALLOW' },
  { name: 'hosts/mismatch', policies: [allow('a', [to({ hosts: ['reviews.foo'] })])], expect: 'DENY' },
  { name: 'hosts/deny-not-bypassed-by-case-and-port', policies: [deny('d', [to({ hosts: ['admin.example.com'] })])], request: { request: { host: 'ADMIN.example.com:443' } }, expect: 'DENY' },
  { name: 'hosts/bracketed-ipv6-with-port', policies: [allow('a', [to({ hosts: ['[::1]'] })])], request: { request: { host: '[::1]:8080' } }, expect: 'ALLOW' },
  { name: 'hosts/not-excludes-with-port', policies: [allow('a', [to({ notHosts: ['httpbin.foo'] })])], request: { request: { host: 'httpbin.foo:8000' } }, expect: 'DENY' },

  // --- operation.ports ----------------------------------------------------------
  { name: 'ports/match', policies: [allow('a', [to({ ports: ['8000'] })])], expect: 'ALLOW' },
  { name: 'ports/miss', policies: [allow('a', [to({ ports: ['9000'] })])], expect: 'DENY' },
  { name: 'ports/not-excludes', policies: [deny('d', [to({ notPorts: ['8000'] })])], expect: 'ALLOW' },
  { name: 'ports/not-denies-others', policies: [deny('d', [to({ notPorts: ['8000'] })])], request: { destination: { port: 9000 } }, expect: 'DENY' },
  { name: 'ports/apply-to-tcp', policies: [allow('a', [to({ ports: ['8000'] })])], request: TCP, expect: 'ALLOW' },
  { name: 'ports/leading-zero-is-the-number', policies: [allow('a', [to({ ports: ['08000'] })])], expect: 'ALLOW' },
  { name: 'ports/no-destination-port', policies: [allow('a', [to({ ports: ['8000'] })])], request: { destination: { port: null } }, expect: 'DENY' },

  // --- operation.methods --------------------------------------------------------
  { name: 'methods/exact', policies: [allow('a', [to({ methods: ['GET'] })])], expect: 'ALLOW' },
  { name: 'methods/case-sensitive', policies: [allow('a', [to({ methods: ['get'] })])], expect: 'DENY' },
  { name: 'methods/one-of', policies: [allow('a', [to({ methods: ['POST', 'GET'] })])], expect: 'ALLOW' },
  { name: 'methods/not-excludes-others', policies: [allow('a', [to({ notMethods: ['DELETE'] })])], expect: 'ALLOW' },
  { name: 'methods/not-excludes', policies: [allow('a', [to({ notMethods: ['GET'] })])], expect: 'DENY' },
  { name: 'methods/prefix-form', policies: [allow('a', [to({ methods: ['G*'] })])], expect: 'ALLOW' },

  // --- operation.paths ----------------------------------------------------------
  { name: 'paths/exact', policies: [allow('a', [to({ paths: ['/status/200'] })])], expect: 'ALLOW' },
  { name: 'paths/prefix', policies: [allow('a', [to({ paths: ['/status/*'] })])], expect: 'ALLOW' },
  { name: 'paths/suffix', policies: [allow('a', [to({ paths: ['*/200'] })])], expect: 'ALLOW' },
  { name: 'paths/presence', policies: [allow('a', [to({ paths: ['*'] })])], expect: 'ALLOW' },
  { name: 'paths/query-ignored', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status/200?x=1&y=2' } }, expect: 'ALLOW' },
  { name: 'paths/fragment-ignored', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status/200#top' } }, expect: 'ALLOW' },
  { name: 'paths/case-sensitive', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/Status/200' } }, expect: 'DENY' },
  { name: 'paths/trailing-slash-differs', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status/200/' } }, expect: 'DENY' },
  { name: 'paths/template-one-segment', policies: [allow('a', [to({ paths: ['/status/{*}'] })])], expect: 'ALLOW' },
  { name: 'paths/template-one-not-two', policies: [allow('a', [to({ paths: ['/status/{*}'] })])], request: { request: { path: '/status/200/x' } }, expect: 'DENY' },
  { name: 'paths/template-any', policies: [allow('a', [to({ paths: ['/status/{**}'] })])], request: { request: { path: '/status/200/x' } }, expect: 'ALLOW' },
  { name: 'paths/template-middle', policies: [allow('a', [to({ paths: ['/{*}/200'] })])], expect: 'ALLOW' },
  { name: 'paths/not-excludes', policies: [allow('a', [to({ notPaths: ['/admin'] })])], expect: 'ALLOW' },

  // --- when ------------------------------------------------------------------
  { name: 'when/header-exact', policies: [allow('a', [when('request.headers[user-agent]', ['curl/8'])])], expect: 'ALLOW' },
  { name: 'when/header-name-case-insensitive', policies: [allow('a', [when('request.headers[User-Agent]', ['curl/8'])])], expect: 'ALLOW' },
  { name: 'when/header-prefix', policies: [allow('a', [when('request.headers[user-agent]', ['curl/*'])])], expect: 'ALLOW' },
  { name: 'when/header-value-case-sensitive', policies: [allow('a', [when('request.headers[user-agent]', ['CURL/8'])])], expect: 'DENY' },
  { name: 'when/header-absent', policies: [allow('a', [when('request.headers[x-token]', ['abc'])])], expect: 'DENY' },
  { name: 'when/header-absent-notValues-hold', policies: [allow('a', [when('request.headers[x-token]', undefined, ['abc'])])], expect: 'ALLOW' },
  { name: 'when/header-presence-empty-value', policies: [allow('a', [when('request.headers[x-empty]', ['*'])])], request: { request: { headers: { 'x-empty': '' } } }, expect: 'ALLOW' },
  { name: 'when/header-repeated-allow-needs-every-reading', policies: [allow('a', [when('request.headers[x-role]', ['admin'])])], request: { request: { headers: { 'x-role': ['admin', 'user'] } } }, expect: 'DENY' },
  { name: 'when/header-repeated-deny-any-reading', policies: [deny('d', [when('request.headers[x-role]', ['admin'])])], request: { request: { headers: { 'x-role': ['user', 'admin'] } } }, expect: 'DENY', by: 'foo/d' },
  { name: 'when/header-repeated-deny-notValues-any-reading', policies: [deny('d', [when('request.headers[x-env]', undefined, ['prod'])])], request: { request: { headers: { 'x-env': ['prod', 'dev'] } } }, expect: 'DENY' },
  { name: 'when/header-repeated-allow-prefix-all-readings', policies: [allow('a', [when('request.headers[x-role]', ['adm*'])])], request: { request: { headers: { 'x-role': ['admin', 'admiral'] } } }, expect: 'ALLOW' },
  { name: 'when/header-authority-pseudo', policies: [allow('a', [when('request.headers[:authority]', ['httpbin.foo'])])], expect: 'ALLOW' },
  { name: 'when/header-method-pseudo', policies: [allow('a', [when('request.headers[:method]', ['GET'])])], expect: 'ALLOW' },
  { name: 'when/source.ip', policies: [allow('a', [when('source.ip', ['10.1.2.0/24'])])], expect: 'ALLOW' },
  { name: 'when/remote.ip', policies: [allow('a', [when('remote.ip', ['203.0.113.9'])])], request: { source: { remoteIp: '203.0.113.9' } }, expect: 'ALLOW' },
  { name: 'when/source.namespace', policies: [allow('a', [when('source.namespace', ['bar'])])], expect: 'ALLOW' },
  { name: 'when/source.principal', policies: [allow('a', [when('source.principal', [SLEEP])])], expect: 'ALLOW' },
  { name: 'when/source.serviceAccount', policies: [allow('a', [when('source.serviceAccount', ['bar/sleep'])])], expect: 'ALLOW' },
  { name: 'when/source.trustDomain', policies: [allow('a', [when('source.trustDomain', ['cluster.local'])])], expect: 'ALLOW' },
  { name: 'when/request.auth.principal', policies: [allow('a', [when('request.auth.principal', ['https://issuer.example/alice'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/request.auth.audiences', policies: [allow('a', [when('request.auth.audiences', ['httpbin'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/request.auth.audiences-miss', policies: [allow('a', [when('request.auth.audiences', ['other'])])], request: JWT, expect: 'DENY' },
  { name: 'when/request.auth.presenter', policies: [allow('a', [when('request.auth.presenter', ['web'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/claims-string', policies: [allow('a', [when('request.auth.claims[iss]', ['https://issuer.example'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/claims-list-any-element', policies: [allow('a', [when('request.auth.claims[groups]', ['admin'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/claims-nested', policies: [allow('a', [when('request.auth.claims[realm][role]', ['ops'])])], request: JWT, expect: 'ALLOW' },
  { name: 'when/claims-non-string-never-matches', policies: [allow('a', [when('request.auth.claims[level]', ['1'])])], request: JWT, expect: 'DENY' },
  { name: 'when/claims-missing', policies: [allow('a', [when('request.auth.claims[missing]', ['x'])])], request: JWT, expect: 'DENY' },
  { name: 'when/claims-no-jwt-notValues-hold', policies: [allow('a', [when('request.auth.claims[groups]', undefined, ['banned'])])], expect: 'ALLOW' },
  { name: 'when/destination.ip', policies: [allow('a', [when('destination.ip', ['10.0.0.0/24'])])], expect: 'ALLOW' },
  { name: 'when/destination.port', policies: [allow('a', [when('destination.port', ['8000'])])], expect: 'ALLOW' },
  { name: 'when/destination.port-miss', policies: [allow('a', [when('destination.port', ['9000'])])], expect: 'DENY' },
  { name: 'when/connection.sni', policies: [allow('a', [when('connection.sni', ['*.httpbin.foo.svc.cluster.local'])])], expect: 'ALLOW' },
  { name: 'when/connection.sni-absent', policies: [allow('a', [when('connection.sni', ['*'])])], request: { connection: null }, expect: 'DENY' },
  { name: 'when/notValues-exclude', policies: [deny('d', [when('source.namespace', undefined, ['bar'])])], expect: 'ALLOW' },
  { name: 'when/values-and-notValues', policies: [allow('a', [when('source.ip', ['10.0.0.0/8'], ['10.1.0.0/16'])])], expect: 'DENY' },
  { name: 'when/all-conditions-must-hold', policies: [allow('a', [{ when: [{ key: 'source.namespace', values: ['bar'] }, { key: 'destination.port', values: ['9000'] }] }])], expect: 'DENY' },
  { name: 'when/experimental-allow-fails-closed', policies: [allow('a', [when('experimental.envoy.filters.network.mysql_proxy[db.table]', ['[update]'])])], expect: 'DENY' },
  { name: 'when/experimental-deny-fails-closed', policies: [deny('d', [when('experimental.envoy.filters.network.mysql_proxy[db.table]', ['[update]'])])], expect: 'DENY', by: 'foo/d' },

  // --- boolean structure -----------------------------------------------------
  { name: 'struct/sources-are-ored', policies: [allow('a', [{ from: [{ source: { namespaces: ['x'] } }, { source: { namespaces: ['bar'] } }] }])], expect: 'ALLOW' },
  { name: 'struct/operations-are-ored', policies: [allow('a', [{ to: [{ operation: { methods: ['POST'] } }, { operation: { paths: ['/status/*'] } }] }])], expect: 'ALLOW' },
  { name: 'struct/fields-are-anded', policies: [allow('a', [to({ methods: ['GET'], paths: ['/admin'] })])], expect: 'DENY' },
  { name: 'struct/from-and-to', policies: [allow('a', [{ ...from({ namespaces: ['bar'] }), ...to({ methods: ['POST'] }) }])], expect: 'DENY' },
  { name: 'struct/from-to-when', policies: [allow('a', [{ ...from({ namespaces: ['bar'] }), ...to({ methods: ['GET'] }), ...when('destination.port', ['8000']) }])], expect: 'ALLOW' },
  { name: 'struct/values-are-ored', policies: [allow('a', [from({ principals: ['cluster.local/ns/x/sa/y', SLEEP] })])], expect: 'ALLOW' },
  { name: 'struct/not-means-none-of', policies: [allow('a', [from({ notPrincipals: ['cluster.local/ns/x/sa/y', 'cluster.local/ns/z/sa/w'] })])], expect: 'ALLOW' },
  { name: 'struct/positive-and-negative-on-one-field', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/*'], notPrincipals: ['*/sa/sleep'] })])], expect: 'DENY' },

  // --- TCP (HTTP-only fields) --------------------------------------------------
  { name: 'tcp/allow-http-only-rule-cannot-match', policies: [allow('a', [to({ methods: ['GET'] })])], request: TCP, expect: 'DENY', by: null },
  { name: 'tcp/allow-mixed-rule-cannot-match', policies: [allow('a', [{ ...from({ principals: [SLEEP] }), ...to({ methods: ['GET'] }) }])], request: TCP, expect: 'DENY' },
  { name: 'tcp/allow-http-only-in-one-operation-drops-rule', policies: [allow('a', [{ to: [{ operation: { methods: ['GET'] } }, { operation: { ports: ['8000'] } }] }])], request: TCP, expect: 'DENY' },
  { name: 'tcp/allow-request-header-condition-drops-rule', policies: [allow('a', [{ ...from({ principals: [SLEEP] }), ...when('request.headers[x-a]', ['b']) }])], request: TCP, expect: 'DENY' },
  { name: 'tcp/allow-tcp-rule-matches', policies: [allow('a', [from({ principals: [SLEEP] })])], request: TCP, expect: 'ALLOW' },
  { name: 'tcp/allow-other-rule-still-matches', policies: [allow('a', [to({ methods: ['GET'] }), from({ principals: [SLEEP] })])], request: TCP, expect: 'ALLOW', rule: 1 },
  { name: 'tcp/deny-http-only-denies-everything', policies: [deny('d', [to({ paths: ['/admin'] })])], request: TCP, expect: 'DENY', by: 'foo/d' },
  { name: 'tcp/deny-rest-of-rule-still-applies', policies: [deny('d', [{ ...from({ principals: ['cluster.local/ns/x/sa/y'] }), ...to({ paths: ['/admin'] }) }])], request: TCP, expect: 'ALLOW' },
  { name: 'tcp/deny-with-ports-on-that-port', policies: [deny('d', [to({ paths: ['/admin'], ports: ['8000'] })])], request: TCP, expect: 'DENY' },
  { name: 'tcp/deny-with-ports-other-port', policies: [deny('d', [to({ paths: ['/admin'], ports: ['8000'] })])], request: { ...TCP, destination: { port: 9000 } }, expect: 'ALLOW' },
  { name: 'tcp/deny-header-condition-dropped', policies: [deny('d', [when('request.headers[x-a]', ['b'])])], request: TCP, expect: 'DENY' },
  { name: 'tcp/deny-request-principals-dropped', policies: [deny('d', [from({ requestPrincipals: ['*'] })])], request: TCP, expect: 'DENY' },
  { name: 'tcp/audit-widens', policies: [audit('au', [to({ methods: ['POST'] })])], request: TCP, expect: 'ALLOW', audit: ['foo/au'] },
  { name: 'tcp/custom-widens', policies: [custom('c', 'ext', [to({ paths: ['/admin'] })])], custom: 'deny', request: TCP, expect: 'DENY', by: 'foo/c', reason: 'custom-denied' },
  { name: 'tcp/plaintext-denied-by-not-star', policies: [deny('d', [from({ notPrincipals: ['*'] })])], request: { ...TCP, ...PLAINTEXT }, expect: 'DENY' },
  { name: 'tcp/http-deny-does-not-apply-to-http-with-other-path', policies: [deny('d', [to({ paths: ['/admin'] })])], expect: 'ALLOW' },

  // --- path normalisation (besides the A3 matrix) ---------------------------
  { name: 'path/base-dot-segment', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status/./200' } }, expect: 'ALLOW' },
  { name: 'path/base-backslashes', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '\\status\\200' } }, expect: 'ALLOW' },
  { name: 'path/base-decodes-unreserved', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/st%61tus/%32%300' } }, expect: 'ALLOW' },
  { name: 'path/base-keeps-encoded-slash', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status%2F200' } }, expect: 'DENY' },
  { name: 'path/decode-and-merge-decodes-slash', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status%2F200' } }, opts: { pathNormalization: 'decode-and-merge-slashes' }, expect: 'ALLOW' },
  { name: 'path/none-keeps-dot-segment', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status/./200' } }, opts: { pathNormalization: 'none' }, expect: 'DENY' },
  { name: 'path/merge-slashes', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status//200' } }, opts: { pathNormalization: 'merge-slashes' }, expect: 'ALLOW' },
  { name: 'path/base-keeps-double-slash', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/status//200' } }, expect: 'DENY' },
  { name: 'path/dotdot-above-root', policies: [allow('a', [to({ paths: ['/status/200'] })])], request: { request: { path: '/../../status/200' } }, expect: 'ALLOW' },
  { name: 'path/nul-rejected', policies: [], request: { request: { path: '/a%00b' } }, expect: 'DENY', by: null, reason: 'path-rejected' },
];

describe('AuthorizationPolicy semantics table', () => {
  it('has at least 150 cases, uniquely named', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(150);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const engine = engineOf(c.policies, c.opts);
    const d = engine.evaluate(req(c.request), { customDecision: c.custom ?? 'deny' });
    const explained = engine.evaluate(req(c.request), { customDecision: c.custom ?? 'deny', explain: true });
    const info = JSON.stringify(explained, null, 1);
    expect(d.decision, info).toBe(c.expect);
    // explaining never changes the decision
    expect({ ...explained, trace: [] }).toEqual({ ...d, trace: [] });
    if (c.by !== undefined) expect(d.policy, info).toBe(c.by);
    if (c.rule !== undefined) expect(d.rule, info).toBe(c.rule);
    if (c.reason !== undefined) expect(d.reason, info).toBe(c.reason);
    if (c.audit !== undefined) expect(d.audit).toEqual(c.audit);
    if (c.provider !== undefined) expect(d.customProvider ?? null).toBe(c.provider);
    if (d.policy === null) expect(d.action).toBeNull();
  });
});

// ---------------------------------------------------------------------------
// security.md A3: path variants against the four shapes of a policy on /admin,
// under each normalisation mode. The expected normalised paths are the
// documented outcome table (README, "Path normalisation").

const A3_PATHS: Record<string, Record<PathNormalization, string>> = {
  '//admin': { none: '//admin', base: '//admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/./admin': { none: '/./admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/x/../admin': { none: '/x/../admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/%2Fadmin': { none: '/%2Fadmin', base: '/%2Fadmin', 'merge-slashes': '/%2Fadmin', 'decode-and-merge-slashes': '/admin' },
  '/x%2F..%2Fadmin': { none: '/x%2F..%2Fadmin', base: '/x%2F..%2Fadmin', 'merge-slashes': '/x%2F..%2Fadmin', 'decode-and-merge-slashes': '/admin' },
  '\\admin': { none: '\\admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/%2e/admin': { none: '/%2e/admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/admin?x=1': { none: '/admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/admin#x': { none: '/admin', base: '/admin', 'merge-slashes': '/admin', 'decode-and-merge-slashes': '/admin' },
  '/ADMIN': { none: '/ADMIN', base: '/ADMIN', 'merge-slashes': '/ADMIN', 'decode-and-merge-slashes': '/ADMIN' },
  '/admin;x=y': { none: '/admin;x=y', base: '/admin;x=y', 'merge-slashes': '/admin;x=y', 'decode-and-merge-slashes': '/admin;x=y' },
};

const SHAPES = {
  'DENY+paths': { doc: deny('p', [to({ paths: ['/admin'] })]), decide: (eq: boolean) => (eq ? 'DENY' : 'ALLOW') },
  'ALLOW+notPaths': { doc: allow('p', [to({ notPaths: ['/admin'] })]), decide: (eq: boolean) => (eq ? 'DENY' : 'ALLOW') },
  'ALLOW+paths': { doc: allow('p', [to({ paths: ['/admin'] })]), decide: (eq: boolean) => (eq ? 'ALLOW' : 'DENY') },
  'DENY+notPaths': { doc: deny('p', [to({ notPaths: ['/admin'] })]), decide: (eq: boolean) => (eq ? 'ALLOW' : 'DENY') },
} as const;

const A3_CASES = Object.entries(A3_PATHS).flatMap(([path, modes]) =>
  (Object.entries(modes) as [PathNormalization, string][]).flatMap(([mode, normalized]) =>
    Object.entries(SHAPES).map(([shape, s]) => ({ path, mode, normalized, shape, doc: s.doc, expect: s.decide(normalized === '/admin') })),
  ),
);

describe('A3 path normalisation matrix', () => {
  it('covers 11 paths x 4 modes x 4 policy shapes', () => {
    expect(A3_CASES.length).toBe(11 * 4 * 4);
  });
  it.each(A3_CASES.map((c) => [`${c.shape} ${JSON.stringify(c.path)} (${c.mode}) -> ${c.expect}`, c] as const))('A3 %s', (_n, c) => {
    const engine = engineOf([c.doc], { pathNormalization: c.mode });
    const d = engine.evaluate(req({ request: { path: c.path } }));
    expect(d.normalizedPath).toBe(c.normalized);
    expect(d.decision).toBe(c.expect);
  });
});
