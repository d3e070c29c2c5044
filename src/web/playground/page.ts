/** The policy playground's HTML and stylesheet (served as they are; the script is bundled from app.ts). */
import { BASE_CSS } from '../style.ts';

export const PLAYGROUND_CSS = `${BASE_CSS}
.grid { display: grid; grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr) minmax(0, 1.15fr); gap: 14px; align-items: start; }
.editor { display: flex; border: 1px solid var(--line); border-radius: 4px; background: #fbfcfd; height: 470px; overflow: hidden; }
.gutter { width: 42px; flex: none; overflow: hidden; padding: 6px 0; margin: 0; background: #f0f2f5; color: #97a0ad; text-align: right; user-select: none; }
.gutter .ln { padding-right: 6px; font-family: var(--mono); font-size: 12.5px; line-height: 18px; height: 18px; }
.gutter .ln.error { background: var(--deny); color: #fff; font-weight: 600; }
.gutter .ln.warning { background: var(--warn-bg); color: var(--warn); }
.editor textarea { flex: 1; border: 0; resize: none; padding: 6px 8px; line-height: 18px; background: transparent; outline: none; white-space: pre; overflow: auto; tab-size: 2; }
textarea.plain { width: 100%; border: 1px solid var(--line); border-radius: 4px; padding: 6px 8px; line-height: 18px; resize: vertical; background: #fbfcfd; white-space: pre; }
ul.issues { list-style: none; margin: 8px 0 0; padding: 0; max-height: 150px; overflow: auto; }
.issue { padding: 3px 6px; border-left: 3px solid; margin-bottom: 3px; font-size: 12.5px; white-space: pre-wrap; }
.issue.error { border-color: var(--deny); background: var(--deny-bg); }
.issue.warning { border-color: var(--warn); background: var(--warn-bg); }
.issue.note { border-color: #8895a7; background: #eef1f5; }
.issue .sev { font-weight: 600; text-transform: uppercase; font-size: 11px; }
.issue a.line { color: var(--accent); font-family: var(--mono); }
form.req { display: grid; grid-template-columns: 92px minmax(0, 1fr); gap: 4px 8px; align-items: center; margin-bottom: 8px; font-size: 12.5px; }
form.req label { color: var(--muted); }
form.req .pair { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 4px; }
form.req input, form.req textarea { font: 12.5px var(--mono); padding: 3px 5px; border: 1px solid var(--line); border-radius: 3px; width: 100%; }
form.req textarea { height: 38px; resize: vertical; }
form.req .group { grid-column: 1 / -1; font-weight: 600; font-size: 11.5px; text-transform: uppercase; color: var(--muted); margin-top: 4px; letter-spacing: .04em; }
.verdict { font-size: 34px; font-weight: 700; letter-spacing: .03em; padding: 6px 14px; border-radius: 6px; display: inline-block; }
.verdict.allow { color: var(--allow); background: var(--allow-bg); }
.verdict.deny { color: var(--deny); background: var(--deny-bg); }
.verdict.none { color: var(--muted); background: #eef1f5; }
#decided-by { margin: 8px 0 10px; font-weight: 500; }
#trace td { font-size: 12.5px; }
#trace { table-layout: fixed; }
#trace th:nth-child(1) { width: 27%; } #trace th:nth-child(2) { width: 15%; } #trace th:nth-child(3) { width: 19%; }
#trace td:nth-child(1), #trace td.why { overflow-wrap: anywhere; }
#trace td.why { font-family: var(--mono); font-size: 11.5px; white-space: pre-wrap; color: #3c4656; }
#trace tr.decides td { background: #eaf1ff; font-weight: 600; }
#trace tr.unselected td { color: #98a1ad; }
details { margin-top: 10px; }
details pre { background: #f0f2f5; padding: 8px; border-radius: 4px; overflow: auto; font-size: 11.5px; }
.suite { margin-top: 14px; display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px; }
#suite { height: 220px; }
#suite-results tr.pass td:first-child { color: var(--allow); font-weight: 700; }
#suite-results tr.fail td:first-child { color: var(--deny); font-weight: 700; }
#suite-summary.pass { color: var(--allow); font-weight: 600; }
#suite-summary.fail { color: var(--deny); font-weight: 600; white-space: pre-wrap; }
footer { padding: 4px 18px 16px; color: var(--muted); font-size: 12px; }
footer code { background: #e9ecf0; padding: 1px 4px; border-radius: 3px; }
@media (max-width: 1100px) { .grid, .suite { grid-template-columns: 1fr; } }
`;

const opt = (v: string, label = v): string => `<option value="${v}">${label}</option>`;

