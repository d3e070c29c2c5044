/**
 * The policy playground's page script. It runs the authorization engine of
 * src/authz/ itself (bundled by esbuild when `castellan authz playground`
 * starts), so every keystroke is decided in the browser with the very code
 * `castellan authz check`, `authz test` and the ext_authz server run: no
 * server round trip, nothing leaves the machine.
 */
import { isMap, isSeq, parseAllDocuments, parseDocument, stringify } from 'yaml';
import { AuthzEngine, type CustomDecision } from '../../authz/engine.ts';
import { formatDecision } from '../../authz/explain.ts';
import { assertNoErrors, collectPolicyText, formatIssue, type FileIssue } from '../../authz/loader.ts';
import type { Decision } from '../../authz/model.ts';
import { PATH_NORMALIZATIONS, type PathNormalization } from '../../authz/path.ts';
import { parseRequestText, parseSingleDocument } from '../../authz/request.ts';
import { runSuite } from '../../authz/suite.ts';

/** File names of the export; the suite refers to the policies by this name. */
export const POLICIES_FILE = 'policies.yaml';
const REQUEST_FILE = 'request.yaml';
const SUITE_FILE = 'suite.test.yaml';

interface Initial {
  policies: string;
  request: string;
  suite: string;
  rootNamespace: string;
  pathNormalization: string;
  customDecision: string;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page is missing #${id}`);
  return el as T;
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

// ---- editors with a line gutter that marks the lines of errors -------------

function renderGutter(area: HTMLTextAreaElement, gutter: HTMLElement, marks: ReadonlyMap<number, string>): void {
  const n = area.value.split('\n').length;
  gutter.replaceChildren(
    ...Array.from({ length: n }, (_, i) => {
      const line = i + 1;
      const m = marks.get(line);
      return el('div', m ? { class: `ln ${m}`, 'data-line': String(line) } : { class: 'ln', 'data-line': String(line) }, String(line));
    }),
  );
  gutter.scrollTop = area.scrollTop;
}

function issueItem(i: FileIssue, onJump: (line: number) => void): HTMLLIElement {
  const li = el('li', { class: `issue ${i.severity}` });
  const where = i.line ? el('a', { href: '#', class: 'line', 'data-line': String(i.line) }, `line ${i.line}`) : el('span', { class: 'line' }, 'file');
  if (i.line) where.addEventListener('click', (ev) => (ev.preventDefault(), onJump(i.line!)));
  li.append(el('span', { class: 'sev' }, i.severity), ' ', where, ' ', el('span', { class: 'msg' }, formatIssue({ ...i, file: POLICIES_FILE }).replace(/^[^:]+(:\d+)?:\s*/, '')));
  return li;
}

function jumpTo(area: HTMLTextAreaElement, line: number): void {
  const lines = area.value.split('\n');
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
  const lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
  area.scrollTop = Math.max(0, (line - 3) * lh);
}

// ---- the request form ------------------------------------------------------

const FORM_FIELDS = ['f-td', 'f-ns', 'f-sa', 'f-ip', 'f-wns', 'f-labels', 'f-port', 'f-method', 'f-host', 'f-path', 'f-headers', 'f-claims'] as const;
type FormField = (typeof FORM_FIELDS)[number];

function field(id: FormField): HTMLInputElement | HTMLTextAreaElement {
  return $<HTMLInputElement>(id);
}

/** Form → request document (the YAML text is the source of truth; the form writes it). */
function formToDocument(): Record<string, unknown> {
  const v = (id: FormField): string => field(id).value.trim();
  const labels: Record<string, string> = {};
  for (const kv of v('f-labels').split(/[,\n]/)) {
    const i = kv.indexOf('=');
    if (i > 0) labels[kv.slice(0, i).trim()] = kv.slice(i + 1).trim();
  }
  const doc: Record<string, unknown> = { workload: { namespace: v('f-wns'), labels } };
  const source: Record<string, unknown> = {};
  if (v('f-ns') && v('f-sa')) source.principal = `${v('f-td') || 'cluster.local'}/ns/${v('f-ns')}/sa/${v('f-sa')}`;
  if (v('f-ip')) source.ip = v('f-ip');
  doc.source = source;
  if (v('f-port')) doc.destination = { port: /^\d+$/.test(v('f-port')) ? Number(v('f-port')) : v('f-port') };
  if (v('f-method') || v('f-path') || v('f-host')) {
    const req: Record<string, unknown> = {};
    if (v('f-method')) req.method = v('f-method');
    if (v('f-host')) req.host = v('f-host');
    if (v('f-path')) req.path = v('f-path');
    const headers: Record<string, string> = {};
    for (const line of v('f-headers').split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    if (Object.keys(headers).length) req.headers = headers;
    if (v('f-claims')) {
      const claims: unknown = parseDocument(v('f-claims')).toJS();
      req.auth = { claims };
    }
    doc.request = req;
  }
  return doc;
}

/** Request document → form (when the YAML parses); fields it cannot show stay as they are in the YAML. */
function documentToForm(d: Record<string, unknown>): void {
  const obj = (x: unknown): Record<string, unknown> => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Record<string, unknown>) : {});
  const set = (id: FormField, s: unknown): void => {
    if (document.activeElement !== field(id)) field(id).value = s === undefined || s === null ? '' : String(s);
  };
  const src = obj(d.source);
  const m = /^(?:spiffe:\/\/)?([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(String(src.principal ?? ''));
  set('f-td', m?.[1] ?? '');
  set('f-ns', m?.[2] ?? '');
  set('f-sa', m?.[3] ?? '');
  set('f-ip', src.ip);
  const w = obj(d.workload);
  set('f-wns', w.namespace);
  set('f-labels', Object.entries(obj(w.labels)).map(([k, x]) => `${k}=${String(x)}`).join(', '));
  set('f-port', obj(d.destination).port);
  const r = obj(d.request);
  set('f-method', r.method);
  set('f-host', r.host);
  set('f-path', r.path);
  set('f-headers', Object.entries(obj(r.headers)).map(([k, x]) => `${k}: ${Array.isArray(x) ? x.join(', ') : String(x)}`).join('\n'));
  const claims = obj(obj(r.auth).claims);
  set('f-claims', Object.keys(claims).length ? stringify(claims, { collectionStyle: 'flow' }).trim() : '');
}

// ---- evaluation ------------------------------------------------------------

interface Options {
  rootNamespace: string;
  pathNormalization: PathNormalization;
  customDecision: CustomDecision;
}

function options(): Options {
  const pn = $<HTMLSelectElement>('opt-pathnorm').value as PathNormalization;
  return {
    rootNamespace: $<HTMLInputElement>('opt-root').value.trim() || 'istio-system',
    pathNormalization: PATH_NORMALIZATIONS.includes(pn) ? pn : 'base',
    customDecision: $<HTMLSelectElement>('opt-custom').value === 'allow' ? 'allow' : 'deny',
  };
}

function renderDecision(d: Decision): void {
  const v = $('decision');
  v.textContent = d.decision;
  v.className = `verdict ${d.decision.toLowerCase()}`;
  $('decided-by').textContent = formatDecision(d).split('\n')[0] ?? '';
  const rows = d.trace.map((t) => {
    const result = !t.selected ? 'not selected' : t.matched ? `matched rule ${t.rule}` : 'no match';
    const why = !t.selected ? (t.note ?? '') : t.matched ? (t.note ?? '') : [t.note, ...(t.rules ?? []).map((r) => `${r.index >= 0 ? `rule ${r.index}` : 'policy'}: ${r.failed}`)].filter(Boolean).join('\n');
    const cls = t.policy === d.policy ? 'decides' : !t.selected ? 'unselected' : '';
    return el('tr', { class: cls, 'data-policy': t.policy }, el('td', {}, t.policy + (t.dryRun ? ' [dry-run]' : '')), el('td', {}, t.action), el('td', {}, result + (t.policy === d.policy ? ' ← decides' : '')), el('td', { class: 'why' }, why));
  });
  $('trace-body').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '4' }, 'no policy in scope of this workload'))]));
  $('explain').textContent = formatDecision(d, { explain: true });
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function evaluate(): void {
  const area = $<HTMLTextAreaElement>('policies');
  const loaded = collectPolicyText(area.value, POLICIES_FILE);
  const marks = new Map<number, string>();
  for (const i of loaded.issues) if (i.line && (i.severity === 'error' || !marks.has(i.line))) marks.set(i.line, i.severity);
  renderGutter(area, $('policies-gutter'), marks);
  $('policy-issues').replaceChildren(...loaded.issues.map((i) => issueItem(i, (line) => jumpTo(area, line))));
  const errors = loaded.issues.filter((i) => i.severity === 'error').length;
  $('policy-count').textContent = `${loaded.policies.length} ${loaded.policies.length === 1 ? 'policy' : 'policies'}${errors ? `, ${errors} error${errors > 1 ? 's' : ''}` : ''}`;

  const status = $('status');
  const fail = (msg: string): void => {
    $('decision').textContent = '—';
    $('decision').className = 'verdict none';
    $('decided-by').textContent = msg;
    $('trace-body').replaceChildren();
    $('explain').textContent = '';
  };
  let request;
  const reqArea = $<HTMLTextAreaElement>('request');
  try {
    request = parseRequestText(reqArea.value, REQUEST_FILE);
    $('request-issues').replaceChildren();
    try {
      const doc = parseSingleDocument(reqArea.value, REQUEST_FILE, 'authz.invalid_request');
      if (typeof doc === 'object' && doc !== null) documentToForm(doc as Record<string, unknown>);
    } catch {
      /* the form keeps its values */
    }
  } catch (e) {
    $('request-issues').replaceChildren(...message(e).split('\n').map((l) => el('li', { class: 'issue error' }, l.trim())));
    fail('the request is invalid (see below it)');
    status.textContent = 'invalid request';
    return;
  }
  if (errors > 0) {
    fail('the policies have errors (see below them): authz check would refuse them');
    status.textContent = 'invalid policies';
    return;
  }
  try {
    assertNoErrors(loaded);
    const o = options();
    const engine = AuthzEngine.compile(loaded.policies, { rootNamespace: o.rootNamespace, pathNormalization: o.pathNormalization });
    renderDecision(engine.evaluate(request, { explain: true, customDecision: o.customDecision }));
    status.textContent = `decided in this browser (${loaded.policies.length} policies)`;
  } catch (e) {
    $('policy-issues').append(el('li', { class: 'issue error' }, message(e)));
    fail(message(e));
    status.textContent = 'invalid policies';
  }
}

