#!/usr/bin/env node
// Entry point. Castellan targets Node 24 LTS and runs its TypeScript sources
// directly (Node 24 strips types). When started by another Node (say the
// system's Node 20), re-run under the Node 24 that `npm install` put in
// node_modules, so `npx castellan` works whichever node is first on PATH.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major === 24) {
  await import('../src/cli/main.ts');
} else {
  const pinned = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    console.error(`castellan: needs Node 24 (found ${process.version}); run "npm install" in the project first`);
    process.exit(1);
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
