/**
 * The agent's CSR (src/agent/csr.ts, written with src/pki/der.ts): OpenSSL
 * verifies its self-signature and reads an empty subject, no attributes and
 * the key it holds; the CA's strict parser accepts it; the key is fresh each
 * time.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KEY_TYPES, newKeyAndCsr } from '../../src/agent/csr.ts';
import { parseAndVerifyCsr } from '../../src/pki/csr.ts';
import { describeWith, peers } from '../support/peers.ts';

describe('agent CSR', () => {
  it.each(KEY_TYPES)('ok/%s: the CA parser verifies it; its key is the private key\'s', async (t) => {
    const k = await newKeyAndCsr(t);
    const info = parseAndVerifyCsr(k.csrPem);
    expect(info.keyType).toBe(t === 'ec-p256' ? 'ec-p256' : 'rsa');
    expect(info.uriSans).toEqual([]);
    const spki = createPublicKey(createPrivateKey(k.keyPem)).export({ type: 'spki', format: 'der' });
    expect(Buffer.from(info.spki).equals(spki)).toBe(true);
    expect(k.csrPem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n([A-Za-z0-9+/=]{64}\n)*[A-Za-z0-9+/=]{1,64}\n-----END CERTIFICATE REQUEST-----\n$/);
  });

  it('ok/a fresh key for every CSR', async () => {
    const [a, b] = [await newKeyAndCsr('ec-p256'), await newKeyAndCsr('ec-p256')];
    expect(a.keyPem).not.toBe(b.keyPem);
  });
});

describeWith([peers.openssl], 'agent CSR read by OpenSSL', () => {
  it.each(KEY_TYPES)('ok/%s: `openssl req -verify` accepts it; empty subject, no attributes', async (t) => {
    const k = await newKeyAndCsr(t);
    // OpenSSL 3.0 exits 0 either way and names the outcome on stderr.
    const verify = (input: string | Buffer, inform: string): string => spawnSync('openssl', ['req', '-verify', '-noout', '-inform', inform], { input, encoding: 'utf8' }).stderr;
    expect(verify(k.csrPem, 'PEM')).toContain('self-signature verify OK');
    const text = execFileSync('openssl', ['req', '-noout', '-text'], { input: k.csrPem, encoding: 'utf8' });
    expect(text).toMatch(/Subject:\s*\n/);
    expect(text).toMatch(t === 'ec-p256' ? /NIST CURVE: P-256/ : /Public-Key: \(2048 bit\)/);
    expect(text).toMatch(t === 'ec-p256' ? /Signature Algorithm: ecdsa-with-SHA256/ : /Signature Algorithm: sha256WithRSAEncryption/);
    expect(text).toMatch(/Attributes:\s*\n\s*\(none\)/);
    // A flipped signature byte: OpenSSL refuses it (the test above can fail).
    const der = Buffer.from(k.csrPem.replace(/-----[^-]+-----|\n/g, ''), 'base64');
    der[der.length - 5]! ^= 1;
    expect(verify(der, 'DER')).toContain('self-signature verify failure');
  });
});