// ---- suites ----------------------------------------------------------------

/** The suite as `authz test` reads it, with path entries of `policies` standing for the editor's policies. */
function suiteWithEditorPolicies(text: string): unknown {
  const doc = parseSingleDocument(text, SUITE_FILE, 'authz.invalid_suite');
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return doc;
  const d = doc as Record<string, unknown>;
  if (!Array.isArray(d.policies)) return doc;
  const inline: unknown[] = [];
  let editor = false;
  for (const p of d.policies) {
    if (typeof p === 'string') editor = true;
    else inline.push(p);
  }
  if (editor) {
    for (const x of parseAllDocuments($<HTMLTextAreaElement>('policies').value)) {
      if ('errors' in x && x.errors.length === 0) {
        const v: unknown = x.toJS();
        if (v !== null && v !== undefined) inline.push(v);
      }
    }
  }
  return { ...d, policies: inline };
}

function runSuiteNow(): void {
  const out = $('suite-body');
  const summary = $('suite-summary');
  try {
    const o = options();
    const r = runSuite(suiteWithEditorPolicies($<HTMLTextAreaElement>('suite').value), SUITE_FILE, o);
    const failed = r.cases.filter((c) => !c.passed).length;
    out.replaceChildren(...r.cases.map((c) => el('tr', { class: c.passed ? 'pass' : 'fail' }, el('td', {}, c.passed ? 'PASS' : 'FAIL'), el('td', {}, c.name), el('td', {}, c.message))));
    summary.textContent = `${r.cases.length - failed} passed, ${failed} failed`;
    summary.className = failed ? 'fail' : 'pass';
  } catch (e) {
    out.replaceChildren();
    summary.textContent = message(e);
    summary.className = 'fail';
  }
}

