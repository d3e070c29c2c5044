import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SigningAuthority } from '../../src/ca/authority.ts';
import type { CaKeyType } from '../../src/ca/keys.ts';
import { fileKeystore, writeRootCertFile } from '../../src/ca/keystore-file.ts';
import { CaManager } from '../../src/ca/manager.ts';
import { systemClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { tempDir } from '../support/tmp.ts';

const YEAR = 365 * 24 * 3600_000;

interface Opts {
  dataDir: string;
  trustDomain: string;
  keyType: CaKeyType;
  rootTtlMs: number;
}

/** What the CA server does at start: open the file keystore, load or create the keyring, publish root-cert.pem. */
async function loadOrCreateSelfSigned(o: Opts): Promise<SigningAuthority> {
  const keystore = await fileKeystore({ dataDir: o.dataDir });
  const m = await CaManager.start({
    keystore,
    trustDomain: o.trustDomain,
    mode: { kind: 'self-signed', keyType: o.keyType, rootTtlMs: o.rootTtlMs },
    propagationMs: 0,
    autoRotate: false,
    maxLeafTtlMs: 3600_000,
    clock: systemClock,
    logger: silentLogger(),
  });
  const a = m.view().active;
  await writeRootCertFile(o.dataDir, m.view().trustBundlePem);
  await m.close();
  return a;
}

describe('file keystore, self-signed mode', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  const opts = (dataDir: string, over: Partial<Opts> = {}): Opts => ({
    dataDir,
    trustDomain: 'cluster.local',
    keyType: 'ec-p256',
    rootTtlMs: 10 * YEAR,
    ...over,
  });

  it('ok/creates a root on first start with private permissions and reuses it later (P2)', async () => {
    const dir = join(tmp.path, 'data');
    const a = await loadOrCreateSelfSigned(opts(dir));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'keyring.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'root-cert.pem')).mode & 0o777).toBe(0o644);
    const b = await loadOrCreateSelfSigned(opts(dir));
    expect(b.id).toBe(a.id);
    expect(b.certDer.equals(a.certDer)).toBe(true);
    expect(readFileSync(join(dir, 'root-cert.pem'), 'utf8')).toBe(a.trustBundlePem);
    // Independent parse of the root: subject O=<td>, CA, 10 years.
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'root-cert.pem')], { encoding: 'utf8' });
    expect(text).toMatch(/Subject: O ?= ?cluster\.local/);
    expect(text).toMatch(/CA:TRUE/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
    expect(a.notAfter - a.notBefore).toBeGreaterThan(9.9 * YEAR);
    expect(a.chainPem).toEqual([]);
  });

  it.each(['ec-p384', 'rsa-2048'] as const)('ok/key type %s', async (keyType) => {
    const a = await loadOrCreateSelfSigned(opts(join(tmp.path, keyType), { keyType }));
    expect(a.keyType).toBe(keyType);
  });

  it('fail/group-readable keyring is refused', async () => {
    const dir = join(tmp.path, 'data');
    await loadOrCreateSelfSigned(opts(dir));
    chmodSync(join(dir, 'keyring.json'), 0o640);
    await expect(loadOrCreateSelfSigned(opts(dir))).rejects.toThrow(/readable by group or others.*chmod 600/);
  });

  it('fail/data dir open to others is refused', async () => {
    const dir = join(tmp.path, 'open');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    await expect(loadOrCreateSelfSigned(opts(dir))).rejects.toThrow(/accessible by group or others.*chmod 700/);
  });

  it('fail/keyring of another trust domain', async () => {
    const dir = join(tmp.path, 'data');
    await loadOrCreateSelfSigned(opts(dir));
    await expect(loadOrCreateSelfSigned(opts(dir, { trustDomain: 'example.org' }))).rejects.toThrow(/belongs to trust domain "cluster.local"/);
  });

  it.each([
    ['not-json', '{'],
    ['wrong-shape', '{"version":1,"trustDomain":"cluster.local","authorities":[]}'],
    ['unknown-key', '{"version":1,"trustDomain":"cluster.local","authorities":[],"extra":1}'],
  ])('fail/corrupt keyring (%s) gives a precise error (P4)', async (_n, content) => {
    const dir = join(tmp.path, 'data');
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, 'keyring.json'), content, { mode: 0o600 });
    const err = await loadOrCreateSelfSigned(opts(dir)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CastellanError);
    expect((err as CastellanError).code).toBe('keystore.corrupt');
  });

  it('P3/several processes cold-starting at once end with exactly one root', async () => {
    const dir = join(tmp.path, 'race');
    const src = (f: string) => JSON.stringify(new URL(`../../src/${f}`, import.meta.url).pathname);
    const script = `
      import { fileKeystore } from ${src('ca/keystore-file.ts')};
      import { CaManager } from ${src('ca/manager.ts')};
      import { systemClock } from ${src('platform/clock.ts')};
      import { silentLogger } from ${src('platform/logger.ts')};
      const keystore = await fileKeystore({ dataDir: ${JSON.stringify(dir)} });
      const m = await CaManager.start({ keystore, trustDomain: 'cluster.local', mode: { kind: 'self-signed', keyType: 'ec-p256', rootTtlMs: 1e11 },
        propagationMs: 0, autoRotate: false, maxLeafTtlMs: 3600000, clock: systemClock, logger: silentLogger() });
      process.stdout.write(m.view().active.id);
      await m.close();`;
    const node = join(process.cwd(), 'node_modules/.bin/node');
    const ids = await Promise.all(
      Array.from({ length: 6 }, () =>
        new Promise<string>((resolve, reject) => {
          const p = spawn(node, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          p.stdout.on('data', (d: Buffer) => (out += d));
          p.stderr.on('data', (d: Buffer) => (err += d));
          p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(err))));
        }),
      ),
    );
    expect(new Set(ids).size).toBe(1);
    const doc = JSON.parse(readFileSync(join(dir, 'keyring.json'), 'utf8')) as { authorities: { id: string }[] };
    expect(doc.authorities.map((a) => a.id)).toEqual([ids[0]]);
  });
});
