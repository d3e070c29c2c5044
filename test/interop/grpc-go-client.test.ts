/**
 * Interop: grpc-go (Debian's golang-google-grpc-dev, the gRPC implementation
 * istiod runs on) as the client of a real `castellan server` process over
 * TLS with JWT authentication: bench/grpc-go's load generator, which encodes
 * IstioCertificateRequest by hand from the field numbers of protocols.md and
 * counts the cert_chain entries of every answer. The same program drives the
 * grpc-e2e benchmark, so this also keeps the benchmark's client honest.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { grpcGoBinary, goUnavailable, startBenchServer, type BenchServer } from '../../bench/lib/e2e.ts';
import { describeWith, peers } from '../support/peers.ts';

describeWith([peers.grpcGo], 'grpc-go client ↔ Castellan CA server process (TLS, ES256 JWT)', () => {
  let server: BenchServer;
  beforeAll(async () => {
    if (!grpcGoBinary()) throw new Error(`grpc-go peer unavailable: ${goUnavailable()}`);
    server = await startBenchServer({ identities: 20, loadgen: 'go', extraArgs: ['--log-level', 'error'] });
  }, 180_000);
  afterAll(async () => {
    await server?.stop();
  });

  it('issues for every call of a closed-loop run, each answer a chain of at least leaf + root', async () => {
    const r = await server.drive({ mode: 'closed', concurrency: 8, channels: 2, durationMs: 1500 });
    expect(r.errors).toBe(0);
    expect(r.codes).toEqual({});
    expect(r.done).toBeGreaterThan(20);
    expect(r.serverCpu).toBeGreaterThan(0);
  }, 60_000);

  it('gets UNAUTHENTICATED for a token the server cannot verify (the check can fail)', async () => {
    const r = await server.drive({ mode: 'burst', total: 5, channels: 1, requests: [{ csr: 'unused', token: 'not.a.jwt' }] });
    expect(r.done).toBe(0);
    expect(r.codes).toEqual({ UNAUTHENTICATED: 5 });
  }, 60_000);

  it('gets INVALID_ARGUMENT for a validly authenticated call with a malformed CSR', async () => {
    // A valid token of the fixture with a CSR that is not PEM: authentication passes, the CSR check refuses.
    const good = await server.drive({ mode: 'burst', total: 1, channels: 1 });
    expect(good.done).toBe(1);
    const r = await server.drive({ mode: 'burst', total: 3, channels: 1, requests: [{ csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', token: server.sampleToken }] });
    expect(r.codes).toEqual({ INVALID_ARGUMENT: 3 });
  }, 60_000);
});
