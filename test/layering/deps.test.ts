/**
 * The layering check (`npm run deps`, .dependency-cruiser.cjs) run on small
 * trees made here: it passes a tree that keeps the layers and fails one with
 * an import cycle, one with a lower layer importing an upper one, and one
 * where domain code imports grpc-js (the check can fail).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const tmp = tempDir('castellan-deps-');
afterAll(() => tmp.cleanup());
let n = 0;

/** Runs depcruise with the project's configuration on a tree of `files` (path → source). */
function cruise(files: Record<string, string>): { code: number | null; out: string } {
  const dir = join(tmp.path, `tree-${++n}`);
  const all: Record<string, string> = {
    'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', allowImportingTsExtensions: true, noEmit: true }, include: ['src'] }),
    'src/platform/errors.ts': 'export class CastellanError extends Error {}\n',
    'src/ca/manager.ts': "import { CastellanError } from '../platform/errors.ts';\nexport const m = new CastellanError();\n",
    'src/server/ca-server.ts': "import { m } from '../ca/manager.ts';\nexport const s = m;\n",
    ...files,
  };
  for (const [p, text] of Object.entries(all)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), text);
  }
  const r = spawnSync(join(root, 'node_modules/.bin/depcruise'), ['src', '--config', join(root, '.dependency-cruiser.cjs')], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('layering check (dependency-cruiser)', () => {
  it('ok/a tree that keeps the layers passes', () => {
    const r = cruise({});
    expect(r.out).toMatch(/no dependency violations/);
    expect(r.code).toBe(0);
  }, 60_000);

  it('fail/an import cycle', () => {
    const r = cruise({
      'src/ca/a.ts': "import { b } from './b.ts';\nexport const a = (): number => b() + 1;\n",
      'src/ca/b.ts': "import { a } from './a.ts';\nexport const b = (): number => a();\n",
    });
    expect(r.out).toMatch(/no-circular: src\/ca\/[ab]\.ts/);
    expect(r.code).not.toBe(0);
  }, 60_000);

  it('fail/a lower layer importing an upper one', () => {
    const r = cruise({ 'src/ca/up.ts': "import { s } from '../server/ca-server.ts';\nexport const u = s;\n" });
    expect(r.out).toMatch(/layer-ca: src\/ca\/up\.ts → src\/server\/ca-server\.ts/);
    expect(r.code).not.toBe(0);
  }, 60_000);

  it('fail/domain code importing grpc-js, or client-node outside src/kube', () => {
    const r = cruise({
      'src/identity/t.ts': `import * as grpc from '${join(root, 'node_modules/@grpc/grpc-js/build/src/index.js')}';\nexport const g = grpc;\n`,
      'src/ca/k.ts': `import * as k8s from '${join(root, 'node_modules/@kubernetes/client-node/dist/index.js')}';\nexport const k = k8s;\n`,
    });
    expect(r.out).toMatch(/protocol-without-grpc-js: src\/identity\/t\.ts/);
    expect(r.out).toMatch(/client-node-only-in-kube: src\/ca\/k\.ts/);
    expect(r.code).not.toBe(0);
  }, 60_000);
});
