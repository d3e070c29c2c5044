/**
 * security.md R1 on a fake clock, with agents connected throughout and no
 * restart: (a) automatic rotation across a whole self-signed lifetime and
 * beyond (several roots), (b) an admin-driven plug-in rotation with its
 * guard rails. After every simulated hour (two in the long run): every agent serves a valid leaf,
 * and every live leaf verifies against every bundle any agent holds.
 */
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CastellanError } from '../../src/platform/errors.ts';
import { makeOpensslPki } from '../support/openssl-pki.ts';
import { tempDir } from '../support/tmp.ts';
import { checkInvariant, DAY, HOUR, run, settle, startMesh } from './harness.ts';

const tmp = tempDir('castellan-r1-');
afterAll(() => tmp.cleanup());

const AGENTS = [
  { name: 'frontend', subscribed: true },
  { name: 'backend', subscribed: true },
  { name: 'legacy', subscribed: false }, // like Istio's agent: no pushes
];

describe('R1: rotation keeps every live leaf verifiable against every distributed bundle', () => {
  it('ok/automatic rotation over 260 days of 100-day self-signed roots', async () => {
    const m = await startMesh({ start: Date.UTC(2030, 0, 1), mode: { kind: 'self-signed', keyType: 'ec-p256', rootTtlMs: 100 * DAY }, propagationMs: 2 * DAY, autoRotate: true, leafTtlMs: DAY, agents: AGENTS });
    try {
      checkInvariant(m, 'start');
      const firstRoot = m.manager.view().active.id;
      const seen = new Map<string, string[]>(); // authority id -> states seen, in order
      const activeLeafIssuers = new Set<string>();
      m.manager.onChange((v) => {
        for (const r of v.records) {
          const s = seen.get(r.id) ?? [];
          if (s.at(-1) !== r.state) s.push(r.state);
          seen.set(r.id, s);
        }
      });
      for (let day = 0; day < 260; day += 10) {
        await run(m, 10 * DAY, 2 * HOUR, `day ${day}`);
        for (const a of m.agents) activeLeafIssuers.add(a.cache.issued!.issuerKeyId!);
        // never more than current + next + old in the bundle
        expect(m.manager.view().rootsDer.length).toBeLessThanOrEqual(3);
      }
      // Roots of day 0, ~70 and ~140 (and ~210) took turns; the first went all the way to retired.
      expect(seen.get(firstRoot)).toEqual(['active', 'old', 'retired']);
      const states = [...seen.values()].map((s) => s.join('>'));
      expect(states.filter((s) => s.startsWith('prepared>active')).length).toBeGreaterThanOrEqual(2);
      expect(activeLeafIssuers.size).toBeGreaterThanOrEqual(3);
      expect(m.checks).toBeGreaterThan(3000);
    } finally {
      await m.close();
    }
  }, 240_000);

  it('ok/admin-driven plug-in rotation: import, guarded activate, taint (subscribed agents re-issue at once), guarded retire', async () => {
    const d1 = join(tmp.path, 'pki1');
    const d2 = join(tmp.path, 'pki2');
    mkdirSync(d1);
    mkdirSync(d2);
    makeOpensslPki(d1);
    makeOpensslPki(d2, { curve: 'P-384' });
    const texts = Object.fromEntries(['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem'].map((f) => [f, readFileSync(join(d2, f), 'utf8')])) as Record<
      'ca-cert.pem' | 'ca-key.pem' | 'root-cert.pem' | 'cert-chain.pem',
      string
    >;
    const m = await startMesh({ start: Date.now(), mode: { kind: 'plugin', cacertsDir: d1 }, propagationMs: 2 * DAY, autoRotate: false, leafTtlMs: DAY, agents: AGENTS });
    try {
      const i1 = m.manager.view().active.id;
      await run(m, 2 * DAY, HOUR, 'steady');

      const prepared = await m.manager.importPlugin(texts);
      const i2 = prepared.authority.id;
      expect(prepared.authority.state).toBe('prepared');
      await settle(m);
      checkInvariant(m, 'imported');
      // subscribed agents hold both roots at once; the legacy one learns at its next renewal
      expect(m.agents.filter((a) => a.subscribed).every((a) => (a.cache.bundlePem!.match(/BEGIN CERTIFICATE/g) ?? []).length === 2)).toBe(true);

      // Guard: not before the propagation time.
      const early = await m.manager.activate(undefined).catch((e: unknown) => e);
      expect(early).toBeInstanceOf(CastellanError);
      expect((early as CastellanError).code).toBe('rotation.guard');
      expect((early as CastellanError).message).toMatch(/propagation time.*--force/);

      await run(m, 2 * DAY, HOUR, 'propagating');
      expect(m.agents.every((a) => (a.cache.bundlePem!.match(/BEGIN CERTIFICATE/g) ?? []).length === 2)).toBe(true);
      const act = await m.manager.activate(undefined);
      expect(act.authority).toMatchObject({ id: i2, state: 'active' });
      await settle(m);
      await run(m, 6 * HOUR, HOUR, 'activated');

      // Retire is refused while leaves of the old intermediate live.
      const refused = await m.manager.retire(undefined).catch((e: unknown) => e);
      expect((refused as CastellanError).code).toBe('rotation.guard');

      const t = await m.manager.taint(undefined);
      expect(t.authority).toMatchObject({ id: i1, state: 'tainted' });
      await settle(m);
      checkInvariant(m, 'tainted');
      for (const a of m.agents.filter((x) => x.subscribed)) expect(a.cache.issued!.issuerKeyId, `${a.name} re-issued after the taint`).toBe(i2);

      // Once the last leaf of the old one has expired (at most one leaf lifetime), retire succeeds.
      await run(m, DAY + HOUR, HOUR, 'draining');
      const r = await m.manager.retire(undefined);
      expect(r.authority).toMatchObject({ id: i1, state: 'retired' });
      expect(r.forcedRisk).toBeUndefined();
      await settle(m);
      await run(m, 2 * DAY, HOUR, 'retired');
      expect(m.manager.view().rootsDer.length).toBe(1);
      expect(m.agents.every((a) => a.cache.issued!.issuerKeyId === i2)).toBe(true);
      // the keyring no longer holds the retired key
      expect(JSON.parse(m.keystore.text!).authorities.find((a: { id: string }) => a.id === i1).keyPem).toBe('');
    } finally {
      await m.close();
    }
  }, 240_000);

  it('fail/forcing activation before propagation breaks R1 for an agent without pushes (the check can fail)', async () => {
    const m = await startMesh({ start: Date.UTC(2030, 0, 1), mode: { kind: 'self-signed', keyType: 'ec-p256', rootTtlMs: 100 * DAY }, propagationMs: 2 * DAY, autoRotate: false, leafTtlMs: DAY, agents: AGENTS });
    try {
      await run(m, DAY, HOUR, 'steady');
      await m.manager.prepare();
      const forced = await m.manager.activate(undefined, true);
      expect(forced.forcedRisk).toMatch(/reject every certificate/);
      await settle(m);
      // A subscribed agent renews from the new root while the legacy agent still holds a
      // bundle without it: the invariant check must say so.
      await m.agents[0]!.cache.reissueNow('test');
      expect(() => checkInvariant(m, 'forced')).toThrow(/frontend's leaf .* does not verify against legacy's bundle/);
    } finally {
      await m.close();
    }
  }, 60_000);
});