// ---- export ----------------------------------------------------------------

/** The suite as a file next to policies.yaml: its path entries become "./policies.yaml". */
export function exportedSuite(text: string): string {
  const doc = parseDocument(text);
  const list = doc.get('policies', true);
  if (doc.errors.length > 0 || !isSeq(list)) return text;
  const items = list.items.filter((n) => isMap(n));
  const hadPath = items.length !== list.items.length;
  if (!hadPath) return text;
  list.items = [doc.createNode(`./${POLICIES_FILE}`), ...items];
  return doc.toString();
}

function download(name: string, text: string): void {
  const a = el('a', { href: URL.createObjectURL(new Blob([text], { type: 'application/yaml' })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function exportAll(): void {
  download(POLICIES_FILE, $<HTMLTextAreaElement>('policies').value);
  download(REQUEST_FILE, $<HTMLTextAreaElement>('request').value);
  if ($<HTMLTextAreaElement>('suite').value.trim()) download(SUITE_FILE, exportedSuite($<HTMLTextAreaElement>('suite').value));
}

// ---- wiring ----------------------------------------------------------------

function debounce(fn: () => void, ms: number): () => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

async function main(): Promise<void> {
  // the access token of the address `castellan authz playground` printed (src/web/http.ts)
  const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? '';
  const r = await fetch('/initial.json', { headers: { authorization: `Bearer ${token}` } });
  if (!r.ok) {
    $('status').textContent = ((await r.json()) as { error: string }).error;
    return;
  }
  const init = (await r.json()) as Initial;
  $<HTMLTextAreaElement>('policies').value = init.policies;
  $<HTMLTextAreaElement>('request').value = init.request;
  $<HTMLTextAreaElement>('suite').value = init.suite;
  $<HTMLInputElement>('opt-root').value = init.rootNamespace;
  $<HTMLSelectElement>('opt-pathnorm').value = init.pathNormalization;
  $<HTMLSelectElement>('opt-custom').value = init.customDecision;
  const later = debounce(evaluate, 60);
  for (const id of ['policies', 'request', 'opt-root']) $(id).addEventListener('input', later);
  for (const id of ['opt-pathnorm', 'opt-custom']) $(id).addEventListener('change', evaluate);
  const policies = $<HTMLTextAreaElement>('policies');
  policies.addEventListener('scroll', () => ($('policies-gutter').scrollTop = policies.scrollTop));
  for (const id of FORM_FIELDS) {
    field(id).addEventListener('input', () => {
      try {
        $<HTMLTextAreaElement>('request').value = stringify(formToDocument());
        later();
      } catch (e) {
        $('request-issues').replaceChildren(el('li', { class: 'issue error' }, `${id}: ${message(e)}`));
      }
    });
  }
  $('run-suite').addEventListener('click', runSuiteNow);
  $('export').addEventListener('click', exportAll);
  evaluate();
  if (init.suite.trim()) runSuiteNow();
  document.body.dataset.ready = 'true';
}

void main();
