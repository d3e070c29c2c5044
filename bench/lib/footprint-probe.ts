/**
 * Preloaded into a process under study (`node --import ./bench/lib/footprint-probe.ts ...`)
 * by bench/agent-footprint.ts with FOOTPRINT_PROBE=1: records every module
 * the process loads (a synchronous module hook, no extra thread), and on
 * SIGUSR2 writes what the runtime itself reports about the process's memory
 * to $FOOTPRINT_PROBE_OUT (JSON): process.memoryUsage(), V8's heap spaces,
 * /proc/self/smaps_rollup, the threads, the modules (ESM URLs and the
 * built-ins of process.moduleLoadList); with FOOTPRINT_HEAP_SNAPSHOT=1 also a
 * heap snapshot next to it. The probe costs memory itself: the headline
 * figures come from runs without it.
 */
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';
import { getHeapSpaceStatistics, getHeapStatistics, writeHeapSnapshot } from 'node:v8';

const loaded: string[] = [];
registerHooks({
  load(url, context, next) {
    loaded.push(url);
    return next(url, context);
  },
});

function threadNames(): string[] {
  return readdirSync('/proc/self/task').map((t) => {
    try {
      return readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
    } catch {
      return '?';
    }
  });
}

function sizeOf(url: string): number {
  try {
    return url.startsWith('file:') ? statSync(fileURLToPath(url)).size : 0;
  } catch {
    return 0;
  }
}

/** Resident kB per mapping name (file path, [heap], [anon], ...), from /proc/self/smaps. */
function mappings(): Record<string, { rssKb: number; anonKb: number }> {
  const out: Record<string, { rssKb: number; anonKb: number }> = {};
  let cur = '[anon]';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      cur = head[1] || '[anon]';
      continue;
    }
    const m = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (!m) continue;
    const e = (out[cur] ??= { rssKb: 0, anonKb: 0 });
    if (m[1] === 'Rss') e.rssKb += Number(m[2]);
    else e.anonKb += Number(m[2]);
  }
  return out;
}

process.on('SIGUSR2', () => {
  const out = process.env.FOOTPRINT_PROBE_OUT;
  if (!out) return;
  const smaps = Object.fromEntries(
    readFileSync('/proc/self/smaps_rollup', 'utf8')
      .split('\n')
      .slice(1)
      .map((l) => /^(\w+):\s+(\d+) kB/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], Number(m[2])]),
  );
  const moduleLoadList = (process as unknown as { moduleLoadList?: string[] }).moduleLoadList ?? [];
  const report = {
    memoryUsage: process.memoryUsage(),
    heap: getHeapStatistics(),
    heapSpaces: getHeapSpaceStatistics().map((s) => ({ name: s.space_name, size: s.space_size, used: s.space_used_size })),
    smapsKb: smaps,
    threads: threadNames(),
    mappings: mappings(),
    modules: loaded.map((url) => ({ url, bytes: sizeOf(url) })),
    builtins: moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
    heapSnapshot: process.env.FOOTPRINT_HEAP_SNAPSHOT ? writeHeapSnapshot(`${out}.heapsnapshot`) : undefined,
  };
  writeFileSync(out, JSON.stringify(report));
});
