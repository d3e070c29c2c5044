/**
 * authz: decisions per second of the compiled, indexed engine for 1, 100 and
 * 1000 policies, on one core (one thread, no I/O), next to the naive
 * evaluators measured in the same run on the same requests:
 * - walk-every: the engine's compiled rules, but every policy of the mesh
 *   checked for scope on every request (no index, no cache);
 * - reference: the interpreter the property tests use as an oracle.
 *
 *   node_modules/.bin/node bench/authz.ts        (BENCH_SECONDS=3 per evaluator and size by default,
 *                                                 in 3 interleaved rounds; the best round counts)
 *
 * Prints a table, then `RESULT {json}`.
 */
import { AuthzEngine } from '../src/authz/engine.ts';
import { assertNoErrors, collectPolicyObjects } from '../src/authz/loader.ts';
import type { AuthorizationPolicy, AuthzRequest } from '../src/authz/model.ts';
import { referenceEvaluate, WalkEveryPolicy } from '../src/authz/reference.ts';
import { parseRequestDocument } from '../src/authz/request.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = 3;

/** A deterministic PRNG, so every run measures the same mesh. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Doc = Record<string, unknown>;

const doc = (ns: string, name: string, spec: Doc): Doc => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: ns }, spec });

/**
 * A mesh of `n` policies shaped like real ones: namespaces of ~10 policies
 * (a default deny, per-app ALLOW rules on principals, methods and paths, a
 * DENY on admin paths, a header condition, a JWT rule), plus mesh-wide
 * policies in istio-system once there are enough of them.
 */
