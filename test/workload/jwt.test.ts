/**
 * JWT-SVIDs without the network: the JWT keys' life cycle in the keyring
 * (src/ca/jwt-keys.ts: guard rails, automatic steps, the published bundle,
 * the stored form) and the agent's ValidateJWTSVID and per-audience cache
 * (src/workload/jwt.ts), with a fake clock. The interop tests
 * (python-interop.test.ts) show the same over the wire to PyJWT and grpcio.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { buildJwtView, jwtActivate, jwtAddKey, jwtAddTokens, jwtNextAutoStep, jwtRetire, jwtTaint, newJwtKeyRecord, type JwtKeyRecord } from '../../src/ca/jwt-keys.ts';
import { parseKeyringDoc, serializeKeyringDoc } from '../../src/ca/keyring-doc.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import type { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { AgentJwt, type MintedJwt } from '../../src/workload/jwt.ts';

const T0 = Date.UTC(2031, 0, 1);
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const o = (now: number, force = false) => ({ now, force, propagationMs: HOUR });
const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as CastellanError).code;
  }
};

describe('JWT keys in the keyring', () => {
  it('ok/first key active; prepare → activate (guarded by propagation) → taint → retire (guarded while tokens live)', () => {
    const a = newJwtKeyRecord('ES256', 7 * DAY, T0, 'active');
    let keys = jwtAddKey([], a, o(T0)).keys;
    expect(codeOf(() => jwtAddKey(keys, newJwtKeyRecord('ES256', 7 * DAY, T0, 'active'), o(T0)))).toBe('rotation.bad_state');
    const b = newJwtKeyRecord('ES256', 7 * DAY, T0 + DAY, 'prepared');
    keys = jwtAddKey(keys, b, o(T0 + DAY)).keys;
    expect(codeOf(() => jwtAddKey(keys, newJwtKeyRecord('ES256', DAY, T0, 'prepared'), o(T0 + DAY)))).toBe('rotation.already_prepared');
    // published before it signs
    expect(buildJwtView(keys).published.map((k) => [k.kid, k.state])).toEqual([[a.kid, 'active'], [b.kid, 'prepared']]);
    expect(buildJwtView(keys).active?.kid).toBe(a.kid);
    expect(codeOf(() => jwtActivate(keys, undefined, o(T0 + DAY + MIN)))).toBe('rotation.guard');
    const forced = jwtActivate(keys, undefined, o(T0 + DAY + MIN, true));
    expect(forced.forcedRisk).toMatch(/reject every JWT-SVID the new key signs/);
    keys = jwtActivate(keys, undefined, o(T0 + DAY + HOUR)).keys;
    expect(buildJwtView(keys).active?.kid).toBe(b.kid);
    expect(codeOf(() => jwtTaint(keys, b.kid, o(T0 + 2 * DAY)))).toBe('rotation.active');
    keys = jwtAddTokens(keys, new Map([[a.kid, { issued: 3, lastNotAfter: T0 + 2 * DAY + 5 * MIN }]]));
    keys = jwtTaint(keys, undefined, o(T0 + 2 * DAY)).keys;
    const v = buildJwtView(keys);
    expect(v.tainted).toEqual([{ kid: a.kid, taintedAt: T0 + 2 * DAY }]);
    expect(v.published.map((k) => k.kid)).toContain(a.kid); // still published until retired
    expect(codeOf(() => jwtRetire(keys, a.kid, o(T0 + 2 * DAY + MIN)))).toBe('rotation.guard');
    keys = jwtRetire(keys, a.kid, o(T0 + 2 * DAY + 6 * MIN)).keys;
    const retired = keys.find((k) => k.kid === a.kid)!;
    expect(retired).toMatchObject({ state: 'retired', keyPem: '' });
    expect(buildJwtView(keys).published.map((k) => k.kid)).toEqual([b.kid]);
    expect(codeOf(() => jwtRetire(keys, b.kid, o(T0 + 3 * DAY)))).toBe('rotation.active');
  });

  it('ok/the JWT bundle: public keys only, each with kid, use "jwt-svid" and alg', () => {
    for (const alg of ['ES256', 'ES384', 'RS256', 'PS256'] as const) {
      const k = newJwtKeyRecord(alg, DAY, T0, 'active');
      const set = JSON.parse(buildJwtView([k]).bundleJson) as { keys: Record<string, string>[] };
      expect(set.keys).toHaveLength(1);
      expect(set.keys[0]).toMatchObject({ kid: k.kid, use: 'jwt-svid', alg, kty: alg.startsWith('E') ? 'EC' : 'RSA' });
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(set.keys[0]).not.toHaveProperty(priv);
    }
    expect(buildJwtView(undefined).bundleJson).toBe('');
  });

  it('ok/automatic steps: prepare at half life, activate at a sixth left (after propagation), retire when the last token expired', () => {
    const a = newJwtKeyRecord('ES256', 6 * DAY, T0, 'active');
    let keys: JwtKeyRecord[] = [a];
    expect(jwtNextAutoStep(keys, T0, HOUR)).toEqual({ recheckAt: T0 + HOUR }); // hourly re-check cap
    expect(jwtNextAutoStep(keys, T0 + 3 * DAY, HOUR).step).toEqual({ kind: 'prepare' });
    keys = jwtAddKey(keys, newJwtKeyRecord('ES256', 6 * DAY, T0 + 3 * DAY, 'prepared'), o(T0 + 3 * DAY)).keys;
    expect(jwtNextAutoStep(keys, T0 + 5 * DAY - MIN, HOUR).step).toBeUndefined();
    const act = jwtNextAutoStep(keys, T0 + 5 * DAY, HOUR).step;
    expect(act?.kind).toBe('activate');
    keys = jwtActivate(keys, undefined, o(T0 + 5 * DAY)).keys;
    keys = jwtAddTokens(keys, new Map([[a.kid, { issued: 1, lastNotAfter: T0 + 5 * DAY + 5 * MIN }]]));
    expect(jwtNextAutoStep(keys, T0 + 5 * DAY + MIN, HOUR).step).toBeUndefined();
    expect(jwtNextAutoStep(keys, T0 + 5 * DAY + 5 * MIN, HOUR).step).toEqual({ kind: 'retire', id: a.kid });
  });

  it('P4/a stored keyring with two active JWT keys, or a live one without its key, is refused as corrupt', () => {
    const auth = JSON.parse(serializeKeyringDoc({ version: 2, trustDomain: 'cluster.local', generation: 1, authorities: [{ id: 'aa', state: 'active', source: 'self-signed', keyType: 'ec-p256', certPem: '', keyPem: 'k', chainPem: '', rootsPem: '', createdAt: new Date(T0).toISOString(), leaves: { issued: 0, lastNotAfter: null } }] })) as Record<string, unknown>;
    const two = [newJwtKeyRecord('ES256', DAY, T0, 'active'), newJwtKeyRecord('ES256', DAY, T0, 'active')];
    expect(() => parseKeyringDoc(JSON.stringify({ ...auth, jwtKeys: two }), 'test')).toThrow(/at most one active JWT key/);
    expect(() => parseKeyringDoc(JSON.stringify({ ...auth, jwtKeys: [{ ...two[0], keyPem: '' }] }), 'test')).toThrow(/has no key/);
    expect(() => parseKeyringDoc(JSON.stringify({ ...auth, jwtKeys: [{ ...two[0], alg: 'HS256' }] }), 'test')).toThrow(/jwtKeys/);
    expect(parseKeyringDoc(JSON.stringify({ ...auth, jwtKeys: [two[0]] }), 'test').jwtKeys).toHaveLength(1);
    expect(parseKeyringDoc(JSON.stringify(auth), 'test').jwtKeys).toBeUndefined(); // keyrings from before
  });
});

// ---- the agent side ----

const TD = 'spiffe://cluster.local';
const ME = `${TD}/ns/default/sa/web`;

function agentWith(keys: JwtKeyRecord[], clock: FakeClock, mint?: (aud: readonly string[]) => Promise<MintedJwt>) {
  const a = new AgentJwt({ trustDomain: 'cluster.local', clock, logger: silentLogger(), mint: mint ?? (() => Promise.reject(new Error('no minting here'))) });
  const v = buildJwtView(keys);
  a.apply({ jwtBundleJson: v.bundleJson, taintedJwtKeys: v.tainted.map((t) => ({ keyId: t.kid, taintedAt: t.taintedAt })), jwtMaxTtlMs: HOUR });
  return a;
}

async function sign(k: JwtKeyRecord, claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'JWT', ...header }).sign(createPrivateKey(k.keyPem));
}

const s = (ms: number) => Math.floor(ms / 1000);

describe('ValidateJWTSVID (the agent)', () => {
  const key = newJwtKeyRecord('ES256', DAY, T0, 'active');
  const clock = new FakeClock(T0 + HOUR);
  const agent = agentWith([key], clock);
  const now = T0 + HOUR;
  const good = { sub: ME, aud: ['api'], iat: s(now), exp: s(now + 5 * MIN) };

  it('ok/a token of the bundle, for this audience, not expired', async () => {
    const r = await agent.validate(await sign(key, good), 'api');
    expect(r.spiffeId).toBe(ME);
    expect(r.claims).toMatchObject({ sub: ME, aud: ['api'] });
    expect((await agent.validate(await sign(key, { ...good, aud: 'api' }), 'api')).spiffeId).toBe(ME); // a single string aud
  });

  const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const refusals: [string, () => Promise<string>, string, string?][] = [
    ['expired (past the 30 s leeway)', () => sign(key, { ...good, exp: s(now - 31_000) }), 'jwtsvid.expired'],
    ['wrong audience', () => sign(key, good), 'jwtsvid.audience', 'other'],
    ['no aud', () => sign(key, { sub: ME, exp: good.exp }), 'jwtsvid.audience'],
    ['empty aud list', () => sign(key, { ...good, aud: [] }), 'jwtsvid.audience'],
    ['no exp', () => sign(key, { sub: ME, aud: ['api'] }), 'jwtsvid.claims'],
    ['foreign trust domain', () => sign(key, { ...good, sub: 'spiffe://other.example/ns/default/sa/web' }), 'jwtsvid.untrusted_domain'],
    ['sub not a SPIFFE ID', () => sign(key, { ...good, sub: 'web' }), 'jwtsvid.claims'],
    ['unknown kid', () => sign({ ...key, kid: 'f'.repeat(32) }, good), 'jwtsvid.unknown_key'],
    ['signed by another key under the same kid', async () => new SignJWT(good).setProtectedHeader({ alg: 'ES256', kid: key.kid }).sign(other), 'jwtsvid.signature'],
    ['a header parameter JWT-SVID forbids (jku)', () => sign(key, good, { jku: 'https://evil.example/jwks' }), 'jwtsvid.header'],
    ['typ other than JWT or JOSE', () => sign(key, good, { typ: 'at+jwt' }), 'jwtsvid.header'],
    ['no kid', async () => new SignJWT(good).setProtectedHeader({ alg: 'ES256' }).sign(createPrivateKey(key.keyPem)), 'jwtsvid.header'],
    ['alg none', async () => `${Buffer.from('{"alg":"none","kid":"' + key.kid + '"}').toString('base64url')}.${Buffer.from(JSON.stringify(good)).toString('base64url')}.`, 'jwtsvid.alg'],
    ['alg HS256 with the public key as secret', async () => new SignJWT(good).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(Buffer.from(JSON.stringify(buildJwtView([key]).bundleJson))), 'jwtsvid.alg'],
    ['not three parts', async () => 'abc.def', 'jwtsvid.malformed'],
    ['payload not JSON', async () => `${Buffer.from(`{"alg":"ES256","kid":"${key.kid}"}`).toString('base64url')}.bm90IGpzb24.c2ln`, 'jwtsvid.malformed'],
  ];
  for (const [name, make, code, aud] of refusals) {
    it(`fail/${name} → INVALID_ARGUMENT ${code}`, async () => {
      const e = await agent.validate(await make(), aud ?? 'api').then(
        () => undefined,
        (x: unknown) => x as CastellanError,
      );
      expect(e?.kind).toBe('INVALID_ARGUMENT');
      expect(e?.code).toBe(code);
    });
  }

  it('R3/a tainted key: tokens from before the taint pass; a token it signed at or after the taint, a back-dated one outliving the maximum lifetime, or one without iat do not', async () => {
    const old = newJwtKeyRecord('ES256', DAY, T0, 'active');
    const next = newJwtKeyRecord('ES256', DAY, T0, 'prepared');
    let keys = jwtAddKey([old], next, o(T0)).keys;
    keys = jwtActivate(keys, undefined, o(T0 + HOUR)).keys;
    const taintAt = T0 + 2 * HOUR;
    const c = new FakeClock(taintAt - MIN);
    const before = await sign(old, { sub: ME, aud: ['api'], iat: s(taintAt - MIN), exp: s(taintAt + 4 * MIN) });
    const beforeAgent = agentWith(keys, c);
    expect((await beforeAgent.validate(before, 'api')).spiffeId).toBe(ME);
    keys = jwtTaint(keys, old.kid, o(taintAt)).keys;
    const a = agentWith(keys, c);
    c.set(taintAt + MIN);
    expect(a.isTainted(old.kid)).toBe(true);
    expect((await a.validate(before, 'api')).spiffeId).toBe(ME); // minted before the taint: still good until it expires
    const refused = async (t: string) => (await a.validate(t, 'api').then(() => 'OK', (e: CastellanError) => e.code));
    expect(await refused(await sign(old, { sub: ME, aud: ['api'], iat: s(taintAt), exp: s(taintAt + 5 * MIN) }))).toBe('jwtsvid.tainted');
    expect(await refused(await sign(old, { sub: ME, aud: ['api'], iat: s(taintAt + MIN), exp: s(taintAt + 5 * MIN) }))).toBe('jwtsvid.tainted');
    expect(await refused(await sign(old, { sub: ME, aud: ['api'], exp: s(taintAt + 5 * MIN) }))).toBe('jwtsvid.tainted');
    // back-dated to before the taint but living longer than the CA's maximum (1 h here): a thief's token
    expect(await refused(await sign(old, { sub: ME, aud: ['api'], iat: s(taintAt - MIN), exp: s(taintAt + 2 * HOUR) }))).toBe('jwtsvid.tainted');
    // the new key is unaffected
    expect(await refused(await sign(next, { sub: ME, aud: ['api'], iat: s(taintAt + MIN), exp: s(taintAt + 5 * MIN) }))).toBe('OK');
  });
});

describe('FetchJWTSVID cache (the agent)', () => {
  it('ok/one mint per audience set (order and duplicates ignored), re-minted at half-life, and at once when its key is tainted', async () => {
    const key = newJwtKeyRecord('ES256', DAY, T0, 'active');
    const clock = new FakeClock(T0);
    let mints = 0;
    const agent = agentWith([key], clock, async () => {
      mints++;
      return { token: `t${mints}`, spiffeId: ME, expiresAt: clock.now() + 5 * MIN, keyId: key.kid };
    });
    const [x, y] = await Promise.all([agent.fetch(['a', 'b']), agent.fetch(['b', 'a', 'a'])]);
    expect([x.token, y.token, mints]).toEqual(['t1', 't1', 1]);
    expect((await agent.fetch(['c'])).token).toBe('t2');
    clock.advance(2 * MIN);
    expect((await agent.fetch(['a', 'b'])).token).toBe('t1');
    clock.advance(MIN); // past half of its 5 minutes
    expect((await agent.fetch(['a', 'b'])).token).toBe('t3');
    agent.apply({ jwtBundleJson: buildJwtView([key]).bundleJson, taintedJwtKeys: [{ keyId: key.kid, taintedAt: clock.now() }], jwtMaxTtlMs: HOUR });
    expect((await agent.fetch(['a', 'b'])).token).toBe('t4');
  });
});