export function playgroundHtml(pathNormalizations: readonly string[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Castellan · policy playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/playground.css"><script type="module" src="/playground.js"></script></head>
<body>
<header><h1>Castellan · policy playground</h1><span class="sub" id="status">loading…</span><span class="spacer"></span>
<label>root namespace <input id="opt-root" size="12" value="istio-system"></label>
<label>path normalization <select id="opt-pathnorm">${pathNormalizations.map((p) => opt(p)).join('')}</select></label>
<label>CUSTOM provider answers <select id="opt-custom">${opt('deny')}${opt('allow')}</select></label>
<button id="export" class="ghost" title="policies.yaml, request.yaml and suite.test.yaml, as authz check and authz test read them">Export files</button>
</header>
<main>
<div class="grid">
<section class="panel" id="policies-pane"><h2>Policies <span class="count" id="policy-count"></span></h2>
<div class="editor"><div class="gutter" id="policies-gutter"></div><textarea id="policies" spellcheck="false" autocomplete="off" aria-label="AuthorizationPolicy YAML (several documents)"></textarea></div>
<ul class="issues" id="policy-issues"></ul></section>
<section class="panel" id="request-pane"><h2>Request</h2>
<form class="req" id="request-form" autocomplete="off">
<div class="group">source</div>
<label for="f-ns">principal</label><div class="pair"><input id="f-td" placeholder="trust domain" title="trust domain"><input id="f-ns" placeholder="namespace" title="source namespace"><input id="f-sa" placeholder="service account" title="source service account"></div>
<label for="f-ip">IP</label><input id="f-ip" placeholder="10.1.2.3">
<div class="group">destination</div>
<label for="f-wns">namespace</label><input id="f-wns" placeholder="foo">
<label for="f-labels">labels</label><input id="f-labels" placeholder="app=httpbin, version=v1">
<label for="f-port">port</label><input id="f-port" placeholder="8000">
<div class="group">HTTP request</div>
<label for="f-method">method</label><input id="f-method" placeholder="GET">
<label for="f-host">host</label><input id="f-host" placeholder="httpbin.foo">
<label for="f-path">path</label><input id="f-path" placeholder="/status/200">
<label for="f-headers">headers</label><textarea id="f-headers" placeholder="x-token: abc"></textarea>
<label for="f-claims">JWT claims</label><textarea id="f-claims" placeholder="{iss: https://issuer.example.com, sub: alice, groups: [users]}"></textarea>
</form>
<textarea id="request" class="plain" rows="12" spellcheck="false" aria-label="request document (YAML)"></textarea>
<ul class="issues" id="request-issues"></ul></section>
<section class="panel" id="decision-pane"><h2>Decision</h2>
<div id="decision" class="verdict none">—</div>
<div id="decided-by"></div>
<table id="trace"><thead><tr><th>policy</th><th>action</th><th>result</th><th>first condition that failed</th></tr></thead><tbody id="trace-body"></tbody></table>
<details><summary>as <code>castellan authz check --explain</code> prints it</summary><pre id="explain"></pre></details>
</section>
</div>
<div class="suite">
<section class="panel"><h2>Test suite <span class="count">(the <code>castellan authz test</code> format; a path under <code>policies:</code> stands for the policies above)</span></h2>
<textarea id="suite" class="plain" spellcheck="false" aria-label="test suite (YAML)"></textarea>
<p><button id="run-suite">Run suite</button></p></section>
<section class="panel"><h2>Suite results <span class="count" id="suite-summary"></span></h2>
<table id="suite-results"><thead><tr><th></th><th>case</th><th>result</th></tr></thead><tbody id="suite-body"></tbody></table></section>
</div>
</main>
<footer>Decided in this browser by Castellan's authorization engine (the code of <code>castellan authz check</code> and the ext_authz server); nothing is sent anywhere.
Exported files run as they are: <code>castellan authz check --policies policies.yaml --request request.yaml --explain</code>, <code>castellan authz test suite.test.yaml</code>.</footer>
</body></html>
`;
}

/** What the page shows when no --policies/--request/--suite are given. */
export const EXAMPLE = {
  policies: `# Edit me: the decision on the right follows as you type.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: foo
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-readers
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/bar/sa/sleep"]
    to:
    - operation:
        methods: ["GET", "HEAD"]
        paths: ["/status/*", "/headers"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["8000"]
        paths: ["/admin", "/admin/*"]
`,
  request: `workload: {namespace: foo, labels: {app: httpbin}}
source: {principal: cluster.local/ns/bar/sa/sleep, ip: 10.1.2.3}
destination: {port: 8000}
request:
  method: GET
  host: httpbin.foo
  path: /status/200
`,
  suite: `name: httpbin
policies:
  - ./policies.yaml
cases:
  - name: sleep reads a status page
    request:
      workload: {namespace: foo, labels: {app: httpbin}}
      source: {principal: cluster.local/ns/bar/sa/sleep}
      destination: {port: 8000}
      request: {method: GET, path: /status/418}
    expect: ALLOW
    policy: foo/httpbin-readers
  - name: sleep may not write
    request:
      workload: {namespace: foo, labels: {app: httpbin}}
      source: {principal: cluster.local/ns/bar/sa/sleep}
      destination: {port: 8000}
      request: {method: POST, path: /status/418}
    expect: DENY
  - name: nobody reaches the admin pages
    request:
      workload: {namespace: foo, labels: {app: httpbin}}
      source: {principal: cluster.local/ns/bar/sa/sleep}
      destination: {port: 8000}
      request: {method: GET, path: /admin/config}
    expect: DENY
    policy: foo/deny-admin
`,
};
