import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPluginCa } from '../../src/ca/plugin.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { makeOpensslPki } from '../support/openssl-pki.ts';
import { tempDir } from '../support/tmp.ts';

describe('plug-in CA (Istio cacerts layout), material made by openssl', () => {
  const tmp = tempDir();
  const good = join(tmp.path, 'good');
  const other = join(tmp.path, 'other');
  beforeAll(() => {
    for (const d of [good, other]) {
      execMkdir(d);
      makeOpensslPki(d);
    }
  });
  afterAll(() => tmp.cleanup());

  function variant(name: string, mutate: (dir: string) => void): string {
    const d = join(tmp.path, name);
    execMkdir(d);
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) copyFileSync(join(good, f), join(d, f));
    chmodSync(join(d, 'ca-key.pem'), 0o600);
    mutate(d);
    return d;
  }

  it('ok/loads an intermediate that chains to the root; chain excludes the root', async () => {
    const a = await loadPluginCa(good, Date.now());
    expect(a.chainPem).toHaveLength(1);
    expect(a.chainPem[0]).toBe(readFileSync(join(good, 'ca-cert.pem'), 'utf8').replace(/\r/g, ''));
    expect(a.trustBundlePem).toContain('BEGIN CERTIFICATE');
    expect(a.id).toMatch(/^[0-9a-f]{40}$/);
  });

  it('ok/RSA-3072 intermediate', async () => {
    const d = join(tmp.path, 'rsa');
    execMkdir(d);
    makeOpensslPki(d, { rsaBits: 3072 });
    expect((await loadPluginCa(d, Date.now())).keyType).toBe('rsa-3072');
  });

  it.each([
    ['missing-file', (d: string) => rmSync(join(d, 'cert-chain.pem')), /cannot read cert-chain\.pem/],
    ['key-mismatch', (d: string) => copyFileSync(join(other, 'ca-key.pem'), join(d, 'ca-key.pem')), /private key does not match/],
    ['signer-from-another-pki', (d: string) => { copyFileSync(join(good, 'root-cert.pem'), join(d, 'root-cert.pem')); copyFileSync(join(other, 'ca-cert.pem'), join(d, 'ca-cert.pem')); copyFileSync(join(other, 'ca-key.pem'), join(d, 'ca-key.pem')); }, /does not chain to a root/],
    ['wrong-root', (d: string) => copyFileSync(join(other, 'root-cert.pem'), join(d, 'root-cert.pem')), /does not chain to a root/],
    ['garbage-root', (d: string) => writeFileSync(join(d, 'root-cert.pem'), 'hello'), /root-cert\.pem/],
    ['key-world-readable', (d: string) => chmodSync(join(d, 'ca-key.pem'), 0o644), /readable by group or others/],
    ['two-signing-certs', (d: string) => writeFileSync(join(d, 'ca-cert.pem'), readFileSync(join(good, 'cert-chain.pem'))), /exactly one certificate/],
  ])('fail/%s', async (name, mutate, msg) => {
    const d = variant(name, mutate);
    const err = await loadPluginCa(d, Date.now()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CastellanError);
    expect((err as Error).message).toMatch(msg);
  });

  it('fail/the root itself as signing cert without keyCertSign is refused', async () => {
    const d = variant('leafish', (dir) => {
      // A non-CA certificate signed by the root, used as signing cert.
      execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ca-key.pem'], { cwd: dir });
      execFileSync('openssl', ['req', '-new', '-key', 'ca-key.pem', '-subj', '/CN=leaf', '-config', '/dev/null', '-out', 'l.csr'], { cwd: dir });
      writeFileSync(join(dir, 'l.ext'), 'basicConstraints=critical,CA:false\nsubjectKeyIdentifier=hash\n');
      execFileSync('openssl', ['x509', '-req', '-in', 'l.csr', '-CA', join(good, 'root-cert.pem'), '-CAkey', join(good, 'root-key.pem'), '-CAcreateserial', '-CAserial', join(dir, 'ser'), '-days', '30', '-extfile', 'l.ext', '-out', 'ca-cert.pem'], { cwd: dir });
      chmodSync(join(dir, 'ca-key.pem'), 0o600);
    });
    await expect(loadPluginCa(d, Date.now())).rejects.toThrow(/not a CA/);
  });

  it('fail/expired intermediate', async () => {
    await expect(loadPluginCa(good, Date.now() + 400 * 24 * 3600_000)).rejects.toThrow(/expired/);
  });
});

function execMkdir(d: string): void {
  mkdirSync(d, { recursive: true, mode: 0o700 });
}
