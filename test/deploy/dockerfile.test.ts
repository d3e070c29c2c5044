/**
 * deploy/Dockerfile and .dockerignore, checked as text (fast, no build):
 * stages and bases, a numeric non-root USER that the manifests run as,
 * production dependencies only in the final image, the compile step being the
 * build script, what is copied existing and not excluded by .dockerignore,
 * the entrypoint and ports. image.test.ts builds the image and runs it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY, kustomizeBuild, readDocs, ROOT, type Obj } from './support.ts';

interface Instr {
  op: string;
  args: string;
}
interface Stage {
  base: string;
  name?: string;
  instrs: Instr[];
}

/** Instructions with continuations joined and comments dropped; ARG defaults before FROM resolved. */
function parseDockerfile(text: string): { stages: Stage[]; args: Record<string, string> } {
  const lines: string[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw) && cur === '') continue;
    if (/^\s*#/.test(raw)) continue; // comment inside a continued instruction
    if (raw.endsWith('\\')) {
      cur += raw.slice(0, -1) + ' ';
      continue;
    }
    cur += raw;
    if (cur.trim()) lines.push(cur.trim());
    cur = '';
  }
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const l of lines) {
    const m = /^(\S+)\s*(.*)$/s.exec(l)!;
    const op = m[1]!.toUpperCase();
    const rest = m[2]!;
    if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=', 2);
      args[k!] = v ?? '';
    } else if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      const base = f[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => args[a ?? b] ?? '');
      stages.push({ base, name: f[2], instrs: [] });
    } else {
      if (!stages.length) throw new Error(`${op} before FROM`);
      stages.at(-1)!.instrs.push({ op, args: rest });
    }
  }
  return { stages, args };
}

const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
const { stages } = parseDockerfile(dockerfile);
const final = stages.at(-1)!;
const of = (s: Stage, op: string): Instr[] => s.instrs.filter((i) => i.op === op);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; devDependencies: Record<string, string> };
const buildTsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { compilerOptions: { outDir: string; rootDir: string } };

