/**
 * The CA console's page script: polls /api/status (the admin API's Status
 * through `castellan console`) and draws every authority on a timeline, the
 * trust bundle, leaves, issuance and refusal rates, the next automatic step
 * and, per authority, the `castellan ca` command that moves it on. Read-only:
 * it shows commands, it never runs them.
 */
import type { CaCounters, ConsoleAuthority, ConsoleStatus } from './model.ts';

const $ = (id: string): HTMLElement => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e;
};
const SVG = 'http://www.w3.org/2000/svg';

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}
function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

const ms = (t: string): number | undefined => (t ? Date.parse(t) : undefined);
const short = (t: string): string => (t ? t.replace('T', ' ').replace(/\.\d{3}Z$/, 'Z') : '—');

function relative(t: number, now: number): string {
  const d = t - now;
  const a = Math.abs(d);
  const unit = a < 90_000 ? `${Math.round(a / 1000)} s` : a < 5_400_000 ? `${Math.round(a / 60_000)} min` : a < 172_800_000 ? `${Math.round(a / 3_600_000)} h` : a < 63_072_000_000 ? `${Math.round(a / 86_400_000)} d` : `${(a / 31_557_600_000).toFixed(1)} y`;
  return d >= 0 ? `in ${unit}` : `${unit} ago`;
}

// ---- what to do next, per state ------------------------------------------------

interface Step {
  command: string;
  note: string;
}

function caCommand(sub: string, s: ConsoleStatus, id?: string): string {
  return `castellan ca ${sub}${id ? ` ${id}` : ''} --admin-socket ${s.adminSocket}`;
}

/** The `castellan ca` commands that move an authority on from its state, and when they are safe. */
function nextSteps(a: ConsoleAuthority, s: ConsoleStatus): Step[] {
  const now = s.now;
  const hasPrepared = s.authorities.some((x) => x.state === 'prepared');
  switch (a.state) {
    case 'prepared': {
      const safe = (ms(a.preparedAt) ?? now) + s.propagationSeconds * 1000;
      return [{ command: caCommand('activate', s, a.id), note: safe <= now ? 'safe now: it has been in the trust bundle for the propagation time' : `safe ${relative(safe, now)} (${short(new Date(safe).toISOString())}), once every workload has it in its trust bundle; before that the guard refuses without --force` }];
    }
    case 'active':
      if (hasPrepared) return [{ command: '', note: 'signs every new leaf; its successor is prepared (see above)' }];
      return a.source === 'plugin'
        ? [{ command: caCommand('import --cacerts-dir DIR', s), note: 'bring in the next intermediate (Istio cacerts layout) before this one expires' }]
        : [{ command: caCommand('prepare', s), note: 'start a rotation: the next root enters the trust bundle, signing nothing yet' }];
    case 'old':
    case 'tainted': {
      const safe = ms(a.retireSafeAt) ?? now;
      const steps: Step[] = [{ command: caCommand('retire', s, a.id), note: safe <= now ? 'safe now: every leaf it signed has expired' : `safe ${relative(safe, now)} (${short(a.retireSafeAt)}), when the last leaf it signed expires` }];
      if (a.state === 'old') steps.push({ command: caCommand('taint', s, a.id), note: 'if its key may be compromised: agents re-issue what it signed at once' });
      return steps;
    }
    default:
      return [];
  }
}

// ---- the timeline ----------------------------------------------------------------

type Window = 'validity' | 'rotation' | 'day';
let windowMode: Window = 'validity';

const EVENTS: [keyof ConsoleAuthority, string][] = [
  ['preparedAt', 'prepared'],
  ['activatedAt', 'activated'],
  ['deactivatedAt', 'deactivated'],
  ['taintedAt', 'tainted'],
  ['retiredAt', 'retired'],
];

