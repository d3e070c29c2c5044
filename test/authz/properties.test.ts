/**
 * Invariants of the decision procedure on random policies and requests
 * (fast-check, fixed seeds; a failure prints the seed and the shrunk
 * counterexample):
 * - a matching DENY always denies;
 * - AUDIT never changes a decision;
 * - the order of policies never matters;
 * - adding an ALLOW policy that matches nothing turns "no policy: allow"
 *   into deny for the workloads it selects, and for those only;
 * - the compiled, indexed engine agrees with the reference interpreter and
 *   with the walk-every-policy evaluator.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuthzEngine } from '../../src/authz/engine.ts';
import { collectPolicyObjects } from '../../src/authz/loader.ts';
import type { AuthorizationPolicy, AuthzRequest, Decision } from '../../src/authz/model.ts';
import { referenceEvaluate, WalkEveryPolicy } from '../../src/authz/reference.ts';
import { parseRequestDocument } from '../../src/authz/request.ts';
import type { Doc } from './helpers.ts';

const NS = ['foo', 'bar', 'istio-system'];
const PRINCIPALS = ['cluster.local/ns/foo/sa/a', 'cluster.local/ns/bar/sa/b', 'other.td/ns/bar/sa/a'];
const PATHS = ['/a', '/a/x', '/b', '//a', '/a/../b', '/A', '/%2e/a'];
const sub = <T>(xs: readonly T[]): fc.Arbitrary<T[]> => fc.subarray([...xs], { minLength: 1 });
const pat = (xs: string[]): fc.Arbitrary<string[]> => sub([...xs, '*', ...xs.map((x) => x.slice(0, 3) + '*'), ...xs.map((x) => '*' + x.slice(-2))]);

const source: fc.Arbitrary<Doc> = fc
  .record(
    {
      principals: pat(PRINCIPALS),
      notPrincipals: pat(PRINCIPALS),
      namespaces: pat(['foo', 'bar']),
      notNamespaces: sub(['foo', 'bar']),
      ipBlocks: sub(['10.0.0.0/8', '10.1.0.0/16', '192.168.0.1', '2001:db8::/32']),
      notIpBlocks: sub(['10.1.0.0/16']),
      requestPrincipals: sub(['https://iss/alice', '*', 'https://iss/*', '*/bob']),
      notRequestPrincipals: sub(['*']),
      trustDomains: sub(['cluster.local', 'other.*', '*']),
    },
    { requiredKeys: [] },
  )
  .filter((s) => Object.keys(s).length > 0);

const operation: fc.Arbitrary<Doc> = fc
  .record(
    {
      hosts: sub(['web.foo', 'WEB.*', '*.foo', '*']),
      notHosts: sub(['admin.foo']),
      ports: sub(['80', '8080']),
      notPorts: sub(['9090']),
      methods: sub(['GET', 'POST', 'G*']),
      notMethods: sub(['DELETE']),
      paths: sub(['/a', '/a/*', '*/x', '/b', '/a/{*}', '/{**}']),
      notPaths: sub(['/b', '/a']),
    },
    { requiredKeys: [] },
  )
  .filter((o) => Object.keys(o).length > 0);

const condition: fc.Arbitrary<Doc> = fc.oneof(
  fc.record({ key: fc.constant('request.headers[x-k]'), values: sub(['1', '2', '*']) }),
  fc.record({ key: fc.constant('request.headers[x-k]'), notValues: sub(['1']) }),
  fc.record({ key: fc.constant('source.namespace'), values: sub(['foo', 'bar']) }),
  fc.record({ key: fc.constant('destination.port'), values: sub(['80', '8080']) }),
  fc.record({ key: fc.constant('request.auth.claims[groups]'), values: sub(['admin', 'dev']) }),
  fc.record({ key: fc.constant('source.ip'), notValues: sub(['10.1.0.0/16']) }),
  fc.record({ key: fc.constant('connection.sni'), values: sub(['*.foo.svc', 'x']) }),
);

const rule: fc.Arbitrary<Doc> = fc.record(
  {
    from: fc.array(source.map((s) => ({ source: s })), { minLength: 1, maxLength: 2 }),
    to: fc.array(operation.map((o) => ({ operation: o })), { minLength: 1, maxLength: 2 }),
    when: fc.array(condition, { minLength: 1, maxLength: 2 }),
  },
  { requiredKeys: [] },
);

const selector = fc.option(fc.record({ app: fc.constantFrom('web', 'db') }, { requiredKeys: [] }), { nil: undefined });

function doc(name: string, ns: string, action: string, rules: Doc[] | undefined, sel: Doc | undefined, extra: Doc = {}): Doc {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: ns },
    spec: { action, ...(rules !== undefined ? { rules } : {}), ...(sel && Object.keys(sel).length ? { selector: { matchLabels: sel } } : {}), ...extra },
  };
}

