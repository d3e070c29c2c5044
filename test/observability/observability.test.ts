/**
 * deploy/observability: the alert rules and the Grafana dashboard, checked
 * with Prometheus' own promtool (Debian package `prometheus`) and against
 * what the running components really export:
 * - `promtool check rules` on the rules of alerts.yaml, and on every query of
 *   the dashboard (as recording rules, Grafana's variables substituted);
 * - `promtool test rules` with alerts.promtool.yaml, which has a firing case
 *   for every alert (checked here) and cases that must stay silent;
 * - every metric name the alerts and the dashboard use is exported by a real
 *   `castellan server`, `castellan agent` or `castellan authz serve` process,
 *   read from their /metrics (metric families, so a counter that has not
 *   counted yet still counts as exported).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const OBS = join(root, 'deploy/observability');
const BIN = join(root, 'bin/castellan.js');
const NODE24 = join(root, 'node_modules/.bin/node');
const tmp = tempDir('castellan-observability-');
const procs: ChildProcess[] = [];
afterAll(() => {
  for (const p of procs) p.kill('SIGKILL');
  tmp.cleanup();
});

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const alertsDoc = parse(readFileSync(join(OBS, 'alerts.yaml'), 'utf8')) as { spec: { groups: { name: string; rules: Rule[] }[] } };
const rules = alertsDoc.spec.groups.flatMap((g) => g.rules);
interface Target {
  expr: string;
}
interface Panel {
  title: string;
  type: string;
  targets?: Target[];
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
}
const dashboard = JSON.parse(readFileSync(join(OBS, 'grafana-dashboard.json'), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string; type: string; definition?: string }[] } };
const dashboardExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
/** Grafana's variables, as Prometheus would see them once Grafana substituted them. */
const substitute = (e: string): string => e.replace(/\$__rate_interval/g, '5m').replace(/\$(ca_job|agent_job|authz_job)/g, '.*');

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);
/** Metric names a PromQL expression reads (strings, matchers, ranges and grouping labels taken out; functions are followed by "("). */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w:.$])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const function_ = /^\s*\(/.test(bare.slice(m.index + m[0].length));
    if (!function_ && !KEYWORDS.has(m[0].toLowerCase())) names.add(m[0]);
  }
  return [...names];
}

async function promtool(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('promtool', args, { cwd, timeout: 60_000 });
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: (x.stdout ?? '') + (x.stderr ?? '') };
  }
}

describe('alert rules and dashboard: shape', () => {
  it('the metric-name extractor finds names and nothing else', () => {
    expect(metricNames('sum by (job, le) (rate(foo_bucket{code="OK", a=~"x|y"}[5m])) / on (job) group_left (x) bar > 0.8 * 10000 unless on () baz == 1').sort()).toEqual(['bar', 'baz', 'foo_bucket']);
    expect(metricNames('time() - max(x_ts{job=~"$ca_job"}) and histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))').sort()).toEqual(['h_bucket', 'x_ts']);
  });

  it('every alert has a severity, a summary and a description; names are unique', () => {
    const alerts = rules.filter((r) => r.alert);
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    expect(new Set(alerts.map((a) => a.alert)).size).toBe(alerts.length);
    for (const a of alerts) {
      expect(['warning', 'critical'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
    }
  });

  it('covers what the issue asks for: issuance errors, expiry within 30 days, rotation overdue, signer queue, JWKS/TokenReview, agents failing to renew', () => {
    const names = rules.map((r) => r.alert);
    for (const n of ['CastellanIssuanceErrors', 'CastellanSigningAuthorityExpiringSoon', 'CastellanRootCertificateExpiringSoon', 'CastellanRotationOverdue', 'CastellanSignerQueueNearLimit', 'CastellanTokenVerificationUnavailable', 'CastellanAgentRenewalFailing']) {
      expect(names).toContain(n);
    }
  });

  it('the dashboard: unique panel ids and a datasource variable on every query panel, no overlapping panels', () => {
    expect(dashboard.uid).toBe('castellan');
    expect(dashboard.templating.list.find((v) => v.name === 'datasource')?.type).toBe('datasource');
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      if (p.type === 'row') continue;
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps another panel at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
    // the panels the issue names
    const titles = dashboard.panels.map((p) => p.title).join('\n');
    for (const t of [/issued/i, /latency/i, /refusals by reason/i, /signer queue/i, /authority expiry/i, /SDS connections/i, /pushed to every SDS stream/i, /decisions/i]) expect(titles).toMatch(t);
  });
});

describeWith([peers.promtool], 'alert rules and dashboard: promtool', () => {
  const dir = join(tmp.path, 'promtool');
  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: alertsDoc.spec.groups }));
    copyFileSync(join(root, 'test/observability/alerts.promtool.yaml'), join(dir, 'alerts.promtool.yaml'));
    const records = dashboardExprs.map((e, i) => ({ record: `castellan_dashboard:query_${i}`, expr: substitute(e) }));
    writeFileSync(join(dir, 'dashboard-rules.yaml'), stringify({ groups: [{ name: 'dashboard', rules: records }] }));
  });

  it('promtool check rules: the alerts', async () => {
    const r = await promtool(['check', 'rules', 'rules.yaml'], dir);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('promtool check rules: every query of the dashboard parses', async () => {
    const r = await promtool(['check', 'rules', 'dashboard-rules.yaml'], dir);
    expect(r.code, r.out).toBe(0);
    // teeth: a broken query is refused
    writeFileSync(join(dir, 'broken.yaml'), stringify({ groups: [{ name: 'x', rules: [{ record: 'x:y', expr: 'sum(rate(foo[5m])' }] }] }));
    expect((await promtool(['check', 'rules', 'broken.yaml'], dir)).code).not.toBe(0);
  });

  it('promtool test rules: every alert has a case where it fires, and all cases pass', async () => {
    const tests = parse(readFileSync(join(dir, 'alerts.promtool.yaml'), 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] };
    const firing = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => (a.exp_alerts ?? []).length > 0).map((a) => a.alertname)));
    expect([...firing].sort()).toEqual(rules.filter((r) => r.alert).map((r) => r.alert!).sort());
    const r = await promtool(['test', 'rules', 'alerts.promtool.yaml'], dir);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/SUCCESS/);
  });
});

