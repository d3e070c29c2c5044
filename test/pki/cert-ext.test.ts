/**
 * src/pki/cert-ext.ts against certificates OpenSSL writes (an independent
 * encoder): URI SANs among other name types, in order; the authority key
 * identifier as OpenSSL prints it; absent extensions; and defects refused
 * with cert.malformed instead of a crash.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { certAuthorityKeyId, certUriSans } from '../../src/pki/cert-ext.ts';
import { describeWith, peers } from '../support/peers.ts';

/** A self-signed P-256 certificate by `openssl req -x509` with the given v3 extension lines. */
function opensslCert(dir: string, name: string, ext: string[]): Buffer {
  const cnf = join(dir, `${name}.cnf`);
  writeFileSync(cnf, ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = test', '[v3]', ...ext, ''].join('\n'));
  const pem = execFileSync('openssl', ['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, `${name}.key`), '-days', '1', '-config', cnf, '-extensions', 'v3'], { encoding: 'utf8' });
  return new X509Certificate(pem).raw;
}

/** The AKI keyid as `openssl x509 -text` prints it, lower-case hex without colons. */
function opensslAki(der: Buffer): string | undefined {
  const text = execFileSync('openssl', ['x509', '-inform', 'DER', '-noout', '-text'], { input: der, encoding: 'utf8' });
  const m = /X509v3 Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text);
  return m?.[1]!.replace(/:/g, '').toLowerCase();
}

/** Replaces the first occurrence of `from` in `der` by `to` (same length). */
function patched(der: Buffer, from: Buffer, to: Buffer): Buffer {
  const i = der.indexOf(from);
  expect(i).toBeGreaterThan(0);
  const out = Buffer.from(der);
  to.copy(out, i);
  return out;
}

describeWith([peers.openssl], 'certificate extensions read structurally (src/pki/cert-ext.ts)', () => {
  let dir: string;
  let mixed: Buffer;
  let bare: Buffer;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'castellan-cert-ext-'));
    mixed = opensslCert(dir, 'mixed', [
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid:always',
      'subjectAltName = DNS:a.example, URI:spiffe://cluster.local/ns/a/sa/b, email:x@example.org, IP:10.0.0.1, URI:https://example.org/x?y=1, otherName:1.2.3.4;UTF8:spiffe://not.a.uri/evil',
    ]);
    bare = opensslCert(dir, 'bare', ['basicConstraints = CA:FALSE']);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ok/URI SANs in order, other name types (DNS, email, IP, otherName holding a URI-like string) ignored', () => {
    expect(certUriSans(mixed)).toEqual(['spiffe://cluster.local/ns/a/sa/b', 'https://example.org/x?y=1']);
  });

  it("ok/the authority key identifier is OpenSSL's keyid", () => {
    const expected = opensslAki(mixed);
    expect(expected).toMatch(/^[0-9a-f]{40}$/);
    expect(certAuthorityKeyId(mixed)).toBe(expected);
  });

  it('ok/a certificate without SAN or AKI: [] and undefined', () => {
    expect(certUriSans(bare)).toEqual([]);
    expect(certAuthorityKeyId(bare)).toBeUndefined();
  });

  it('bad/a second SAN extension is refused, not read past', () => {
    // Rename the AKI extension's OID (2.5.29.35) to the SAN's (2.5.29.17): two SAN extensions.
    const twice = patched(mixed, Buffer.from('0603551d23', 'hex'), Buffer.from('0603551d11', 'hex'));
    expect(() => certUriSans(twice)).toThrow(expect.objectContaining({ code: 'cert.malformed', message: expect.stringContaining('appears twice') }));
  });

  it('bad/truncated, trailing bytes and non-DER lengths are cert.malformed, never a crash', () => {
    for (const der of [mixed.subarray(0, mixed.length - 10), Buffer.concat([mixed, Buffer.of(0)]), Buffer.of(0x30, 0x80, 0, 0), Buffer.alloc(0)]) {
      expect(() => certUriSans(der)).toThrow(expect.objectContaining({ code: 'cert.malformed' }));
      expect(() => certAuthorityKeyId(der)).toThrow(expect.objectContaining({ code: 'cert.malformed' }));
    }
  });
});