const policyDoc = (action: fc.Arbitrary<string>): fc.Arbitrary<Doc> =>
  fc.record({ ns: fc.constantFrom(...NS), action, rules: fc.array(rule, { minLength: 1, maxLength: 3 }), sel: selector }).map((p) => [p.ns, p.action, p.rules, p.sel] as const).map(([ns, action, rules, sel]) => doc('p', ns, action, rules, sel));

/** Policies with unique names. */
const policySet: fc.Arbitrary<Doc[]> = fc
  .array(policyDoc(fc.constantFrom('ALLOW', 'DENY', 'AUDIT', 'ALLOW', 'DENY')), { maxLength: 7 })
  .chain((ps) => fc.boolean().map((withCustom) => (withCustom ? [...ps, doc('c', 'foo', 'CUSTOM', [{ to: [{ operation: { paths: ['/a'] } }] }], undefined, { provider: { name: 'ext' } })] : ps)))
  .map((ps) => ps.map((d, i) => ({ ...d, metadata: { ...(d.metadata as Doc), name: `p${i}` } })));

const requestDoc: fc.Arbitrary<Doc> = fc.record({
  ns: fc.constantFrom('foo', 'bar'),
  app: fc.constantFrom('web', 'db', undefined),
  principal: fc.constantFrom(...PRINCIPALS, undefined),
  ip: fc.constantFrom('10.1.2.3', '10.2.0.1', '192.168.0.1', '2001:db8::5', '::ffff:10.1.9.9'),
  port: fc.constantFrom(80, 8080, 9090),
  sni: fc.constantFrom('web.foo.svc', undefined),
  http: fc.option(
    fc.record({
      method: fc.constantFrom('GET', 'POST', 'DELETE'),
      host: fc.constantFrom('web.foo', 'WEB.foo:80', 'admin.foo', 'db.bar'),
      path: fc.constantFrom(...PATHS, '/a?q=1'),
      xk: fc.constantFrom(undefined, '1', '2', ['1', '2'], ''),
      jwt: fc.constantFrom(undefined, { principal: 'https://iss/alice', claims: { groups: ['dev'] } }, { principal: 'https://iss/bob', claims: { groups: 'admin' } }),
    }),
    { nil: undefined },
  ),
}).map((r) => ({
  workload: { namespace: r.ns, labels: r.app ? { app: r.app } : {} },
  source: { principal: r.principal, ip: r.ip },
  destination: { ip: '10.0.0.1', port: r.port },
  connection: { sni: r.sni },
  ...(r.http
    ? { request: { method: r.http.method, host: r.http.host, path: r.http.path, headers: r.http.xk === undefined ? {} : { 'x-k': r.http.xk }, ...(r.http.jwt ? { auth: r.http.jwt } : {}) } }
    : {}),
}));

function load(docs: Doc[]): AuthorizationPolicy[] {
  const r = collectPolicyObjects(docs.map((value, i) => ({ value, file: 'prop.yaml', document: i + 1 })));
  const errors = r.issues.filter((i) => i.severity === 'error');
  if (errors.length) throw new Error(`generator produced an invalid policy: ${JSON.stringify(errors)}`);
  return [...r.policies];
}

const parse = (d: Doc): AuthzRequest => parseRequestDocument(d, 'prop');
const core = (d: Decision): unknown => ({ decision: d.decision, policy: d.policy, rule: d.rule, reason: d.reason, customProvider: d.customProvider });
const RUNS = { numRuns: 400 };