/** Metric families of a Prometheus text exposition, as the sample names a query can use. */
function exportedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m;
    if (type === 'histogram') for (const s of ['_bucket', '_count', '_sum']) out.add(name! + s);
    else if (type === 'summary') for (const s of ['', '_count', '_sum']) out.add(name! + s);
    else out.add(name!);
  }
  return out;
}

function start(args: string[], event: string): Promise<Record<string, unknown>> {
  const p = spawn(NODE24, [BIN, ...args], { cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  let out = '';
  return new Promise((resolve, reject) => {
    for (const s of [p.stdout!, p.stderr!]) {
      createInterface({ input: s }).on('line', (l) => {
        out += l + '\n';
        try {
          const j = JSON.parse(l) as Record<string, unknown>;
          if (j.event === event) resolve(j);
        } catch {
          /* not a log line */
        }
      });
    }
    p.once('exit', (c) => reject(new Error(`castellan ${args[0]} exited ${c}: ${out}`)));
  });
}

describe('every metric the alerts and the dashboard use is exported by a running component', () => {
  const scraped = new Map<string, Set<string>>();

  beforeAll(async () => {
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const data = join(tmp.path, 'ca');
    const srv = await start(['server', '--data-dir', data, '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer], 'server.listening');
    const agentDir = join(tmp.path, 'agent');
    mkdirSync(agentDir, { mode: 0o700 });
    writeFileSync(join(agentDir, 'token'), await issuer.mint({ namespace: 'default', serviceAccount: 'web' }), { mode: 0o600 });
    const [agent, authz] = await Promise.all([
      start(['agent', '--ca-address', String(srv.grpc).replace('127.0.0.1', 'localhost'), '--ca-root-cert', join(data, 'root-cert.pem'), '--token-file', join(agentDir, 'token'), '--sds-socket', join(agentDir, 'sds.sock'), '--http-listen', '127.0.0.1:0'], 'agent.started'),
      start(['authz', 'serve', '--policies', join(root, 'deploy/examples/authz/policies'), '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'], 'authz.listening'),
    ]);
    for (const [name, addr] of [['server', srv.http], ['agent', agent.http], ['authz serve', authz.http]] as const) {
      const r = await fetch(`http://${String(addr)}/metrics`);
      expect(r.status, name).toBe(200);
      scraped.set(name, exportedNames(await r.text()));
    }
  }, 90_000);

  it('each component exports its own families (the scrape is real)', () => {
    expect(scraped.get('server')).toContain('citadel_server_csr_count');
    expect(scraped.get('agent')).toContain('castellan_agent_ready');
    expect(scraped.get('authz serve')).toContain('castellan_authz_decisions_total');
  });

  const used = new Map<string, string[]>();
  for (const r of rules) for (const n of metricNames(r.expr)) used.set(n, [...(used.get(n) ?? []), `alert ${r.alert}`]);
  for (const p of dashboard.panels) for (const t of p.targets ?? []) for (const n of metricNames(t.expr)) used.set(n, [...(used.get(n) ?? []), `panel "${p.title}"`]);
  for (const v of dashboard.templating.list) {
    const m = /^label_values\((\w+),/.exec(v.definition ?? '');
    if (m) used.set(m[1]!, [...(used.get(m[1]!) ?? []), `variable $${v.name}`]);
  }

  it('finds the metric names used', () => {
    expect(used.size).toBeGreaterThan(25);
  });

  it.each([...used.keys()].sort())('%s is exported', (name) => {
    const by = [...scraped].filter(([, s]) => s.has(name)).map(([c]) => c);
    expect(by, `${name} (used by ${used.get(name)!.join(', ')}) is exported by none of server, agent, authz serve`).not.toEqual([]);
  });
});
