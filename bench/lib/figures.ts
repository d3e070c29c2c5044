/**
 * Writes the figures of a `npm run bench` run into docs/performance.md:
 * each benchmark owns the block between `<!-- bench:NAME -->` and
 * `<!-- /bench:NAME -->`, replaced by a table of what it measured, with the
 * date, the host and the commit. Prose around the blocks is left alone, so
 * the figures never go stale in comments or in hand-written text.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';

type Json = Record<string, unknown>;

const fmt = (v: unknown): string => {
  if (typeof v === 'number') return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : Number(v.toPrecision(3)).toString();
  if (Array.isArray(v)) return v.map(fmt).join('–');
  return String(v);
};

/** `[path, value]` of every scalar (and number pair) in `o`, nested paths joined with dots. */
function flatten(o: unknown, prefix = ''): [string, unknown][] {
  if (o === null || typeof o !== 'object' || (Array.isArray(o) && o.every((x) => typeof x !== 'object'))) return [[prefix, o]];
  if (Array.isArray(o)) return o.flatMap((x, i) => flatten(x, `${prefix}[${i}]`));
  return Object.entries(o).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
}

function table(rows: [string, string][]): string {
  return ['| figure | value |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
}

/** grpc-e2e: Castellan against the Go server per token algorithm, the ratios the targets name first. */
function grpcE2e(r: Json): string {
  const rows: string[] = ['| tokens | Castellan per server CPU-s | Go server per CPU-s | ratio (target ≥ 1.0) | half-peak p99 Castellan / Go (ms) | ratio (target ≤ 2) | peak certs/s Castellan / Go | errors |', '|---|---|---|---|---|---|---|---|'];
  for (const alg of ['RS256', 'ES256']) {
    const a = r[alg] as { castellan?: Json; goServer?: Json; ratioVsGoServer?: number; halfP99VsGo?: number } | undefined;
    if (!a?.castellan) continue;
    const c = a.castellan;
    const g = a.goServer ?? {};
    rows.push(
      `| ${alg} | ${fmt(c.perServerCpuSecond)} (rounds ${fmt(c.perServerCpuSecondRange)}) | ${fmt(g.perServerCpuSecond ?? '-')} | **${fmt(a.ratioVsGoServer ?? '-')}×** | ${fmt(c.halfP99Ms)} / ${fmt(g.halfP99Ms ?? '-')} | **${fmt(a.halfP99VsGo ?? '-')}×** | ${fmt(c.peakPerSec)} / ${fmt(g.peakPerSec ?? '-')} | ${fmt((c.peakErrors as number) + (c.halfErrors as number))} |`,
    );
  }
  return `${rows.join('\n')}\n\n${ROUNDS_NOTE(r)}`;
}
const ROUNDS_NOTE = (r: Json): string => `${fmt(r.rounds)} interleaved rounds of ${fmt(r.seconds)} s per phase, ${fmt(r.loadgen)} load generator; Go's bare signing core: ${fmt(r.goBareCorePerCpuSecond ?? '-')} per CPU-second.`;

/** agent-footprint: the agent beside bare Node and Node with grpc-js, measured in the same run, with the targets of issue 21. */
function agentFootprint(r: Json): string {
  const a = (r.agent ?? {}) as Json;
  const b = (r.bareNode ?? {}) as Json;
  const g = (r.nodeGrpcJs ?? {}) as Json;
  const row = (what: string, ...cells: unknown[]): string => `| ${what} | ${cells.map((c) => (c === undefined ? '' : fmt(c))).join(' | ')} |`;
  return [
    '| figure | agent | bare Node | Node + grpc-js | target |',
    '|---|---|---|---|---|',
    row('steady RSS, whole process tree (MiB)', a.steadyRssMiB, b.rssMiB, g.rssMiB, '≤ 75'),
    row('steady PSS, whole process tree (MiB)', a.steadyPssMiB, b.pssMiB, g.pssMiB, undefined),
    row('peak RSS, start-up and first issuance (MiB)', a.peakRssMiB, b.peakRssMiB, g.peakRssMiB, '≤ 90'),
    row('idle CPU (% of a core)', a.idleCpuPercent, undefined, undefined, '< 1'),
    row('start → first certificate over SDS (ms)', a.startToFirstCertMs, undefined, undefined, '≤ 1 000'),
    row('CPU used until then / to start (ms)', a.startCpuMs, r.bareNodeStartCpuMs, r.nodeGrpcJsStartCpuMs, undefined),
    row('processes / threads', `${fmt(a.processes)} / ${fmt(a.threads)}`, `1 / ${fmt(b.threads)}`, `1 / ${fmt(g.threads)}`, undefined),
    '',
    `CA server idle after issuing: ${fmt((r.caServer as Json | undefined)?.idleRssMiB)} MiB RSS (its peak under the burst: the burst block). ` +
      `Medians of ${fmt(r.runs)} agent run(s), ${fmt(r.idleMs)} ms idle, \`${fmt(r.entry)}\`${(r.agentNodeArgs as string[] | undefined)?.length ? ` with ${(r.agentNodeArgs as string[]).join(' ')}` : ''}` +
      `${r.workloadApi === false ? ', SDS only' : ', serving SDS and the Workload API'}.`,
    ...variantRows(r),
  ].join('\n');
}

/** FOOTPRINT_VARIANTS: the agents compared side by side in the same run. */
function variantRows(r: Json): string[] {
  const vs = r.variants as (Json & { label: string; entry: string; nodeArgs: string[]; env: Record<string, string> })[] | undefined;
  if (!vs?.length) return [];
  const burst = vs[0]!.burstCpuMs !== undefined;
  return [
    '',
    `| variant (interleaved runs) | steady RSS (MiB) | PSS | peak | idle CPU % | CPU to 1st certificate (ms) | threads |${burst ? ' SDS burst: agent CPU (ms) / errors |' : ''} run as |`,
    `|---|---|---|---|---|---|---|${burst ? '---|' : ''}---|`,
    ...vs.map((v) => `| ${v.label} | ${fmt(v.steadyRssMiB)} | ${fmt(v.steadyPssMiB)} | ${fmt(v.peakRssMiB)} | ${fmt(v.idleCpuPercent)} | ${fmt(v.startCpuMs)} | ${fmt(v.threads)} |${burst ? ` ${fmt(v.burstCpuMs)} / ${fmt(v.burstErrors)} |` : ''} \`${[v.entry, ...v.nodeArgs, ...Object.entries(v.env).map(([k, x]) => `${k}=${x}`)].join(' ')}\` |`),
  ];
}

const RENDER: Record<string, (r: Json) => string> = { 'grpc-e2e': grpcE2e, 'agent-footprint': agentFootprint };

function host(): string {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    // not a git checkout
  }
  return `${new Date().toISOString().slice(0, 16)}Z, commit ${commit}, Node ${process.versions.node}, ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average at the end ${loadavg()[0]!.toFixed(1)}`;
}

/** Replaces the blocks of the benchmarks in `results` (others are kept); returns the names written. */
export function writeFigures(docPath: string, results: Record<string, Json>): string[] {
  if (!existsSync(docPath)) return [];
  let doc = readFileSync(docPath, 'utf8');
  const written: string[] = [];
  const when = host();
  for (const [name, r] of Object.entries(results)) {
    const open = `<!-- bench:${name} -->`;
    const close = `<!-- /bench:${name} -->`;
    const i = doc.indexOf(open);
    const j = doc.indexOf(close);
    if (i < 0 || j < i) continue;
    const body = (RENDER[name] ?? ((x: Json) => table(flatten(x).filter(([k]) => k !== 'bench').map(([k, v]) => [k, fmt(v)]))))(r);
    doc = `${doc.slice(0, i + open.length)}\n_Measured ${when}._\n\n${body}\n${doc.slice(j)}`;
    written.push(name);
  }
  writeFileSync(docPath, doc);
  return written;
}