function timeline(s: ConsoleStatus): SVGElement {
  const shown = s.authorities;
  const width = 1100;
  const left = 150;
  const right = 20;
  const rowH = 46;
  const top = 28;
  const height = top + rowH * Math.max(1, shown.length) + 10;
  let from: number;
  let to: number;
  if (windowMode === 'validity') {
    from = Math.min(s.now, ...shown.map((a) => Date.parse(a.notBefore)));
    to = Math.max(s.now, ...shown.map((a) => Date.parse(a.notAfter)));
    const pad = (to - from) * 0.02;
    from -= pad;
    to += pad;
  } else if (windowMode === 'rotation') {
    // around the recent steps: the events and safe times of the authorities still trusted
    const times = shown.filter((a) => a.state !== 'retired').flatMap((a) => [...EVENTS.map(([k]) => ms(a[k] as string)), a.state === 'prepared' ? (ms(a.preparedAt) ?? s.now) + s.propagationSeconds * 1000 : undefined, a.state === 'old' || a.state === 'tainted' ? ms(a.retireSafeAt) : undefined]);
    const near = times.filter((t): t is number => t !== undefined && Math.abs(t - s.now) < 30 * 86_400_000);
    from = Math.min(s.now - 60_000, ...near);
    to = Math.max(s.now + 60_000, ...near);
    const pad = (to - from) * 0.08;
    from -= pad;
    to += pad;
  } else {
    from = s.now - 86_400_000 * 0.75;
    to = s.now + 86_400_000 * 0.25;
  }
  const x = (t: number): number => left + ((Math.min(Math.max(t, from), to) - from) / (to - from)) * (width - left - right);
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'timeline', role: 'img', 'aria-label': 'authorities on a timeline' });
  // axis: 6 ticks
  for (let i = 0; i <= 5; i++) {
    const t = from + ((to - from) * i) / 5;
    const tx = x(t);
    root.append(svg('line', { x1: tx, x2: tx, y1: top - 6, y2: height - 6, class: 'tick' }));
    const label = windowMode === 'validity' ? new Date(t).toISOString().slice(0, 10) : to - from < 600_000 ? new Date(t).toISOString().slice(11, 19) + 'Z' : new Date(t).toISOString().slice(11, 16) + 'Z';
    root.append(svg('text', { x: tx, y: 14, class: 'tick-label', 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, label));
  }
  shown.forEach((a, i) => {
    const y = top + i * rowH;
    const g = svg('g', { class: `row state-${a.state}`, 'data-id': a.id, 'data-state': a.state });
    g.append(svg('text', { x: 8, y: y + 17, class: 'row-id' }, a.id.slice(0, 12)));
    g.append(svg('text', { x: 8, y: y + 32, class: 'row-state' }, a.state.toUpperCase()));
    const nb = Date.parse(a.notBefore);
    const na = Date.parse(a.notAfter);
    const end = ms(a.retiredAt) ?? na;
    g.append(svg('rect', { x: x(nb), y: y + 8, width: Math.max(2, x(end) - x(nb)), height: 22, rx: 3, class: 'bar' }));
    const act = ms(a.activatedAt);
    if (act !== undefined) g.append(svg('rect', { x: x(act), y: y + 8, width: Math.max(2, x(ms(a.deactivatedAt) ?? ms(a.retiredAt) ?? na) - x(act)), height: 22, rx: 3, class: 'signing' }));
    for (const [k, name] of EVENTS) {
      const t = ms(a[k] as string);
      if (t === undefined) continue;
      const m = svg('g', { class: `event ev-${name}` });
      m.append(svg('path', { d: `M ${x(t)} ${y + 5} l 5 -5 l -10 0 z`, class: 'mark' }));
      m.append(svg('title', {}, `${name} ${short(a[k] as string)}`));
      g.append(m);
    }
    if (a.state === 'old' || a.state === 'tainted' || a.state === 'prepared') {
      const safe = a.state === 'prepared' ? (ms(a.preparedAt) ?? s.now) + s.propagationSeconds * 1000 : ms(a.retireSafeAt);
      if (safe !== undefined) {
        const m = svg('g', { class: `event ev-safe` });
        m.append(svg('line', { x1: x(safe), x2: x(safe), y1: y + 4, y2: y + 34, class: 'safe' }));
        m.append(svg('title', {}, `${a.state === 'prepared' ? 'activate' : 'retire'} safe at ${short(new Date(safe).toISOString())}`));
        g.append(m);
      }
    }
    root.append(g);
  });
  const nx = x(s.now);
  root.append(svg('line', { x1: nx, x2: nx, y1: top - 8, y2: height - 4, class: 'now' }));
  root.append(svg('text', { x: nx + 3, y: height - 6, class: 'now-label' }, 'now'));
  return root;
}

