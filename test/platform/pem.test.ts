// The one PEM parser (src/platform/pem.ts) and how each of its four readers
// keeps its own error: CA material (pem.malformed), CSRs (csr.malformed),
// the agent's bundles (comments skipped) and Envoy's peer certificate.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { splitPemCertificates } from '../../src/agent/cert-info.ts';
import { spiffeIdOfCertificate } from '../../src/grpc/ext-authz.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { derToPem, parseCertificatesPem, parsePem, PemSyntaxError } from '../../src/platform/pem.ts';
import { csrPemToDer } from '../../src/pki/csr.ts';

const der = (n: number): Buffer => randomBytes(n);
const problemOf = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof PemSyntaxError ? e.problem : e instanceof CastellanError ? e.code : String(e);
  }
};

describe('parsePem', () => {
  it('round-trips derToPem for every length mod 3 and keeps the labels in order', () => {
    for (const n of [1, 2, 3, 47, 48, 49, 500]) {
      const a = der(n);
      const b = der(n + 1);
      const blocks = parsePem(derToPem(a) + '\n' + derToPem(b, 'CERTIFICATE REQUEST'));
      expect(blocks.map((x) => x.label)).toEqual(['CERTIFICATE', 'CERTIFICATE REQUEST']);
      expect(blocks[0]!.der.equals(a) && blocks[1]!.der.equals(b)).toBe(true);
    }
    expect(parsePem(derToPem(der(40)).replace(/\n/g, '\r\n'))).toHaveLength(1); // CRLF files
    expect(parsePem('  \n')).toEqual([]);
  });

  it('refuses text outside the blocks unless told to ignore it', () => {
    const pem = derToPem(der(30));
    for (const t of ['# comment\n' + pem, pem + 'trailer', pem + '-----BEGIN X-----\nAAAA\n-----END Y-----\n']) {
      expect(problemOf(() => parsePem(t))).toBe('outside');
    }
    expect(parsePem('# issuer: test\n' + pem + 'trailer', { outside: 'ignore' })).toHaveLength(1);
  });

  it('accepts only canonical base64, so one DER has one PEM body', () => {
    const body = (b64: string): string => `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
    expect(parsePem(body('AAE='))[0]!.der).toEqual(Buffer.from([0, 1]));
    for (const bad of ['AAF=', 'AAAB==', 'AA==AAAA', 'AAE', 'AAAAA', '====']) {
      expect(problemOf(() => parsePem(body(bad))), bad).toBe('base64');
    }
  });

  it('reads what openssl writes', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const key = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    let cert: string;
    try {
      cert = execFileSync('openssl', ['req', '-x509', '-key', '/dev/stdin', '-subj', '/CN=pem', '-days', '1'], { input: key, encoding: 'utf8' });
    } catch {
      return; // openssl absent: the round trips above still cover the grammar
    }
    const [b] = parsePem(cert);
    expect(b!.label).toBe('CERTIFICATE');
    expect(derToPem(b!.der)).toBe(cert);
  });
});

describe('the four readers keep their own errors', () => {
  const cert = derToPem(der(64));

  it('CA material: pem.malformed naming the file, pem.empty', () => {
    expect(() => parseCertificatesPem('junk\n' + cert, 'root-cert.pem')).toThrow(/root-cert.pem: unexpected text outside PEM blocks/);
    expect(problemOf(() => parseCertificatesPem('junk\n' + cert, 'x'))).toBe('pem.malformed');
    expect(problemOf(() => parseCertificatesPem('', 'x'))).toBe('pem.empty');
    expect(problemOf(() => parseCertificatesPem(derToPem(der(9), 'PRIVATE KEY'), 'x'))).toBe('pem.malformed');
  });

  it('CSRs: csr.malformed with the framing reason', () => {
    const one = derToPem(der(64), 'CERTIFICATE REQUEST');
    expect(csrPemToDer(one)).toHaveLength(64);
    expect(() => csrPemToDer(one + one)).toThrow(/more than one PEM block/);
    expect(() => csrPemToDer(cert)).toThrow(/expected one PEM block labelled CERTIFICATE REQUEST/);
    expect(() => csrPemToDer('x' + one)).toThrow(/expected one PEM block labelled CERTIFICATE REQUEST/);
    expect(() => csrPemToDer('-----BEGIN CERTIFICATE REQUEST-----\nAAF=\n-----END CERTIFICATE REQUEST-----\n')).toThrow(/malformed CSR: invalid base64/);
  });

  it("the agent's bundles: comments and other labels skipped, each certificate its own PEM", () => {
    const a = derToPem(der(40));
    const b = derToPem(der(41));
    expect(splitPemCertificates(`# Issuer: one\n${a}\n# Issuer: two\n${b}${derToPem(der(5), 'PRIVATE KEY')}`)).toEqual([a, b]);
    expect(splitPemCertificates('no pem here')).toEqual([]);
  });

  it("Envoy's URL-encoded peer certificate: no SPIFFE ID from a block that does not parse", () => {
    expect(spiffeIdOfCertificate(encodeURIComponent('-----BEGIN CERTIFICATE-----\nAAF=\n-----END CERTIFICATE-----\n'))).toBeUndefined();
    expect(spiffeIdOfCertificate('%E0%A4%A')).toBeUndefined(); // bad URL encoding
  });
});
