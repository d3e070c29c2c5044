import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadOrCreateSelfSigned } from '../../src/ca/keystore-file.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { tempDir } from '../support/tmp.ts';

const YEAR = 365 * 24 * 3600_000;

describe('file keystore, self-signed mode', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.cleanup());

  const opts = (dataDir: string, over: Partial<Parameters<typeof loadOrCreateSelfSigned>[0]> = {}) => ({
    dataDir,
    trustDomain: 'cluster.local',
    keyType: 'ec-p256' as const,
    rootTtlMs: 10 * YEAR,
    now: Date.now(),
    logger: silentLogger(),
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
    const script = `
      import { loadOrCreateSelfSigned } from ${JSON.stringify(new URL('../../src/ca/keystore-file.ts', import.meta.url).pathname)};
      import { silentLogger } from ${JSON.stringify(new URL('../../src/platform/logger.ts', import.meta.url).pathname)};
      const a = await loadOrCreateSelfSigned({ dataDir: ${JSON.stringify(dir)}, trustDomain: 'cluster.local', keyType: 'ec-p256', rootTtlMs: 1e11, now: Date.now(), logger: silentLogger() });
      process.stdout.write(a.id);`;
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
