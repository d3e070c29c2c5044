/**
 * `npm run bench`: runs every benchmark in one process tree, one after the
 * other (so they do not compete for the two cores), and prints a summary
 * with the ratios measured side by side in this run.
 *
 * Each benchmark is a script that prints its own report and a last line
 * `RESULT {json}`; BENCH_ONLY=name[,name] runs a subset.
 *
 * The figures of the benchmarks that ran replace their blocks in
 * docs/performance.md (BENCH_DOCS=0 leaves the file alone).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeFigures } from './lib/figures.ts';

const root = new URL('..', import.meta.url).pathname;
const node = join(root, 'node_modules/.bin/node');
const BENCHES = ['issue-core', 'vs-go', 'jwt-verify', 'grpc-e2e', 'burst', 'authz', 'pod-cache', 'agent-footprint'];
const only = process.env.BENCH_ONLY?.split(',');

function scriptOf(name: string): string | undefined {
  for (const p of [`bench/${name}.ts`, `bench/${name}/run.ts`, `bench/${name}/index.ts`]) if (existsSync(join(root, p))) return join(root, p);
  return undefined;
}

const results: Record<string, Record<string, unknown>> = {};
for (const name of BENCHES) {
  if (only && !only.includes(name)) continue;
  const script = scriptOf(name);
  if (!script) {
    console.log(`\n== ${name}: not present, skipped`);
    continue;
  }
  console.log(`\n== ${name}`);
  const out = await new Promise<string>((resolve) => {
    let buf = '';
    const p = spawn(node, [script], { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
    p.stdout.on('data', (d: Buffer) => {
      buf += d;
      process.stdout.write(d.toString().split('\n').filter((l) => !l.startsWith('RESULT ')).join('\n'));
    });
    p.on('exit', (code) => {
      if (code) console.log(`(${name} exited with ${code})`);
      resolve(buf);
    });
  });
  const line = out.split('\n').reverse().find((l) => l.startsWith('RESULT '));
  if (line) results[name] = JSON.parse(line.slice(7)) as Record<string, unknown>;
}

console.log('\n== summary (JSON)');
console.log(JSON.stringify(results, null, 2));

if (process.env.BENCH_DOCS !== '0') {
  const written = writeFigures(join(root, 'docs/performance.md'), results);
  if (written.length) console.log(`\nfigures written to docs/performance.md: ${written.join(', ')}`);
}
