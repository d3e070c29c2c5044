/**
 * The kustomizations rendered by the real kustomize (`kubectl kustomize`,
 * kustomize v5 inside kubectl): each one builds, its objects are valid
 * against the Kubernetes schemas, and they are exactly what support.ts's
 * kustomizeBuild (the emulation the other deploy tests use) produces, so
 * those tests check what `kubectl apply -k` would apply. Components render
 * alone (kustomize v5 builds a Component directory; patches find nothing to
 * patch there) and through the overlays that use them; every component must
 * be used by one.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeWith, peers } from '../support/peers.ts';
import { byId, DEPLOY, kustomizeBuild, parseDocs, readDocs, schemaProblems, type Obj } from './support.ts';

const K8S = join(DEPLOY, 'kubernetes');
const subdirs = (d: string): string[] => (existsSync(d) ? readdirSync(d).map((n) => join(d, n)).filter((p) => existsSync(join(p, 'kustomization.yaml'))) : []);
const kustomizations = [join(K8S, 'base'), ...subdirs(join(K8S, 'overlays')), join(DEPLOY, 'agent')];
const components = subdirs(join(K8S, 'components'));

function kubectlKustomize(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  return parseDocs(out, `kubectl kustomize ${dir}`);
}

describe('kustomizations under deploy/', () => {
  it('finds the base, the overlays, the agent and the components', () => {
    expect(kustomizations.map((d) => relative(DEPLOY, d))).toEqual(expect.arrayContaining(['kubernetes/base', 'kubernetes/overlays/plugin-ca', 'kubernetes/overlays/policy-watch', 'agent']));
    expect(components.map((d) => relative(DEPLOY, d))).toContain('kubernetes/components/policy-watch');
  });

  it('every component is used by an overlay (so rendering the overlays renders it)', () => {
    const used = new Set(
      kustomizations.flatMap((d) => ((readDocs(join(d, 'kustomization.yaml'))[0]!.components ?? []) as string[]).map((c) => resolve(d, c))),
    );
    for (const c of components) expect(used.has(c), relative(DEPLOY, c)).toBe(true);
  });
});

describeWith([peers.kubectl], 'kubectl kustomize (the real kustomize v5)', () => {
  it.each(kustomizations.map((d) => [relative(DEPLOY, d), d]))('%s renders, is schema-valid and matches the emulation', (_rel, dir) => {
    const real = kubectlKustomize(dir);
    expect(real.length).toBeGreaterThan(0);
    expect(real.flatMap(schemaProblems)).toEqual([]);
    const emulated = byId(kustomizeBuild(dir));
    const got = byId(real);
    expect([...got.keys()].sort()).toEqual([...emulated.keys()].sort());
    for (const [id, o] of got) expect(o, id).toEqual(emulated.get(id));
  });

  it.each(components.map((d) => [relative(DEPLOY, d), d]))('component %s renders alone and is schema-valid', (_rel, dir) => {
    const real = kubectlKustomize(dir);
    expect(real.length).toBeGreaterThan(0);
    expect(real.flatMap(schemaProblems)).toEqual([]);
    if (!readDocs(join(dir, 'kustomization.yaml'))[0]!.patches) {
      expect(byId(real)).toEqual(byId(kustomizeBuild(dir, 'Component')));
      return;
    }
    // Its patches target the base's objects: alone, kustomize applies them to
    // nothing (the emulation refuses that), so what it renders must be part of
    // every overlay using it, which the test above compares in full.
    const users = kustomizations.filter((k) => ((readDocs(join(k, 'kustomization.yaml'))[0]!.components ?? []) as string[]).some((c) => resolve(k, c) === dir));
    expect(users.length).toBeGreaterThan(0);
    for (const u of users) {
      const overlay = byId(kubectlKustomize(u));
      for (const [id, o] of byId(real)) expect(overlay.get(id), `${id} in ${relative(DEPLOY, u)}`).toEqual(o);
    }
  });
});
