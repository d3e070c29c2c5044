/**
 * CreateCertificate without a network: the service logic with hand-written
 * fakes for the signer and the token authenticator.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { opensslCsr } from '../support/csr.ts';
import { createCertificate, requestedTtlMs, type CaServiceDeps } from '../../src/server/ca-service.ts';
import { createCaMetrics } from '../../src/server/metrics.ts';
import type { SigningAuthority } from '../../src/ca/authority.ts';
import type { KeyringView } from '../../src/ca/keyring.ts';
import type { Caller, TokenAuthenticator, TokenAuthRequest } from '../../src/identity/types.ts';

const H = 3600_000;

class FakeTokenAuth implements TokenAuthenticator {
  seen: TokenAuthRequest[] = [];
  async authenticate(req: TokenAuthRequest): Promise<Caller> {
    this.seen.push(req);
    if (req.authorization[0] !== 'Bearer good') throw new CastellanError('UNAUTHENTICATED', 'auth.test', 'bad token');
    return { spiffeId: 'spiffe://td/ns/a/sa/b', identity: { trustDomain: 'td', namespace: 'a', serviceAccount: 'b' }, method: 'jwt' };
  }
  close(): void {}
}

class FakeSigner {
  calls: { csrPem: string; spiffeId: string; ttlMs: number }[] = [];
  fail?: CastellanError;
  async issue(req: { csrPem: string; spiffeId: string; ttlMs: number }) {
    this.calls.push(req);
    if (this.fail) throw this.fail;
    return { certPem: 'LEAF', certDer: new Uint8Array(), serialHex: '01', notBefore: 0, notAfter: 1, issuerId: 'issuer-1' };
  }
}

function deps(over: Partial<CaServiceDeps> = {}) {
  const signer = new FakeSigner();
  const auth = new FakeTokenAuth();
  const authority = { id: 'issuer-1', chainPem: ['INTER'], trustBundlePem: 'ROOTS', certDer: Buffer.alloc(0) } as unknown as SigningAuthority;
  const view = { active: authority, authorities: new Map([['issuer-1', authority]]), trustBundlePem: 'ROOTS', vouchingSignersDer: [authority.certDer], taintedSignersDer: [] } as unknown as KeyringView;
  const d: CaServiceDeps = {
    trustDomain: 'td',
    defaultTtlMs: 24 * H,
    maxTtlMs: 90 * 24 * H,
    view: () => view,
    signer,
    tokenAuth: auth,
    clock: new FakeClock(),
    logger: silentLogger(),
    metrics: createCaMetrics({ defaultMetrics: false }),
    ...over,
  };
  return { d, signer, auth };
}

const input = (over: Partial<Parameters<typeof createCertificate>[1]> = {}) => ({
  csr: 'CSR',
  validityDurationSec: 0n,
  authorization: ['Bearer good'],
  requestId: 'r1',
  ...over,
});

describe('CreateCertificate service logic', () => {
  it('ok/chain is [leaf, intermediates..., bundle] and the signer gets the caller identity', async () => {
    const { d, signer } = deps();
    const res = await createCertificate(d, input());
    expect(res.certChain).toEqual(['LEAF', 'INTER', 'ROOTS']);
    expect(signer.calls[0]).toMatchObject({ csrPem: 'CSR', spiffeId: 'spiffe://td/ns/a/sa/b', ttlMs: 24 * H });
  });

  it('fail/authentication happens before anything touches the CSR', async () => {
    const { d, signer } = deps();
    await expect(createCertificate(d, input({ authorization: ['Bearer bad'] }))).rejects.toMatchObject({ kind: 'UNAUTHENTICATED' });
    await expect(createCertificate(d, input({ authorization: [] }))).rejects.toMatchObject({ kind: 'UNAUTHENTICATED', code: 'auth.no_credentials' });
    expect(signer.calls).toHaveLength(0);
    expect((await d.metrics.authFailures.get()).values[0]?.value).toBe(2);
  });

  it('fail/no token method and no client certificate', async () => {
    const { d } = deps({ tokenAuth: undefined });
    await expect(createCertificate(d, input())).rejects.toMatchObject({ kind: 'UNAUTHENTICATED' });
  });

  it.each([
    ['zero → default', 0n, 24 * H],
    ['one second', 1n, 1000],
    ['exactly max', 90n * 86400n, 90 * 24 * H],
  ])('L1/ok/%s', (_n, sec, ms) => {
    expect(requestedTtlMs({ defaultTtlMs: 24 * H, maxTtlMs: 90 * 24 * H }, sec)).toBe(ms);
  });

  it.each([
    ['negative', -1n, 'ttl.negative'],
    ['max+1', 90n * 86400n + 1n, 'ttl.too_long'],
    ['int64 max (no overflow)', 2n ** 63n - 1n, 'ttl.too_long'],
    ['int64 min', -(2n ** 63n), 'ttl.negative'],
  ])('L1/fail/%s', (_n, sec, code) => {
    expect(() => requestedTtlMs({ defaultTtlMs: 24 * H, maxTtlMs: 90 * 24 * H }, sec)).toThrow(expect.objectContaining({ kind: 'INVALID_ARGUMENT', code }));
  });

  it('fail/ImpersonatedIdentity for another identity is PERMISSION_DENIED; the own identity is fine', async () => {
    const { d } = deps();
    await expect(createCertificate(d, input({ metadata: { ImpersonatedIdentity: 'spiffe://td/ns/x/sa/y' } }))).rejects.toMatchObject({ kind: 'PERMISSION_DENIED' });
    await expect(createCertificate(d, input({ metadata: { ImpersonatedIdentity: 'spiffe://td/ns/a/sa/b' } }))).resolves.toBeTruthy();
  });

  it('metrics: parsing errors and sign errors are counted apart', async () => {
    const { d, signer } = deps();
    signer.fail = new CastellanError('INVALID_ARGUMENT', 'csr.malformed', 'bad');
    await expect(createCertificate(d, input())).rejects.toMatchObject({ code: 'csr.malformed' });
    signer.fail = new CastellanError('RESOURCE_EXHAUSTED', 'signer.queue_full', 'busy');
    await expect(createCertificate(d, input({ csr: opensslCsr({ uris: ['spiffe://td/ns/a/sa/b'] }).csrPem }))).rejects.toMatchObject({ kind: 'RESOURCE_EXHAUSTED' });
    expect((await d.metrics.csrParsingErrors.get()).values[0]?.value).toBe(1);
    expect((await d.metrics.csrSignErrors.get()).values).toEqual([expect.objectContaining({ labels: { error: 'signer.queue_full' }, value: 1 })]);
  });

  it('a full queue still names a malformed CSR (no key operation); anything judged after a key operation gets the retryable refusal', async () => {
    const { d, signer } = deps();
    signer.fail = new CastellanError('RESOURCE_EXHAUSTED', 'signer.queue_full', 'busy');
    await expect(createCertificate(d, input({ csr: 'not a CSR' }))).rejects.toMatchObject({ kind: 'INVALID_ARGUMENT', code: 'csr.malformed' });
    await expect(createCertificate(d, input({ csr: opensslCsr({ rsaBits: 1024 }).csrPem }))).rejects.toMatchObject({ kind: 'INVALID_ARGUMENT', code: 'csr.key_policy' });
    // another identity is judged after the signature in the signer (which one a CSR with both faults gets
    // must not depend on the load): the retryable refusal, like a bad signature
    await expect(createCertificate(d, input({ csr: opensslCsr({ uris: ['spiffe://td/ns/a/sa/other'] }).csrPem }))).rejects.toMatchObject({ kind: 'RESOURCE_EXHAUSTED', code: 'signer.queue_full' });
    const good = opensslCsr().csrPem;
    const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = der[der.length - 5]! ^ 0x41;
    const badSig = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(createCertificate(d, input({ csr: badSig }))).rejects.toMatchObject({ kind: 'RESOURCE_EXHAUSTED', code: 'signer.queue_full' });
    await expect(createCertificate(d, input({ csr: good }))).rejects.toMatchObject({ kind: 'RESOURCE_EXHAUSTED', code: 'signer.queue_full' });
    expect((await d.metrics.csrParsingErrors.get()).values[0]?.value).toBe(2);
  });
});