/** .dockerignore as Docker reads it: last matching pattern wins, a pattern matching a parent directory matches its files. */
function dockerignored(path: string): boolean {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const toRe = (p: string): RegExp => {
    let re = '';
    const body = p.replace(/^\//, '').replace(/\/$/, '');
    for (let i = 0; i < body.length; i++) {
      const c = body[i]!;
      if (c === '*' && body[i + 1] === '*') {
        re += '.*';
        i++;
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return new RegExp(`^${re}$`);
  };
  const parts = path.split('/');
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let excluded = false;
  for (const p of patterns) {
    const neg = p.startsWith('!');
    const re = toRe(neg ? p.slice(1) : p);
    if (prefixes.some((x) => re.test(x))) excluded = !neg;
  }
  return excluded;
}

/** The CA server container of the base Deployment. */
function c0(): Obj {
  return readDocs(join(DEPLOY, 'kubernetes/base/deployment.yaml'))[0]!.spec.template.spec.containers[0] as Obj;
}

describe('deploy/Dockerfile', () => {
  it('is multi-stage on Node 24 bases, the final one distroless or slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.base).toMatch(/^(node:24(\.\d+)*-(bookworm-|trixie-)?slim|gcr\.io\/distroless\/nodejs24-debian\d+(:nonroot)?)(@sha256:[0-9a-f]{64})?$/);
    expect(final.base).toMatch(/distroless|slim/);
    expect(final.name).toBeUndefined();
    for (const s of stages.slice(0, -1)) expect(s.name, `stage FROM ${s.base} is named`).toMatch(/^[a-z][a-z0-9-]*$/);
  });

  it('runs as a numeric non-root user, the one the manifests ask for', () => {
    const users = of(final, 'USER');
    expect(users.length).toBe(1);
    const m = /^(\d+)(?::(\d+))?$/.exec(users[0]!.args);
    expect(m, 'numeric USER (runAsNonRoot can only verify a numeric uid)').not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![2] ?? m![1])).toBeGreaterThan(0);
    const pod = kustomizeBuild(join(DEPLOY, 'kubernetes/base')).find((o) => o.kind === 'Deployment')!.spec.template.spec as Obj;
    expect(pod.securityContext.runAsUser).toBe(Number(m![1]));
    expect(pod.securityContext.runAsGroup).toBe(Number(m![2]));
    // Nothing after USER switches back.
    const idx = final.instrs.findIndex((i) => i.op === 'USER');
    expect(final.instrs.slice(idx + 1).some((i) => i.op === 'RUN')).toBe(false);
  });

  it('the final image gets production dependencies only, and installs nothing itself', () => {
    expect(of(final, 'RUN')).toEqual([]);
    const copies = of(final, 'COPY');
    const nm = copies.filter((c) => /node_modules/.test(c.args));
    expect(nm.length).toBe(1);
    const from = /--from=(\S+)/.exec(nm[0]!.args)![1];
    const depsStage = stages.find((s) => s.name === from)!;
    const installs = of(depsStage, 'RUN').filter((r) => /\bnpm\b/.test(r.args));
    expect(installs.length).toBe(1);
    expect(installs[0]!.args).toMatch(/^npm ci\b.*--omit=dev\b/);
    // No stage uses `npm install` (the lock decides every version).
    for (const s of stages) for (const r of of(s, 'RUN')) expect(r.args).not.toMatch(/\bnpm (install|i)\b/);
    // Every npm ci has the lock next to it.
    for (const s of stages) if (of(s, 'RUN').some((r) => /npm ci/.test(r.args))) expect(of(s, 'COPY').some((c) => c.args.includes('package-lock.json'))).toBe(true);
    // No devDependency is copied in some other way.
    for (const c of copies) for (const dev of Object.keys(pkg.devDependencies)) expect(c.args).not.toContain(`node_modules/${dev}`);
  });

  it('compiles with the build script and copies its output, unpatched', () => {
    const build = stages.find((s) => of(s, 'RUN').some((r) => r.args.includes('tsc')))!;
    const tsc = of(build, 'RUN').find((r) => r.args.includes('tsc'))!;
    const script = pkg.scripts.build!; // "tsc -p tsconfig.build.json && tsc -p tsconfig.web.json ..."
    expect(tsc.args).toBe(script.split(' && ').map((c) => (c.startsWith('tsc ') ? `node node_modules/typescript/bin/${c}` : c)).join(' && '));
    const dist = of(final, 'COPY').find((c) => c.args.includes(`--from=${build.name}`))!;
    const workdir = of(build, 'WORKDIR')[0]!.args;
    expect(dist.args).toBe(`--from=${build.name} ${workdir}/${buildTsconfig.compilerOptions.outDir} ./${buildTsconfig.compilerOptions.outDir}`);
    expect(of(final, 'COPY').some((c) => c.args === 'package.json ./')).toBe(true);
    // dist/ is used as tsc emits it: the source names its worker scripts'
    // emitted files itself (image.test.ts runs the signer and HTTP workers).
    expect(of(build, 'RUN').filter((r) => r !== tsc && /\bdist\b/.test(r.args))).toEqual([]);
  });

  it('copies from the build context only files that exist and .dockerignore lets through', () => {
    for (const s of stages) {
      for (const c of of(s, 'COPY').filter((x) => !x.args.startsWith('--from'))) {
        const parts = c.args.split(/\s+/);
        for (const src of parts.slice(0, -1)) {
          expect(existsSync(join(ROOT, src)), src).toBe(true);
          expect(dockerignored(src), `${src} is excluded by .dockerignore`).toBe(false);
          if (src === 'src') expect(dockerignored('src/cli/main.ts')).toBe(false);
        }
      }
    }
    for (const p of ['.git/HEAD', 'node_modules/yaml/package.json', 'dist/cli/main.js', '.castellan/keyring.json', 'var/run/x', 'test/deploy/support.ts', 'README.md', 'deploy/Dockerfile', 'scratch/x']) {
      expect(dockerignored(p), p).toBe(true);
    }
    expect(of(stages[0]!, 'ADD')).toEqual([]);
    for (const s of stages) expect(of(s, 'ADD')).toEqual([]);
  });

  it('starts the compiled CLI directly and exposes the CA and ops ports', () => {
    const ep = JSON.parse(of(final, 'ENTRYPOINT')[0]!.args) as string[];
    const { rootDir, outDir } = buildTsconfig.compilerOptions;
    const mainJs = ep[1]!;
    expect(mainJs).toBe(`/app/${outDir}/cli/main.js`);
    expect(existsSync(join(ROOT, rootDir, 'cli/main.ts'))).toBe(true);
    expect(ep[0]).toMatch(/\/node$/);
    // The plug-in CA init container runs the same image's node binary.
    const init = kustomizeBuild(join(DEPLOY, 'kubernetes/overlays/plugin-ca')).find((o) => o.kind === 'Deployment')!.spec.template.spec.initContainers[0] as Obj;
    expect(init.command[0]).toBe(ep[0]);
    expect(init.image).toBe(c0().image);
    expect(of(final, 'EXPOSE')[0]!.args.split(/\s+/).map(Number)).toEqual([15012, 15014]);
    // The Deployment passes the command, not the program.
    const c = readDocs(join(DEPLOY, 'kubernetes/base/deployment.yaml'))[0]!.spec.template.spec.containers[0] as Obj;
    expect(c.command).toBeUndefined();
    expect(c.args[0]).toBe('server');
  });
});