// ---- panels --------------------------------------------------------------------------

function authorityCard(a: ConsoleAuthority, s: ConsoleStatus): HTMLElement {
  const hist = EVENTS.filter(([k]) => a[k]).map(([k, n]) => `${n} ${short(a[k] as string)}`).join(' · ') || '—';
  const steps = nextSteps(a, s);
  return el(
    'div',
    { class: `card state-${a.state}`, 'data-id': a.id, 'data-state': a.state },
    el('div', { class: 'card-head' }, el('span', { class: `badge ${a.state}` }, a.state), el('code', { class: 'id' }, a.id), el('span', { class: 'muted' }, `${a.source}, ${a.keyType}`)),
    el('div', { class: 'kv' }, 'subject', el('span', {}, a.subject || '—')),
    el('div', { class: 'kv' }, 'valid', el('span', {}, `${short(a.notBefore)} → ${short(a.notAfter)} (expires ${relative(Date.parse(a.notAfter), s.now)})`)),
    el('div', { class: 'kv' }, 'leaves', el('span', { class: 'leaves' }, `${a.issued} issued (all replicas), ${a.liveLeaves} live (this server), last expires ${short(a.lastLeafNotAfter)}`)),
    el('div', { class: 'kv' }, 'history', el('span', {}, hist)),
    ...(a.state === 'old' || a.state === 'tainted' ? [el('div', { class: 'kv' }, 'retire safe', el('span', {}, `${short(a.retireSafeAt)} (${relative(Date.parse(a.retireSafeAt), s.now)})`))] : []),
    ...steps.map((st) => el('div', { class: 'step' }, st.command ? el('code', { class: 'cmd' }, st.command) : '', el('div', { class: 'muted' }, st.note))),
  );
}

function nextAuto(s: ConsoleStatus): string {
  const at = Date.parse(s.nextStepAt);
  const who = s.leader ? 'this replica rotates' : 'another replica rotates (this one does not)';
  if (!s.autoRotation) return `automatic rotation is off (--manual-rotation): every step is yours, with the commands below. ${s.nextStep ? `Due now by the thresholds: ${s.nextStep}${s.nextStepAuthorityId ? ` ${s.nextStepAuthorityId.slice(0, 12)}` : ''}.` : ''}`;
  if (s.nextStep) return `${s.nextStep}${s.nextStepAuthorityId ? ` ${s.nextStepAuthorityId.slice(0, 12)}` : ''} is due now (${who})`;
  return `nothing due; next check ${relative(at, s.now)} (${short(s.nextStepAt)}); ${who}`;
}

let previous: CaCounters | undefined;
/** The access token of the address `castellan console` printed (src/web/http.ts). */
const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? '';

