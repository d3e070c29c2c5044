/** The CA console's HTML and stylesheet (the script is bundled from app.ts). */
import { BASE_CSS } from '../style.ts';

export const CONSOLE_CSS = `${BASE_CSS}
#conn.ok { color: #8fe0ad; } #conn.err { color: #ffb4ab; font-weight: 600; }
.layout { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); gap: 14px; align-items: start; }
.stack { display: grid; gap: 14px; }
#next-auto { font-weight: 500; }
.windows { margin-left: auto; display: flex; gap: 4px; }
.windows button { padding: 2px 8px; font-size: 12px; background: transparent; color: var(--ink); border-color: var(--line); }
.windows button.on { background: var(--accent); color: #fff; border-color: var(--accent); }
svg.timeline { width: 100%; height: auto; display: block; font-family: system-ui, "DejaVu Sans", sans-serif; }
svg .tick { stroke: #e4e8ee; } svg .tick-label { font-size: 11px; fill: #7a8596; }
svg .row-id { font: 12px var(--mono); fill: var(--ink); } svg .row-state { font-size: 10.5px; font-weight: 700; letter-spacing: .05em; fill: var(--muted); }
svg .bar { fill: #dfe5ee; stroke: #b9c3d1; }
svg .signing { fill: #7fb0ff; opacity: .85; }
svg .state-prepared .bar { fill: #fff2cc; stroke: #d9b34a; }
svg .state-active .bar { fill: #d7f0df; stroke: #4ea46c; } svg .state-active .signing { fill: #2f9e5b; }
svg .state-old .bar { fill: #e8ebf0; } svg .state-old .signing { fill: #9aa7b8; }
svg .state-tainted .bar { fill: #fbe0dd; stroke: #c9483e; } svg .state-tainted .signing { fill: #c9483e; }
svg .state-retired .bar { fill: #f2f2f2; stroke: #d0d0d0; stroke-dasharray: 3 2; } svg .state-retired .signing { fill: #c7c7c7; }
svg .mark { fill: #18202e; } svg .ev-tainted .mark { fill: var(--deny); } svg .ev-retired .mark { fill: #8d96a3; }
svg .safe { stroke: #d17b00; stroke-width: 2; stroke-dasharray: 4 2; }
svg .now { stroke: var(--deny); stroke-width: 1.5; } svg .now-label { font-size: 11px; fill: var(--deny); font-weight: 600; }
.legend { font-size: 12px; color: var(--muted); margin-top: 6px; display: flex; gap: 14px; flex-wrap: wrap; }
.legend i { display: inline-block; width: 18px; height: 10px; border-radius: 2px; vertical-align: middle; margin-right: 4px; }
.legend .l-valid { background: #d7f0df; border: 1px solid #4ea46c; } .legend .l-signing { background: #2f9e5b; }
.legend .l-prepared { background: #fff2cc; border: 1px solid #d9b34a; } .legend .l-safe { border-top: 2px dashed #d17b00; height: 0; border-radius: 0; }
.legend .l-now { background: #c9483e; width: 2px; }
.cards { display: grid; gap: 10px; }
.card { border: 1px solid var(--line); border-left: 4px solid #b9c3d1; border-radius: 5px; padding: 8px 10px; }
.card.state-active { border-left-color: #2f9e5b; } .card.state-prepared { border-left-color: #d9b34a; }
.card.state-tainted { border-left-color: #c9483e; } .card.state-retired { opacity: .65; }
.card-head { display: flex; gap: 8px; align-items: center; margin-bottom: 4px; flex-wrap: wrap; }
.card-head .id { font-size: 12px; }
.kv { display: grid; grid-template-columns: 90px minmax(0, 1fr); font-size: 12.5px; color: var(--muted); }
.kv span { color: var(--ink); overflow-wrap: anywhere; }
.badge { font-size: 11px; font-weight: 700; text-transform: uppercase; letter-spacing: .05em; padding: 1px 7px; border-radius: 10px; background: #e8ebf0; color: #4a5566; margin-left: 6px; }
.badge.active { background: var(--allow-bg); color: var(--allow); } .badge.prepared { background: #fff2cc; color: #7a5a00; }
.badge.tainted { background: var(--deny-bg); color: var(--deny); }
.step { margin-top: 6px; padding: 6px 8px; background: #f3f6fb; border-radius: 4px; }
.step code.cmd { display: block; font-size: 12px; color: #10306e; user-select: all; overflow-wrap: anywhere; }
.step .muted { font-size: 12px; }
ul.bundle { list-style: none; padding: 0; margin: 0; display: grid; gap: 8px; }
ul.bundle li { border: 1px solid var(--line); border-radius: 5px; padding: 6px 8px; font-size: 12.5px; overflow-wrap: anywhere; }
ul.bundle pre { font-size: 10.5px; max-height: 160px; overflow: auto; background: #f0f2f5; padding: 6px; }
.stats { display: flex; gap: 18px; flex-wrap: wrap; margin-bottom: 8px; }
.stat { display: flex; flex-direction: column; } .stat .big { font-size: 22px; font-weight: 700; }
table.refusals td.num, table.refusals th.num { text-align: right; font-variant-numeric: tabular-nums; }
footer { padding: 4px 18px 16px; color: var(--muted); font-size: 12px; }
@media (max-width: 1100px) { .layout { grid-template-columns: 1fr; } }
`;

export function consoleHtml(refreshMs: number): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Castellan · CA console</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/console.css"><script type="module" src="/console.js"></script></head>
<body data-refresh-ms="${refreshMs}">
<header><h1>Castellan · CA console</h1><span class="sub" id="summary"></span><span class="spacer"></span><span id="conn">connecting…</span></header>
<main>
<div class="layout">
<div class="stack">
<section class="panel"><h2>Authorities <span class="windows"><button id="win-validity" class="on">validity</button><button id="win-rotation">recent steps</button><button id="win-day">last day</button></span></h2>
<div id="timeline"></div>
<div class="legend"><span><i class="l-valid"></i>valid</span><span><i class="l-signing"></i>signing</span><span><i class="l-prepared"></i>prepared (trusted, not signing)</span><span>▼ prepared / activated / deactivated / tainted / retired</span><span><i class="l-safe"></i>activate / retire safe</span><span><i class="l-now"></i>now</span></div>
<p><strong>Next automatic step:</strong> <span id="next-auto"></span></p>
</section>
<section class="panel"><h2>Each authority and what moves it on <span class="count">(run these yourself: the console is read-only)</span></h2><div class="cards" id="authorities"></div></section>
</div>
<div class="stack">
<section class="panel"><h2>Issuance</h2><div id="rates"></div></section>
<section class="panel"><h2>Trust bundle <span class="count" id="bundle-count"></span></h2><p class="muted">the roots agents serve to workloads (ROOTCA)</p><ul class="bundle" id="bundle"></ul></section>
</div>
</div>
</main>
<footer>Read from the CA server's admin API on its Unix socket; nothing here changes the CA. Every change is a <code>castellan ca</code> command, with its guard rails.</footer>
</body></html>
`;
}
