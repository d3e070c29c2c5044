/**
 * security.md D5, end to end: a real `castellan server` and two real
 * `castellan agent` processes at --log-level trace, a run that includes
 * every kind of failure (bad, expired and wrong-audience tokens, bad CSRs, a
 * CSR for another identity, an oversized request, a TTL over the maximum,
 * impersonation, refused SDS names, `castellan ca` refusals) and a root
 * rotation step, with everything captured: stdout and stderr of every
 * process, /metrics /healthz /readyz of the server and the agent, and every
 * status, message, header and trailer the clients saw. Then no private key
 * (CA keys from the keyring file, every key the agent wrote to its
 * --output-dir or served over SDS, the CSR keys, the token issuer's key), no
 * token (nor its signature) and no CSR appears anywhere in it.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretsOf } from '../../src/dev/sds-client.ts';
import { TrustService, WatchBundleRequestSchema } from '../../src/gen/castellan/v1/trust_pb.js';
import { DiscoveryRequestSchema } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { opensslCsr, peculiarCsr, type TestCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';
import { caClient, castellanOnce, createCertificate, freePort, killAll, sleep, startCastellan, until, type CallOutcome, type Proc } from './procs.ts';

// created when the tests run, not when the file is collected (vitest list leaves no directory behind)
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('castellan-secrecy-');
});
const procs: Proc[] = [];
afterAll(() => {
  killAll(procs);
  tmp?.cleanup();
});

// ---- what must never appear, in every form a leak could take ----

interface Needle {
  what: string;
  text: string;
}

const body = (pem: string): string => pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
const bodyLines = (pem: string): string[] => pem.split(/\r?\n/).filter((l) => !l.startsWith('-----') && l.trim().length >= 20);

/** A private key (PKCS#8 or SEC1 PEM): its PEM body (whole and by line), DER in hex and base64url, and the private JWK members. */
function keyNeedles(what: string, pem: string): Needle[] {
  const der = Buffer.from(body(pem), 'base64');
  const out: Needle[] = [
    { what: `${what} (PEM body)`, text: body(pem) },
    ...bodyLines(pem).map((l, i) => ({ what: `${what} (PEM line ${i + 1})`, text: l })),
    { what: `${what} (DER hex)`, text: der.toString('hex') },
    { what: `${what} (DER base64url)`, text: der.toString('base64url') },
  ];
  const jwk = createPrivateKey(pem).export({ format: 'jwk' }) as Record<string, string | undefined>;
  for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
    if (jwk[m]) out.push({ what: `${what} (JWK ${m})`, text: jwk[m]! }, { what: `${what} (${m} hex)`, text: Buffer.from(jwk[m]!, 'base64url').toString('hex') });
  }
  return out;
}

function tokenNeedles(what: string, token: string): Needle[] {
  const [, , sig] = token.split('.');
  return [
    { what: `${what} (token)`, text: token },
    { what: `${what} (token signature)`, text: sig! },
  ];
}

function csrNeedles(what: string, pem: string): Needle[] {
  return [{ what: `${what} (CSR PEM body)`, text: body(pem) }, ...bodyLines(pem).map((l, i) => ({ what: `${what} (CSR line ${i + 1})`, text: l }))];
}

