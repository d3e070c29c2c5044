/**
 * Acceptance: the agent's SPIFFE Workload API driven by an independent
 * client (Python grpcio, stubs generated at test time from
 * proto/spiffe/workload/workload.proto with grpc_tools.protoc) over the Unix
 * socket, with the agent getting its identity from the real CA server:
 * - the security header is enforced on all five methods;
 * - FetchX509SVID: chain (leaf first) verified by openssl -x509_strict and
 *   Python cryptography against the bundle sent with it; the PKCS#8 key
 *   matches the leaf; a CA rotation (new root prepared, activated) and the
 *   re-issued leaf reach the open stream without reconnecting;
 * - FetchX509Bundles keyed by spiffe://<td>;
 * - a client that cancels its stream leaves nothing behind;
 * - JWT-SVIDs: minted by the CA, verified by PyJWT against the JWKS from
 *   FetchJWTBundles; refusals; a JWT key rotation reaches the open
 *   FetchJWTBundles stream; after a taint, a token signed with the tainted
 *   key is refused while one minted before the taint still validates.
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createPrivateKey } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { startRealCa, type RealCa } from '../agent/real-ca.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';
import { opensslVerify, pyCryptographyVerify } from '../support/verifiers.ts';

const PYTHON = '/usr/bin/python3';
const tmp = tempDir('castellan-wl-py-');
const stubs = join(tmp.path, 'stubs');
const work = join(tmp.path, 'work');
let ca: RealCa;
let agent: AgentHandle;

function generateStubs(): void {
  mkdirSync(stubs, { recursive: true });
  copyFileSync(join(import.meta.dirname, '../../proto/spiffe/workload/workload.proto'), join(stubs, 'workload.proto'));
  execFileSync(PYTHON, ['-m', 'grpc_tools.protoc', `-I${stubs}`, `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, join(stubs, 'workload.proto')], { stdio: 'pipe' });
}

const pems = (p: string): string[] => readFileSync(p, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)!;

describeWith([peers.pythonGrpc, peers.pyjwt, peers.openssl, peers.pyCryptography], 'Workload API interop with Python grpcio', () => {
  beforeAll(async () => {
    mkdirSync(work);
    generateStubs();
    ca = await startRealCa(tmp.path);
    agent = await startAgent(await ca.agentConfig('frontend', join(tmp.path, 'sds', 'sds.sock'), { workloadApiSocket: join(tmp.path, 'wl', 'agent.sock') }));
    await agent.cache.whenReady();
  }, 60_000);

  afterAll(async () => {
    await agent?.close();
    await ca?.stop();
    tmp.cleanup();
  });

  it('ok/socket owner-only by default (0600 in a 0700 directory)', () => {
    expect(statSync(agent.workload!.server.socketPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.path, 'wl')).mode & 0o777).toBe(0o700);
  });

  it('ok/X.509 and JWT-SVIDs through the five methods, rotation on open streams, refusals', async () => {
    const baseline = agent.cache.listenerCount;
    const py = spawn(PYTHON, [join(import.meta.dirname, 'py', 'workload_client.py'), stubs, agent.workload!.server.socketPath, work, '--jwt'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    py.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const steps: Record<string, Record<string, unknown>> = {};
    const kidsBefore: string[] = [];
    const reply = (s: string): void => void py.stdin.write(s + '\n');
    createInterface({ input: py.stdout }).on('line', (line) => {
      const m = JSON.parse(line) as { step: string };
      steps[m.step] = m;
      const act = async (): Promise<string> => {
        switch (m.step) {
          case 'wait_rotate': {
            // A CA rotation: a new root in the bundle, then signing; the agent's next leaf comes from it.
            const m = ca.server.manager;
            await m.prepare();
            await m.activate(undefined, true);
            await agent.cache.reissueNow('test');
            return 'rotated';
          }
          case 'opened':
            steps.opened = { listeners: agent.cache.listenerCount, streams: agent.workload!.server.activeStreams() };
            return 'ok';
          case 'cancelled':
            for (let i = 0; i < 100 && agent.workload!.server.activeStreams() > 0; i++) await new Promise((r) => setTimeout(r, 20));
            steps.cancelled = { listeners: agent.cache.listenerCount, streams: agent.workload!.server.activeStreams() };
            return 'ok';
          case 'wait_jwt_rotate': {
            const m = ca.server.jwtKeys!;
            kidsBefore.push(...m.view().published.map((k) => k.kid));
            await m.prepare(true);
            await m.activate(undefined, true);
            return 'ok';
          }
          case 'wait_taint': {
            const m = ca.server.jwtKeys!;
            const old = m.view().records.find((k) => k.state === 'old')!;
            // Taint times are whole seconds on the wire: keep the token minted earlier in an earlier second.
            await new Promise((r) => setTimeout(r, 1100));
            await m.taint(old.kid);
            // What a thief of the tainted key could sign now: a fresh token, correct in every other way.
            const key = createPrivateKey(old.keyPem);
            const forged = await new SignJWT({ sub: 'spiffe://cluster.local/ns/default/sa/frontend', aud: ['aud'] })
              .setProtectedHeader({ alg: old.alg, kid: old.kid, typ: 'JWT' })
              .setIssuedAt()
              .setExpirationTime('2m')
              .sign(key);
            // Let the bundle update reach the agent.
            for (let i = 0; i < 100 && !agent.workload!.jwt.isTainted(old.kid); i++) await new Promise((r) => setTimeout(r, 20));
            return JSON.stringify({ forged });
          }
          default:
            return '';
        }
      };
      if (m.step.startsWith('wait_') || m.step === 'opened' || m.step === 'cancelled') void act().then(reply);
    });
    const code = await new Promise<number | null>((res) => py.on('close', res));
    expect(stderr, stderr).toBe('');
    expect(code).toBe(0);

    for (const k of ['x509', 'bundles', 'jwt', 'jwt_bundles', 'validate', 'wrong_value']) expect(steps.no_header![k], k).toBe('INVALID_ARGUMENT');

    const id = 'spiffe://cluster.local/ns/default/sa/frontend';
    expect(steps.x509).toMatchObject({ svids: 1, federated: 0, crl: 0, spiffe_id: id, uris: [id], chain_len: 1, bundle_len: 1, key_matches: true, key_type: '_EllipticCurvePrivateKey' });
    // The chain as an independent verifier sees it: leaf first, strict X.509, against the bundle sent alongside.
    const chain = pems(join(work, 'first-chain.pem'));
    const bundle = readFileSync(join(work, 'first-bundle.pem'), 'utf8');
    expect(opensslVerify(bundle, chain, 'sslclient')).toMatch(/OK/);
    expect(opensslVerify(bundle, chain, 'sslserver')).toMatch(/OK/);
    expect(pyCryptographyVerify(bundle, chain).uris).toEqual([id]);
    expect(readFileSync(join(work, 'first-leaf.pem'), 'utf8')).toBe(chain[0]);

    // The CA rotation reached the stream that was already open: both roots, a leaf of the new one.
    expect(steps.rotated).toMatchObject({ spiffe_id: id, key_matches: true, bundle_len: 2 });
    expect(steps.rotated!.serial).not.toBe(steps.x509!.serial);
    const secondChain = pems(join(work, 'second-chain.pem'));
    expect(opensslVerify(readFileSync(join(work, 'second-bundle.pem'), 'utf8'), secondChain, 'sslclient')).toMatch(/OK/);
    expect(() => opensslVerify(bundle, secondChain, 'sslclient')).toThrow(/openssl verify failed/); // signed by the new root

    expect(steps.x509_bundles).toMatchObject({ keys: ['spiffe://cluster.local'], certs: [2] });

    // A client that cancels: its listener and stream are gone.
    expect(steps.opened).toMatchObject({ listeners: baseline + 1, streams: 1 });
    expect(steps.cancelled).toMatchObject({ listeners: baseline, streams: 0 });

    // JWT-SVIDs, checked by PyJWT against the JWKS of FetchJWTBundles.
    const jwt = steps.jwt as Record<string, unknown> & { header: Record<string, string> };
    expect(jwt).toMatchObject({ trust_domain: 'spiffe://cluster.local', sub: id, spiffe_id: id, aud: ['spiffe://cluster.local/ns/default/sa/backend'], life: 300, pyjwt_wrong_aud: 'InvalidAudienceError', cached: true });
    expect(jwt.uses).toEqual(['jwt-svid']);
    expect(jwt.header).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    expect(jwt.kids).toEqual([jwt.header.kid]);
    expect(jwt).toMatchObject({ no_audience: 'INVALID_ARGUMENT', empty_audience: 'INVALID_ARGUMENT', other_id: 'PERMISSION_DENIED' });
    expect(steps.validate).toMatchObject({ spiffe_id: id, wrong_aud: 'INVALID_ARGUMENT', garbage: 'INVALID_ARGUMENT', no_svid: 'INVALID_ARGUMENT' });
    expect(steps.validate!.claims).toMatchObject({ sub: id, aud: ['spiffe://cluster.local/ns/default/sa/backend'] });
    expect(Object.keys(steps.validate!.claims as object).sort()).toEqual(['aud', 'exp', 'iat', 'sub']);

    // The JWT key rotation reached the open FetchJWTBundles stream: the prepared key joined the set.
    const kidsAfter = steps.jwt_rotated!.kids as string[];
    expect(kidsAfter.length).toBe(2);
    expect(kidsAfter).toEqual(expect.arrayContaining(kidsBefore));

    // After taint: a token minted before the taint still validates; one signed with the tainted key now does not.
    expect(steps.tainted).toMatchObject({ old_token: 'OK', forged: 'INVALID_ARGUMENT' });

    // What the agent's /metrics says about it.
    const text = await agent.metrics.registry.metrics();
    expect(text).toMatch(/castellan_workload_api_calls\{method="FetchX509SVID",code="INVALID_ARGUMENT"\} 2/);
    expect(text).toMatch(/castellan_workload_api_calls\{method="ValidateJWTSVID",code="OK"\} \d/);
    expect(text).toMatch(/castellan_workload_api_streams\{method="FetchX509SVID"\} 0/);
    expect(text).toMatch(/castellan_workload_jwt_svids_minted 1\n/);
    expect(text).toMatch(/num_outgoing_requests\{request_type="jwt"\} 1/);
  }, 60_000);
});