function mesh(n: number): { docs: Doc[]; namespaces: number; apps: number } {
  const docs: Doc[] = [];
  if (n === 1) {
    docs.push(doc('ns-0', 'app-0-readers', { selector: { matchLabels: { app: 'app-0' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/ns-1/sa/client-0'] } }], to: [{ operation: { methods: ['GET'], paths: ['/api/*'] } }] }] }));
    return { docs, namespaces: 1, apps: 1 };
  }
  const perNs = 10;
  const mw = n >= 100 ? 2 : 0;
  if (mw) {
    docs.push(doc('istio-system', 'deny-foreign', { action: 'DENY', rules: [{ from: [{ source: { notTrustDomains: ['cluster.local'], principals: ['*'] } }] }] }));
    docs.push(doc('istio-system', 'audit-delete', { action: 'AUDIT', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] }));
  }
  let ns = 0;
  while (docs.length < n) {
    const name = `ns-${ns}`;
    const here: Doc[] = [doc(name, 'allow-nothing', {})];
    for (let a = 0; here.length < perNs; a++) {
      const app = `app-${a}`;
      here.push(doc(name, `${app}-readers`, {
        selector: { matchLabels: { app } },
        rules: [
          { from: [{ source: { principals: [`cluster.local/ns/ns-${(ns + 1) % 97}/sa/client-${a}`, `cluster.local/ns/${name}/sa/*`] } }], to: [{ operation: { methods: ['GET', 'HEAD'], paths: ['/api/*', '/healthz'] } }] },
          { from: [{ source: { namespaces: ['ingress'] } }], to: [{ operation: { hosts: [`${app}.example.com`], paths: ['/public/*'] } }] },
        ],
      }));
      if (here.length < perNs) {
        here.push(doc(name, `${app}-writers`, {
          selector: { matchLabels: { app } },
          rules: [{ from: [{ source: { requestPrincipals: ['https://issuer.example/*'] } }], to: [{ operation: { methods: ['POST', 'PUT'], paths: [`/api/${app}/*`] } }], when: [{ key: 'request.auth.claims[groups]', values: [`${app}-writers`] }] }],
        }));
      }
      if (here.length < perNs && a % 2 === 0) {
        here.push(doc(name, `${app}-deny-admin`, { selector: { matchLabels: { app } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin', '/admin/*'], ports: ['8080'] } }] }, { when: [{ key: 'request.headers[x-debug]', values: ['*'] }, { key: 'destination.port', values: ['8080'] }] }] }));
      }
    }
    for (const d of here) if (docs.length < n) docs.push(d);
    ns++;
  }
  return { docs, namespaces: ns, apps: 4 };
}

function requests(count: number, namespaces: number, apps: number, seed: number): AuthzRequest[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const out: AuthzRequest[] = [];
  for (let i = 0; i < count; i++) {
    const ns = Math.floor(r() * namespaces);
    const a = Math.floor(r() * apps);
    const http = r() < 0.9;
    out.push(parseRequestDocument({
      workload: { namespace: `ns-${ns}`, labels: { app: `app-${a}`, version: pick(['v1', 'v2']) } },
      source: { principal: pick([`cluster.local/ns/ns-${(ns + 1) % 97}/sa/client-${a}`, `cluster.local/ns/ns-${ns}/sa/peer`, 'cluster.local/ns/ingress/sa/gw', 'evil.example/ns/x/sa/y', null]), ip: `10.${ns % 250}.${a}.${i % 250}` },
      destination: { ip: '10.0.0.1', port: pick([8080, 8080, 9090]) },
      ...(http
        ? {
            request: {
              method: pick(['GET', 'GET', 'GET', 'POST', 'DELETE']),
              host: pick([`app-${a}.example.com`, `app-${a}.ns-${ns}.svc:8080`]),
              path: pick(['/api/items?page=2', `/api/app-${a}/x`, '/admin', '/public/index.html', '/healthz', '/api/../admin']),
              headers: r() < 0.1 ? { 'x-debug': '1', 'user-agent': 'bench' } : { 'user-agent': 'bench' },
              ...(r() < 0.3 ? { auth: { principal: 'https://issuer.example/alice', claims: { groups: [`app-${a}-writers`] } } } : {}),
            },
          }
        : {}),
    }, 'bench'));
  }
  return out;
}

/** Decisions per second of `fn` over `reqs`, after a warm-up. */
function measure(reqs: readonly AuthzRequest[], fn: (r: AuthzRequest) => unknown, seconds: number): number {
  let sink = 0;
  const warm = performance.now() + Math.min(200, seconds * 200);
  for (let i = 0; performance.now() < warm; i++) sink += fn(reqs[i % reqs.length]!) ? 1 : 0;
  let done = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let j = 0; j < 256; j++) {
      sink += fn(reqs[(done + j) % reqs.length]!) ? 1 : 0;
    }
    done += 256;
  }
  const elapsed = (performance.now() - start) / 1000;
  if (sink < 0) console.log(sink);
  return done / elapsed;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

interface Row {
  policies: number;
  namespaces: number;
  engine: number;
  walkEvery: number;
  reference: number;
  allowShare: number;
}

const rows: Row[] = [];
console.log(`authz engine, one core (Node ${process.version}), ${SECONDS}s per evaluator and size in ${ROUNDS} interleaved rounds (best round)`);
for (const n of [1, 100, 1000]) {
  const m = mesh(n);
  const loaded = assertNoErrors(collectPolicyObjects(m.docs.map((value, i) => ({ value, file: 'bench', document: i + 1 }))));
  const policies: readonly AuthorizationPolicy[] = loaded.policies;
  const reqs = requests(2000, m.namespaces, m.apps, 7 + n);
  const engine = AuthzEngine.compile(policies);
  const walk = new WalkEveryPolicy(policies);
  // Same decisions from all three, before timing anything.
  let allows = 0;
  for (const r of reqs.slice(0, 300)) {
    const a = engine.evaluate(r);
    const b = walk.evaluate(r);
    const c = referenceEvaluate(policies, r);
    if (a.decision !== b.decision || a.decision !== c.decision || a.policy !== b.policy || a.policy !== c.policy) {
      throw new Error(`evaluators disagree at ${n} policies: ${JSON.stringify({ a, b, c, r })}`);
    }
    if (a.decision === 'ALLOW') allows++;
  }
  // Interleaved rounds, best of each: the machine is shared, and a burst of
  // someone else's work should not decide which evaluator looks faster.
  let e = 0;
  let w = 0;
  let ref = 0;
  for (let round = 0; round < ROUNDS; round++) {
    e = Math.max(e, measure(reqs, (r) => engine.evaluate(r).decision === 'ALLOW', SECONDS / ROUNDS));
    w = Math.max(w, measure(reqs, (r) => walk.evaluate(r).decision === 'ALLOW', SECONDS / ROUNDS));
    ref = Math.max(ref, measure(reqs, (r) => referenceEvaluate(policies, r).decision === 'ALLOW', Math.min(SECONDS, 0.9) / ROUNDS));
  }
  rows.push({ policies: policies.length, namespaces: m.namespaces, engine: e, walkEvery: w, reference: ref, allowShare: allows / 300 });
}

console.log('');
console.log('policies  namespaces   engine (decisions/s)   walk-every (decisions/s)   reference (decisions/s)   engine/walk   engine/reference');
for (const r of rows) {
  console.log(
    `${String(r.policies).padStart(8)}  ${String(r.namespaces).padStart(10)}   ${fmt(r.engine).padStart(20)}   ${fmt(r.walkEvery).padStart(24)}   ${fmt(r.reference).padStart(23)}   ${(r.engine / r.walkEvery).toFixed(1).padStart(10)}x   ${(r.engine / r.reference).toFixed(1).padStart(15)}x`,
  );
}
const at100 = rows.find((r) => r.policies === 100)!;
console.log('');
console.log(`target: >= 200,000 decisions/s per core at 100 policies: ${fmt(at100.engine)} (${at100.engine >= 200_000 ? 'met' : 'NOT met'})`);
console.log(`requests: 2,000 generated per size (90% HTTP, 10% TCP); ~${Math.round(at100.allowShare * 100)}% allowed at 100 policies`);
console.log(
  'RESULT ' +
    JSON.stringify({
      decisionsPerSecond: Object.fromEntries(rows.map((r) => [String(r.policies), Math.round(r.engine)])),
      walkEveryPerSecond: Object.fromEntries(rows.map((r) => [String(r.policies), Math.round(r.walkEvery)])),
      referencePerSecond: Object.fromEntries(rows.map((r) => [String(r.policies), Math.round(r.reference)])),
      ratioVsWalkEvery: Object.fromEntries(rows.map((r) => [String(r.policies), Number((r.engine / r.walkEvery).toFixed(2))])),
      targetMet: at100.engine >= 200_000,
    }),
);