/** JSON-escaped PEM in a log line keeps each line intact; this view also joins them back. */
const normalized = (s: string): string => s.replace(/\\[nr]/g, '').replace(/\\\//g, '/').replace(/\s+/g, '');

function findLeaks(sources: Record<string, string>, needles: Needle[], publicText: string): { leaks: string[]; dropped: number } {
  const pub = publicText + '\n' + normalized(publicText);
  // A needle that also occurs in public material (certificates, bundles) says nothing about a secret.
  const real = needles.filter((n) => n.text.length >= 16 && !pub.includes(n.text));
  const leaks: string[] = [];
  for (const [src, text] of Object.entries(sources)) {
    const views = [text, normalized(text), text.toLowerCase()];
    for (const n of real) if (views.some((v) => v.includes(n.text))) leaks.push(`${n.what} found in ${src}`);
  }
  return { leaks, dropped: needles.length - real.length };
}

describe('D5: a traced full run leaks no key, token or CSR anywhere', () => {
  it('D5/server and agents at trace, with failures, castellan ca refusals and a rotation step: nothing secret in logs, metrics, errors or output', async () => {
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const caDir = join(tmp.path, 'ca');
    const server = startCastellan('server', [
      'server', '--data-dir', caDir, '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0',
      '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--log-level', 'trace',
      '--manual-rotation', '--propagation-time', '1h', '--max-request-bytes', '65536', '--shutdown-grace', '2s',
    ], procs);
    const listening = await server.waitFor((e) => e.event === 'server.listening', 60_000, 'server.listening');
    const grpcAddr = listening.grpc as string;
    const httpAddr = listening.http as string;
    const rootPath = join(caDir, 'root-cert.pem');
    const rootPem = readFileSync(rootPath, 'utf8');

    const tokens: { what: string; token: string }[] = [];
    const mint = async (what: string, o: Parameters<DevTokenIssuer['mint']>[0]) => {
      const token = await issuer.mint(o);
      tokens.push({ what, token });
      return token;
    };
    const csrs: { what: string; csr: TestCsr }[] = [];
    const csr = async (what: string, uri?: string) => {
      const c = await peculiarCsr(uri);
      csrs.push({ what, csr: c });
      return c.csrPem;
    };

    // Two agents: one that works (short certificates, so it renews with fresh keys during the run),
    // one whose token has expired (it fails and retries, at trace level).
    const agentDirs: Record<string, string> = {};
    const agents: Record<string, Proc> = {};
    const agentHttp: Record<string, string> = {};
    for (const [sa, expired] of [['frontend', false], ['stale', true]] as const) {
      const d = join(tmp.path, sa);
      mkdirSync(d, { mode: 0o700 });
      const token = await mint(`agent ${sa}`, expired ? { namespace: 'default', serviceAccount: sa, now: Date.now() - 3 * 3600_000, ttlSeconds: 600 } : { namespace: 'default', serviceAccount: sa });
      writeFileSync(join(d, 'token'), token, { mode: 0o600 });
      agentDirs[sa] = d;
      agentHttp[sa] = `127.0.0.1:${await freePort()}`;
      agents[sa] = startCastellan(`agent ${sa}`, [
        'agent', '--ca-address', grpcAddr.replace('127.0.0.1', 'localhost'), '--ca-root-cert', rootPath, '--token-file', join(d, 'token'),
        '--sds-socket', join(d, 'sds', 'socket'), '--cert-ttl', '6s', '--output-dir', join(d, 'out'), '--http-listen', agentHttp[sa]!, '--log-level', 'trace',
      ], procs);
    }

    // Every key the working agent ever holds: its output directory, polled.
    const agentKeys = new Set<string>();
    const publicPem = new Set<string>([rootPem]);
    const poll = setInterval(() => {
      try {
        agentKeys.add(readFileSync(join(agentDirs.frontend!, 'out', 'key.pem'), 'utf8'));
        publicPem.add(readFileSync(join(agentDirs.frontend!, 'out', 'cert-chain.pem'), 'utf8'));
      } catch {
        /* not written yet, or mid-rename */
      }
    }, 100);

    // ---- the clients: one success and every failure class ----
    const client = caClient(grpcAddr, rootPem);
    const outcomes: { what: string; o: CallOutcome }[] = [];
    const call = async (what: string, r: Parameters<typeof createCertificate>[1], expected: string) => {
      const o = await createCertificate(client, r);
      outcomes.push({ what, o });
      expect(o.status, `${what}: ${o.details}`).toBe(expected);
      for (const c of o.chain ?? []) publicPem.add(c);
      return o;
    };
    const me = 'spiffe://cluster.local/ns/secrecy/sa/me';
    const good = await mint('caller', { namespace: 'secrecy', serviceAccount: 'me' });
    await call('valid request', { csr: await csr('valid', me), authorization: [`Bearer ${good}`] }, 'OK');
    await call('garbage token', { csr: await csr('garbage-token', me), authorization: ['Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'] }, 'UNAUTHENTICATED');
    await call('expired token', { csr: await csr('expired-token', me), authorization: [`Bearer ${await mint('expired', { namespace: 'secrecy', serviceAccount: 'me', now: Date.now() - 7200_000, ttlSeconds: 60 })}`] }, 'UNAUTHENTICATED');
    await call('token for another audience', { csr: await csr('wrong-aud', me), authorization: [`Bearer ${await mint('wrong-aud', { namespace: 'secrecy', serviceAccount: 'me', audiences: ['https://kubernetes.default.svc'] })}`] }, 'UNAUTHENTICATED');
    await call('token with a tampered signature', { csr: await csr('tampered', me), authorization: [`Bearer ${good.slice(0, -4)}AAAA`] }, 'UNAUTHENTICATED');
    await call('odd Bearer prefix', { csr: await csr('odd-prefix', me), authorization: [`Bearer  ${good}`] }, 'UNAUTHENTICATED');
    await call('no credentials', { csr: await csr('no-credentials', me) }, 'UNAUTHENTICATED');
    await call('garbage CSR', { csr: '-----BEGIN CERTIFICATE REQUEST-----\nTUlJQmFkQ1NS\n-----END CERTIFICATE REQUEST-----\n', authorization: [`Bearer ${good}`] }, 'INVALID_ARGUMENT');
    const weak = opensslCsr({ rsaBits: 1024 });
    csrs.push({ what: 'rsa-1024', csr: weak });
    await call('RSA-1024 CSR', { csr: weak.csrPem, authorization: [`Bearer ${good}`] }, 'INVALID_ARGUMENT');
    const truncated = await csr('truncated');
    await call('truncated CSR', { csr: truncated.slice(0, 200) + '\n-----END CERTIFICATE REQUEST-----\n', authorization: [`Bearer ${good}`] }, 'INVALID_ARGUMENT');
    await call('CSR for another identity', { csr: await csr('other-identity', 'spiffe://cluster.local/ns/kube-system/sa/admin'), authorization: [`Bearer ${good}`] }, 'PERMISSION_DENIED');
    await call('impersonation', { csr: await csr('impersonation', me), authorization: [`Bearer ${good}`], metadata: { ImpersonatedIdentity: 'spiffe://cluster.local/ns/kube-system/sa/admin' } }, 'PERMISSION_DENIED');
    await call('TTL over the maximum', { csr: await csr('ttl', me), ttlSec: 10n ** 12n, authorization: [`Bearer ${good}`] }, 'INVALID_ARGUMENT');
    await call('oversized request', { csr: (await csr('oversized', me)) + 'x'.repeat(70_000), authorization: [`Bearer ${good}`] }, 'RESOURCE_EXHAUSTED');
    await call('server still serves', { csr: await csr('after', me), authorization: [`Bearer ${good}`] }, 'OK');
    for (const { what, o } of outcomes) {
      if (o.status === 'OK') continue;
      expect(o.details, `${what}: a refusal has a message`).toBeTruthy();
    }
    expect(outcomes.some((x) => x.o.trailers['x-castellan-error']), 'the trailers were captured').toBe(true);

    // TrustService with a bad token: the stream's refusal is captured too.
    const trust = createClient(TrustService, grpcAddr, grpc.credentials.createSsl(Buffer.from(rootPem)), { 'grpc.ssl_target_name_override': 'localhost' } as grpc.ClientOptions);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${good.slice(0, -6)}AAAAAA`);
    const trustError = await new Promise<string>((resolve) => {
      const s = trust.watchBundle(create(WatchBundleRequestSchema, {}), { metadata: md, deadline: Date.now() + 2000 }) as unknown as NodeJS.EventEmitter;
      s.on('data', () => resolve('unexpected data'));
      s.on('error', (e: grpc.ServiceError) => resolve(`${grpc.status[e.code]} ${e.details} ${JSON.stringify(e.metadata?.getMap() ?? {})}`));
    });
    trust.close();
    expect(trustError).toMatch(/^UNAUTHENTICATED/);

    // The working agent issues (and renews with a fresh key); SDS serves it, and refuses a foreign name.
    await agents.frontend!.waitFor((e) => e.event === 'agent.issued', 30_000, 'agent.issued');
    const sdsSocket = join(agentDirs.frontend!, 'sds', 'socket');
    const sds = createClient(SecretDiscoveryService, `unix:${sdsSocket}`, grpc.credentials.createInsecure());
    const served = await sds.fetchSecrets(create(DiscoveryRequestSchema, { node: { id: 'envoy~secrecy' }, typeUrl: SECRET_TYPE_URL, resourceNames: ['default', 'ROOTCA'] }), { deadline: Date.now() + 5000 });
    const sec = secretsOf(served);
    agentKeys.add(sec.keyPem!);
    publicPem.add(sec.chainPem!).add(sec.bundlePem!);
    const sdsErrors: string[] = [];
    for (const name of ['file-cert:/etc/ssl/private/key.pem', 'kubernetes://istio-system/cacerts', sec.keyPem!.slice(0, 100)]) {
      try {
        await sds.fetchSecrets(create(DiscoveryRequestSchema, { node: { id: 'envoy~secrecy' }, typeUrl: SECRET_TYPE_URL, resourceNames: [name] }), { deadline: Date.now() + 5000 });
        sdsErrors.push(`served ${name}`);
      } catch (e) {
        const se = e as grpc.ServiceError;
        sdsErrors.push(`${grpc.status[se.code]} ${se.details} ${JSON.stringify(se.metadata?.getMap() ?? {})}`);
      }
    }
    sds.close();
    expect(sdsErrors.every((s) => s.startsWith('NOT_FOUND'))).toBe(true);

    // castellan ca: a status, a successful prepare (a new root key in the keyring), then refusals.
    const dataDirArgs = ['--data-dir', caDir];
    const ca: { what: string; code: number; stdout: string; stderr: string }[] = [];
    for (const [what, args, code] of [
      ['status', ['status', '--output', 'json'], 0],
      ['prepare', ['prepare'], 0],
      ['activate before the propagation time (guard)', ['activate'], 1],
      ['taint with no previous authority', ['taint'], 1],
      ['retire an unknown id', ['retire', 'deadbeefdeadbeef'], 1],
      ['status after', ['status'], 0],
    ] as const) {
      const r = await castellanOnce(['ca', ...args, ...dataDirArgs]);
      ca.push({ what, ...r });
      expect(r.code, `castellan ca ${args.join(' ')}: ${r.stderr}`).toBe(code);
    }
    // the agent follows the new bundle, and renews again
    await until('the agent to hold 3 keys', () => agentKeys.size >= 3, 30_000);

    const scrape = async (base: string) => {
      const out: string[] = [];
      for (const p of ['/metrics', '/healthz', '/readyz']) out.push(`${p}\n${await (await fetch(`http://${base}${p}`)).text()}`);
      return out.join('\n');
    };
    const serverOps = await scrape(httpAddr);
    const agentOps = await scrape(agentHttp.frontend!);
    const staleOps = await scrape(agentHttp.stale!);
    expect(serverOps).toMatch(/citadel_server_csr_count [1-9]/);
    expect(agentOps).toMatch(/cert_expiry_seconds/);

    // Everything stops cleanly (shutdown logs are part of the record).
    clearInterval(poll);
    client.close();
    for (const a of Object.values(agents)) expect((await a.stop('SIGTERM', 10_000)).code).toBe(0);
    expect((await server.stop()).code).toBe(0);
    try {
      agentKeys.add(readFileSync(join(agentDirs.frontend!, 'out', 'key.pem'), 'utf8'));
    } catch {
      /* removed on close */
    }

    // ---- the secrets this run knows ----
    const keyring = JSON.parse(readFileSync(join(caDir, 'keyring.json'), 'utf8')) as { authorities: { id: string; keyPem: string }[]; jwtKeys?: { kid: string; keyPem: string }[] };
    expect(keyring.authorities.length, 'prepare added a second authority').toBe(2);
    expect(keyring.jwtKeys?.length, 'the JWT-SVID signing key').toBe(1);
    const devKey = JSON.parse(readFileSync(join(tmp.path, 'issuer', 'dev-issuer-key.json'), 'utf8')) as { d: string };
    const needles: Needle[] = [
      ...keyring.authorities.flatMap((a) => keyNeedles(`CA key ${a.id}`, a.keyPem)),
      ...(keyring.jwtKeys ?? []).flatMap((k) => keyNeedles(`JWT signing key ${k.kid}`, k.keyPem)),
      ...[...agentKeys].flatMap((k, i) => keyNeedles(`agent key #${i + 1}`, k)),
      ...csrs.flatMap((c) => [...keyNeedles(`CSR key (${c.what})`, c.csr.keyPem), ...csrNeedles(c.what, c.csr.csrPem)]),
      ...tokens.flatMap((t) => tokenNeedles(t.what, t.token)),
      { what: 'token issuer key (JWK d)', text: devKey.d },
      { what: 'token issuer key (d hex)', text: Buffer.from(devKey.d, 'base64url').toString('hex') },
    ];
    expect(agentKeys.size).toBeGreaterThanOrEqual(3);

    // ---- everything that was said ----
    const sources: Record<string, string> = {
      ...Object.fromEntries(procs.flatMap((p) => [[`${p.name} stdout`, p.stdout.join('')], [`${p.name} stderr`, p.stderr.join('\n')]])),
      'server /metrics /healthz /readyz': serverOps,
      'agent frontend /metrics /healthz /readyz': agentOps,
      'agent stale /metrics /healthz /readyz': staleOps,
      'gRPC outcomes (status, details, headers, trailers)': JSON.stringify(outcomes),
      'TrustService error': trustError,
      'SDS errors': sdsErrors.join('\n'),
      ...Object.fromEntries(ca.map((c) => [`castellan ca ${c.what}`, `${c.stdout}\n${c.stderr}`])),
    };

    // The record is the one wanted: trace-level logs from every process, every failure logged.
    const levels = (p: Proc) => new Set(p.events.map((e) => e.level));
    expect(levels(server)).toContain('debug'); // the code logs nothing at trace itself; debug is the most detailed it says
    expect(levels(server)).toContain('warn');
    expect(levels(agents.frontend!)).toContain('debug');
    expect(agents.stale!.events.some((e) => e.event === 'agent.issue_failed')).toBe(true);
    expect(server.events.filter((e) => e.event === 'ca.request_failed').length).toBeGreaterThanOrEqual(10);
    expect(server.events.some((e) => e.event === 'admin.refused')).toBe(true);

    // The detector works: every kind of needle is found when planted the way a logger would write it.
    const planted = { leak: keyring.authorities[0]!.keyPem, token: good, csr: csrs[0]!.csr.csrPem, agentKey: [...agentKeys][0]! };
    expect(findLeaks({ planted: JSON.stringify(planted) }, needles, '').leaks.length).toBeGreaterThan(4);
    expect(findLeaks({ planted: `d=${Buffer.from(devKey.d, 'base64url').toString('hex').toUpperCase()}` }, needles, '').leaks).not.toEqual([]);

    const publicText = [...publicPem].join('\n') + [...publicPem].flatMap((p) => p.split('-----END CERTIFICATE-----').map((c) => c.includes('BEGIN') ? new X509Certificate(c + '-----END CERTIFICATE-----\n').raw.toString('hex') : '')).join('\n');
    const { leaks, dropped } = findLeaks(sources, needles, publicText);
    console.log(`D5: ${needles.length} needles (${dropped} dropped as public), ${Object.keys(sources).length} sources, ${Object.values(sources).reduce((n, s) => n + s.length, 0)} characters searched`);
    expect(leaks).toEqual([]);
    await sleep(0);
  }, 150_000);
});