describe('authorization invariants (property tests)', () => {
  it('a matching DENY always denies', () => {
    fc.assert(
      fc.property(policySet, requestDoc, fc.constantFrom('allow', 'deny') as fc.Arbitrary<'allow' | 'deny'>, fc.integer({ min: 0, max: 3 }), (docs, rd, cd, how) => {
        const r = parse(rd);
        // A DENY policy built from the request itself, so that it matches it.
        const ns = fc.sample(fc.constantFrom(r.workload.namespace, 'istio-system'), { seed: how, numRuns: 1 })[0]!;
        const rules: Doc[] = [
          [{}],
          r.source.principal ? [{ from: [{ source: { principals: [r.source.principal] } }] }] : [{}],
          [{ to: [{ operation: { ports: [String(r.destination.port)] } }] }],
          r.request ? [{ to: [{ operation: { methods: [r.request.method!] } }] }] : [{ when: [{ key: 'destination.port', values: [String(r.destination.port)] }] }],
        ][how]!;
        const d = doc('zz-matching-deny', ns, 'DENY', rules, r.workload.labels.app ? { app: r.workload.labels.app } : undefined);
        const engine = AuthzEngine.compile(load([...docs, d]));
        const res = engine.evaluate(r, { customDecision: cd });
        expect(res.decision).toBe('DENY');
        expect(['deny-matched', 'custom-denied', 'custom-multiple-providers']).toContain(res.reason);
      }),
      { seed: 1001, ...RUNS },
    );
  });

  it('AUDIT never changes a decision', () => {
    fc.assert(
      fc.property(policySet, fc.array(policyDoc(fc.constant('AUDIT')), { minLength: 1, maxLength: 3 }), requestDoc, (docs, audits, rd) => {
        const r = parse(rd);
        const named = audits.map((a, i) => ({ ...a, metadata: { ...(a.metadata as Doc), name: `audit${i}` } }));
        const without = AuthzEngine.compile(load(docs)).evaluate(r, { customDecision: 'allow' });
        const withAudit = AuthzEngine.compile(load([...docs, ...named])).evaluate(r, { customDecision: 'allow' });
        expect(core(withAudit)).toEqual(core(without));
      }),
      { seed: 1002, ...RUNS },
    );
  });

  it('the order of policies never matters', () => {
    fc.assert(
      fc.property(policySet.chain((ps) => fc.tuple(fc.constant(ps), fc.shuffledSubarray(ps, { minLength: ps.length, maxLength: ps.length }))), requestDoc, ([a, b], rd) => {
        const r = parse(rd);
        const x = AuthzEngine.compile(load(a)).evaluate(r, { explain: true });
        const y = AuthzEngine.compile(load(b)).evaluate(r, { explain: true });
        expect(y).toEqual(x);
      }),
      { seed: 1003, ...RUNS },
    );
  });

  it('an ALLOW policy that matches nothing turns "no policy: allow" into deny for the workloads it selects only', () => {
    fc.assert(
      fc.property(
        policySet.map((ps) => ps.filter((p) => (p.spec as Doc).action !== 'ALLOW')),
        fc.constantFrom('foo', 'bar', 'istio-system'),
        selector,
        fc.constantFrom<Doc | undefined>(undefined, { rules: [{ from: [{ source: { namespaces: ['nowhere'] } }] }] }),
        requestDoc,
        (docs, ns, sel, form, rd) => {
          const r = parse(rd);
          const nothing = doc('allow-nothing', ns, 'ALLOW', form ? (form.rules as Doc[]) : undefined, sel);
          const before = AuthzEngine.compile(load(docs)).evaluate(r, { customDecision: 'allow' });
          const after = AuthzEngine.compile(load([...docs, nothing])).evaluate(r, { customDecision: 'allow' });
          const selected = (ns === r.workload.namespace || ns === 'istio-system') && (!sel?.app || r.workload.labels.app === sel.app);
          if (!selected) {
            expect(core(after)).toEqual(core(before));
          } else if (before.decision === 'ALLOW') {
            expect(before.reason).toBe('no-allow-policies');
            expect(after).toMatchObject({ decision: 'DENY', policy: null, reason: 'no-allow-matched' });
          } else {
            expect(core(after)).toEqual(core(before));
          }
        },
      ),
      { seed: 1004, ...RUNS },
    );
  });

  it('the indexed engine agrees with the reference interpreter and the walk-every-policy evaluator', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(policySet, fc.array(requestDoc, { minLength: 1, maxLength: 5 }), fc.constantFrom('none', 'base', 'merge-slashes', 'decode-and-merge-slashes') as fc.Arbitrary<'base'>, fc.constantFrom('allow', 'deny') as fc.Arbitrary<'allow' | 'deny'>, (docs, rds, mode, cd) => {
        const policies = load(docs);
        const engine = AuthzEngine.compile(policies, { pathNormalization: mode });
        const walk = new WalkEveryPolicy(policies, { pathNormalization: mode });
        for (const rd of rds) {
          const r = parse(rd);
          const d = engine.evaluate(r, { customDecision: cd });
          seen.add(`${d.reason}${d.policy ? ':by-policy' : ''}${r.request ? ':http' : ':tcp'}`);
          const want = { decision: d.decision, policy: d.policy, rule: d.rule, reason: d.reason };
          expect(referenceEvaluate(policies, r, { pathNormalization: mode, customDecision: cd })).toEqual(want);
          expect(walk.evaluate(r, cd)).toEqual(want);
        }
      }),
      { seed: 1005, numRuns: 600 },
    );
    // the generators reach every kind of outcome
    for (const want of ['deny-matched:by-policy:http', 'deny-matched:by-policy:tcp', 'allow-matched:by-policy:http', 'allow-matched:by-policy:tcp', 'no-allow-matched:http', 'no-allow-matched:tcp', 'no-allow-policies:http', 'custom-denied:by-policy:http']) {
      expect(seen, [...seen].join(' ')).toContain(want);
    }
  });
});
