/**
 * CSRs made by the libraries workloads really use, through the strict parser
 * (security.md C5): Python cryptography and Go crypto/x509 emit non-critical
 * extensions without the DEFAULT FALSE flag, as DER requires, so refusing an
 * encoded FALSE (csr.malformed) costs them nothing. OpenSSL's CSRs are in
 * csr.test.ts (ok/openssl-…).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseAndVerifyCsr } from '../../src/pki/csr.ts';
import { describeWith, peers } from '../support/peers.ts';

const ID = 'spiffe://cluster.local/ns/default/sa/web';
const here = new URL('.', import.meta.url).pathname;

const PY = `
import sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
key = ec.generate_private_key(ec.SECP256R1()) if sys.argv[2] == 'ec' else rsa.generate_private_key(65537, 2048)
csr = (x509.CertificateSigningRequestBuilder()
  .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'ignored')]))
  .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(sys.argv[1]), x509.DNSName('a.example')]), critical=False)
  .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
  .sign(key, hashes.SHA256()))
sys.stdout.write(csr.public_bytes(serialization.Encoding.PEM).decode())
`;

describeWith([peers.pyCryptography], 'CSRs from Python cryptography', () => {
  it.each(['ec', 'rsa'])('ok/python-cryptography-%s with a non-critical SAN and a critical key usage', (kind) => {
    const pem = execFileSync('python3', ['-c', PY, ID, kind], { encoding: 'utf8' });
    expect(parseAndVerifyCsr(pem).uriSans).toEqual([ID]);
  });
});

describeWith([peers.go], 'CSRs from Go crypto/x509', () => {
  it('ok/go-x509 with a URI SAN, a DNS SAN and a non-critical extra extension', () => {
    const dir = mkdtempSync(join(tmpdir(), 'castellan-go-csr-'));
    try {
      const bin = join(dir, 'go-csr');
      execFileSync('go', ['build', '-o', bin, join(here, 'go-csr/main.go')], {
        env: { ...process.env, GO111MODULE: 'off', GOCACHE: process.env.GOCACHE ?? join(tmpdir(), 'castellan-gocache'), GOPATH: join(dir, 'gopath') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const pem = execFileSync(bin, [ID], { encoding: 'utf8' });
      expect(parseAndVerifyCsr(pem)).toMatchObject({ keyType: 'ec-p256', uriSans: [ID] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
