/** The stylesheet both local pages share (system fonts only: the pages load nothing from elsewhere). */
export const BASE_CSS = `
:root { --bg: #f6f7f9; --panel: #fff; --ink: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --allow: #137a3f; --allow-bg: #e3f5ea;
  --deny: #b3261e; --deny-bg: #fbe7e5; --warn: #8a5a00; --warn-bg: #fff4d6; --accent: #2459c7; --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, "DejaVu Sans", "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); }
header { display: flex; align-items: center; gap: 16px; padding: 10px 18px; background: #18202e; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header .sub { color: #aab4c3; font-size: 13px; }
header label { color: #cfd6e0; font-size: 12px; display: flex; gap: 6px; align-items: center; }
header input, header select { font: inherit; font-size: 12px; padding: 2px 4px; max-width: 150px; }
header .spacer { flex: 1; }
button { font: inherit; padding: 5px 12px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; cursor: pointer; }
button.ghost { background: transparent; color: inherit; border-color: #7a8699; }
main { padding: 14px 18px; }
section.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; min-width: 0; }
section.panel h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 0 0 8px; display: flex; gap: 8px; align-items: baseline; }
section.panel h2 .count { text-transform: none; letter-spacing: 0; font-weight: normal; }
code, pre, textarea { font-family: var(--mono); font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
.muted { color: var(--muted); }
`;