function rates(s: ConsoleStatus): HTMLElement[] {
  const m = s.metrics;
  if (!m) return [el('p', { class: 'muted' }, s.metricsError ?? 'metrics off (--metrics-url off)')];
  const prev = previous && previous.at < m.at ? previous : undefined;
  previous = m;
  const dt = prev ? (m.at - prev.at) / 1000 : 0;
  const rate = (now: number, before: number | undefined): string => (prev && dt > 0 ? `${((now - (before ?? 0)) / dt).toFixed(2)}/s` : '…');
  const refusedTotal = Object.values(m.refusals).reduce((a, b) => a + b, 0);
  const prevRefused = prev ? Object.values(prev.refusals).reduce((a, b) => a + b, 0) : undefined;
  const rows = Object.entries(m.refusals).sort(([, a], [, b]) => b - a).map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', { class: 'num' }, String(v)), el('td', { class: 'num' }, rate(v, prev?.refusals[k]))));
  return [
    el('div', { class: 'stats' },
      el('div', { class: 'stat' }, el('span', { class: 'big', id: 'issue-rate' }, rate(m.issued, prev?.issued)), el('span', { class: 'muted' }, `issued (${m.issued} since start)`)),
      el('div', { class: 'stat' }, el('span', { class: 'big', id: 'refusal-rate' }, rate(refusedTotal, prevRefused)), el('span', { class: 'muted' }, `refused (${refusedTotal} since start)`)),
      el('div', { class: 'stat' }, el('span', { class: 'big' }, String(m.signerQueue)), el('span', { class: 'muted' }, 'in the signer queue')),
    ),
    rows.length ? el('table', { class: 'refusals' }, el('thead', {}, el('tr', {}, el('th', {}, 'refusals by reason'), el('th', { class: 'num' }, 'since start'), el('th', { class: 'num' }, 'rate'))), el('tbody', {}, ...rows)) : el('p', { class: 'muted' }, 'no refusal since the server started'),
  ];
}

function render(s: ConsoleStatus): void {
  $('summary').textContent = `trust domain ${s.trustDomain} · keyring ${s.keystore} (generation ${s.generation}) · propagation time ${s.propagationSeconds}s`;
  $('next-auto').textContent = nextAuto(s);
  $('timeline').replaceChildren(timeline(s));
  const order = ['prepared', 'active', 'old', 'tainted', 'retired'];
  const sorted = [...s.authorities].sort((a, b) => order.indexOf(a.state) - order.indexOf(b.state));
  $('authorities').replaceChildren(...sorted.map((a) => authorityCard(a, s)));
  $('bundle').replaceChildren(
    ...s.bundle.map((r) => {
      const a = s.authorities.find((x) => x.id === r.ski);
      return el('li', { 'data-ski': r.ski }, el('div', {}, el('strong', {}, r.subject), a ? el('span', { class: `badge ${a.state}` }, a.state) : ''), el('div', { class: 'muted' }, `SKI ${r.ski} · valid to ${short(r.notAfter)} · SHA-256 ${r.sha256.slice(0, 23)}…`), el('details', {}, el('summary', {}, 'PEM'), el('pre', {}, r.pem)));
    }),
  );
  $('bundle-count').textContent = `${s.bundle.length} root${s.bundle.length === 1 ? '' : 's'}`;
  $('rates').replaceChildren(...rates(s));
}

async function refresh(): Promise<void> {
  const status = $('conn');
  try {
    const r = await fetch('/api/status', { cache: 'no-store', headers: { authorization: `Bearer ${token}` } });
    const body = (await r.json()) as ConsoleStatus | { error: string };
    if ('error' in body) throw new Error(body.error);
    render(body);
    status.textContent = `live · updated ${new Date(body.now).toISOString().slice(11, 19)}Z`;
    status.className = 'ok';
    document.body.dataset.generation = String(body.generation);
  } catch (e) {
    status.textContent = `cannot read the CA: ${e instanceof Error ? e.message : String(e)}`;
    status.className = 'err';
  }
}

async function main(): Promise<void> {
  const every = Number(document.body.dataset.refreshMs) || 2000;
  for (const w of ['validity', 'rotation', 'day'] as const) {
    $(`win-${w}`).addEventListener('click', () => {
      windowMode = w;
      for (const o of ['validity', 'rotation', 'day']) $(`win-${o}`).classList.toggle('on', o === w);
      void refresh();
    });
  }
  await refresh();
  document.body.dataset.ready = 'true';
  setInterval(() => void refresh(), every);
}

void main();
