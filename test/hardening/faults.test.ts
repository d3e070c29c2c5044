/**
 * Fault injection with real processes (issue 8 scope 5; security.md T7, P2,
 * P4 and the agent's side of a lost CA):
 * - T7 at the server level: the JWKS file disappears, turns to garbage,
 *   holds someone else's key, comes back;
 * - P4: keyring.json corrupted on disk (garbage, wrong shape, wrong mode)
 *   while the server runs;
 * - P2: the CA SIGKILLed in the middle of a burst of issuance and restarted
 *   on the same data directory;
 * - the agent's CA connection cut (CA SIGKILLed) while Envoy-like SDS
 *   streams are open; the CA restarted on the same address;
 * - the agent after a trust-bundle change (two known failures);
 * - disk full (a 200 KiB tmpfs) while a rotation writes the keyring.
 * (TokenReview slow, failing or returning garbage is in
 * test/identity/tokenreview.test.ts, against an HTTPS double.)
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorityKeyIdOf } from '../../src/agent/cert-info.ts';
import { secretsOf, watchSecrets } from '../../src/dev/sds-client.ts';
import { DiscoveryRequestSchema } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';
import { caClient, castellanOnce, createCertificate, freePort, killAll, sleep, startCastellan, until, type CaClient, type Proc } from './procs.ts';

// created when the tests run, not when the file is collected (vitest list leaves no directory behind)
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('castellan-faults-');
});
const procs: Proc[] = [];
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  killAll(procs);
});
afterAll(() => tmp?.cleanup());

let dirs = 0;
const freshDir = (name: string): string => {
  const d = join(tmp.path, `${++dirs}-${name}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
};

interface Ca {
  proc: Proc;
  grpc: string;
  http?: string;
  dataDir: string;
  rootPem: string;
}

/** Processes of the current test (killed after each test); suites with a beforeAll keep their own. */
async function startCa(name: string, dataDir: string, issuer: DevTokenIssuer, o: { port?: number; args?: string[]; logLevel?: string; all?: Proc[]; nodeArgs?: string[] } = {}): Promise<Ca> {
  const proc = startCastellan(name, [
    'server', '--data-dir', dataDir, '--grpc-listen', `127.0.0.1:${o.port ?? 0}`, '--http-listen', '127.0.0.1:0',
    '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--log-level', o.logLevel ?? 'info', '--shutdown-grace', '1s', ...(o.args ?? []),
  ], o.all ?? procs, { nodeArgs: o.nodeArgs });
  const l = await proc.waitFor((e) => e.event === 'server.listening', 60_000, 'server.listening');
  return { proc, grpc: l.grpc as string, http: l.http as string | undefined, dataDir, rootPem: readFileSync(join(dataDir, 'root-cert.pem'), 'utf8') };
}

async function metric(ca: Ca, name: string): Promise<number> {
  const text = await (await fetch(`http://${ca.http}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** `openssl verify -x509_strict` of every leaf against the root file, in one run; returns its output. */
function opensslVerifyAll(rootFile: string, leaves: string[], dir: string): string {
  mkdirSync(dir, { recursive: true });
  const files = leaves.map((pem, i) => {
    const f = join(dir, `leaf-${i}.pem`);
    writeFileSync(f, pem);
    return f;
  });
  const r = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', rootFile, ...files], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl verify failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber;

// ---------------------------------------------------------------------------

describe('T7 at the server level: JWKS unavailable fails closed, and recovers', () => {
  it('T7/JWKS file gone, then garbage, then another issuer\'s keys, then back: UNAVAILABLE, UNAVAILABLE, UNAUTHENTICATED, accepted', async () => {
    const d = freshDir('t7');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    const other = await DevTokenIssuer.create({ dir: join(d, 'other'), issuer: issuer.issuer });
    const ca = await startCa('server t7', join(d, 'ca'), issuer);
    const client = caClient(ca.grpc, ca.rootPem);
    cleanups.push(() => client.close());
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
    const csr = (await peculiarCsr('spiffe://cluster.local/ns/default/sa/web')).csrPem;
    const ask = () => createCertificate(client, { csr, authorization: [`Bearer ${token}`] });
    expect((await ask()).status).toBe('OK');
    const good = readFileSync(issuer.jwksPath, 'utf8');

    /** the file is re-read at most once a second: wait for the new verdict, then it must hold */
    const settlesOn = async (status: string, what: string) => {
      await until(`${what}: ${status}`, async () => (await ask()).status === status, 10_000, 200);
      for (let i = 0; i < 5; i++) {
        const o = await ask();
        expect(o.status, `${what}: ${o.details}`).toBe(status);
        await sleep(150);
      }
      return ask();
    };

    renameSync(issuer.jwksPath, `${issuer.jwksPath}.away`);
    const gone = await settlesOn('UNAVAILABLE', 'JWKS file removed');
    expect(gone.trailers['x-castellan-error']).toBe('auth.jwks_unavailable');
    expect(gone.details).not.toContain(token.split('.')[2]!);

    writeFileSync(issuer.jwksPath, '{"keys": [', { mode: 0o644 });
    await settlesOn('UNAVAILABLE', 'JWKS file truncated');

    writeFileSync(issuer.jwksPath, readFileSync(other.jwksPath));
    const foreign = await settlesOn('UNAUTHENTICATED', 'JWKS of another issuer');
    expect(foreign.trailers['x-castellan-error']).toMatch(/^auth\.token_/);
    // ...whose tokens are accepted now: the keys come from the file and only from it
    expect((await createCertificate(client, { csr, authorization: [`Bearer ${await other.mint({ namespace: 'default', serviceAccount: 'web' })}`] })).status).toBe('OK');

    writeFileSync(issuer.jwksPath, good);
    await settlesOn('OK', 'JWKS file back');
    expect(ca.proc.exited).toBeUndefined();
  }, 60_000);
});

describe('T7/T4 for a JWKS URL: bounded time, no pile-up', () => {
  it('T7/a JWKS URL that accepts connections and never answers: calls fail UNAVAILABLE within the fetch timeout, and a burst of 40 calls makes at most 2 requests to it', async () => {
    const d = freshDir('jwks-slow');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    let requests = 0;
    const sockets = new Set<Socket>();
    const slow = createHttpServer(() => {
      requests++; // ...and never answer
    });
    slow.on('connection', (c) => sockets.add(c));
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      for (const c of sockets) c.destroy();
      slow.close();
    });
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/jwks.json`;
    const proc = startCastellan('server jwks-slow', ['server', '--data-dir', join(d, 'ca'), '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off', '--jwks-uri', url, '--jwt-issuer', issuer.issuer, '--rate-limit-per-peer', '0'], procs);
    const l = await proc.waitFor((e) => e.event === 'server.listening', 60_000, 'server.listening');
    const client = caClient(l.grpc as string, readFileSync(join(d, 'ca', 'root-cert.pem')));
    cleanups.push(() => client.close());
    const csr = (await peculiarCsr()).csrPem;
    const tokens = await Promise.all(Array.from({ length: 40 }, (_, i) => issuer.mint({ namespace: 'default', serviceAccount: `w${i}` })));
    const t0 = performance.now();
    const outcomes = await Promise.all(tokens.map((t) => createCertificate(client, { csr, authorization: [`Bearer ${t}`], deadlineMs: 30_000 })));
    const ms = performance.now() - t0;
    console.log(`JWKS URL that never answers: 40 calls → ${[...new Set(outcomes.map((o) => o.status))].join(',')} in ${ms.toFixed(0)} ms, ${requests} request(s) to the JWKS URL`);
    expect(new Set(outcomes.map((o) => o.status))).toEqual(new Set(['UNAVAILABLE']));
    expect(ms, 'bounded by the fetch timeout (5 s), not the callers\' deadline').toBeLessThan(12_000);
    expect(requests, 'concurrent verifications share one fetch').toBeLessThanOrEqual(2);
    expect(proc.exited).toBeUndefined();
  }, 60_000);
});

// ---------------------------------------------------------------------------

describe('D4: an error that escapes a handler does not kill the process', () => {
  it('D4/an unhandled rejection and an uncaught exception injected into a running server are logged as bugs; the server keeps issuing', async () => {
    const d = freshDir('d4');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    const ca = await startCa('server d4', join(d, 'ca'), issuer, { nodeArgs: ['--import', join(import.meta.dirname, 'inject-escape.ts')] });
    const client = caClient(ca.grpc, ca.rootPem);
    cleanups.push(() => client.close());
    await ca.proc.waitFor((e) => e.event === 'process.uncaught_exception', 15_000, 'the injected exception to be logged');
    const events = ca.proc.events.map((e) => e.event);
    expect(events).toContain('process.unhandled_rejection');
    expect(ca.proc.events.find((e) => e.event === 'process.uncaught_exception')!.level).toBe('error');
    await sleep(200);
    expect(ca.proc.exited).toBeUndefined();
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
    const o = await createCertificate(client, { csr: (await peculiarCsr()).csrPem, authorization: [`Bearer ${token}`] });
    expect(o.status, o.details).toBe('OK');
    expect((await fetch(`http://${ca.http}/healthz`)).status).toBe(200);
  }, 60_000);
});

// ---------------------------------------------------------------------------

describe('P4: a corrupted keyring file on disk while the server runs', () => {
  it('P4/garbage, wrong shape, then a group-readable file: every change rejected and counted, issuance continues from the last good keyring, root-cert.pem unchanged', async () => {
    const d = freshDir('p4');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    const ca = await startCa('server p4', join(d, 'ca'), issuer);
    const client = caClient(ca.grpc, ca.rootPem);
    cleanups.push(() => client.close());
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
    const keyringPath = join(ca.dataDir, 'keyring.json');
    const rootPath = join(ca.dataDir, 'root-cert.pem');
    const goodKeyring = readFileSync(keyringPath, 'utf8');
    const activeId = (JSON.parse(goodKeyring) as { authorities: { id: string; state: string }[] }).authorities.find((a) => a.state === 'active')!.id;
    expect(await metric(ca, 'castellan_keyring_rejected_updates')).toBe(0);

    let rejected = 0;
    const leaves: string[] = [];
    for (const [what, corrupt] of [
      ['garbage', () => writeFileSync(keyringPath, 'this is not a keyring {{{')],
      ['wrong shape', () => writeFileSync(keyringPath, JSON.stringify({ version: 2, trustDomain: 7, authorities: 'none' }))],
      ['truncated', () => writeFileSync(keyringPath, goodKeyring.slice(0, Math.floor(goodKeyring.length / 2)))],
      ['group-readable', () => {
        writeFileSync(keyringPath, goodKeyring.replace('"generation": 1', '"generation": 2').replace('"generation":1', '"generation":2'));
        chmodSync(keyringPath, 0o644);
      }],
    ] as const) {
      corrupt();
      await until(`${what}: castellan_keyring_rejected_updates > ${rejected}`, async () => (await metric(ca, 'castellan_keyring_rejected_updates')) > rejected, 15_000, 200);
      rejected = await metric(ca, 'castellan_keyring_rejected_updates');
      const o = await createCertificate(client, { csr: (await peculiarCsr()).csrPem, authorization: [`Bearer ${token}`] });
      expect(o.status, `${what}: ${o.details}`).toBe('OK');
      expect(authorityKeyIdOf(o.chain![0]!), `${what}: signed by the last good authority`).toBe(activeId);
      leaves.push(o.chain![0]!);
      expect(readFileSync(rootPath, 'utf8'), `${what}: root-cert.pem unchanged`).toBe(ca.rootPem);
      expect((await fetch(`http://${ca.http}/readyz`)).status).toBe(200);
      chmodSync(keyringPath, 0o600);
    }
    expect(ca.proc.events.filter((e) => e.event === 'keyring.update_rejected').length).toBeGreaterThanOrEqual(4);
    expect(ca.proc.events.filter((e) => e.level === 'fatal')).toEqual([]);
    // every leaf issued meanwhile verifies against the (unchanged) root file
    expect(opensslVerifyAll(rootPath, leaves, join(d, 'verify'))).toMatch(/leaf-3\.pem: OK/);
    expect(ca.proc.exited).toBeUndefined();
  }, 90_000);
});

// ---------------------------------------------------------------------------

describe('P2: the CA killed mid-issuance and restarted on the same data directory', () => {
  it('P2/SIGKILL during a burst: the same root and issuer load back, old leaves verify with openssl against the root file, no serial ever repeats', async () => {
    const d = freshDir('p2');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    const port = await freePort();
    const dataDir = join(d, 'ca');
    const args = ['--rate-limit-per-peer', '0', '--rate-limit-per-identity', '0'];
    let ca = await startCa('server p2 (before)', dataDir, issuer, { port, args });
    const rootBefore = ca.rootPem;
    const keyringActive = () => (JSON.parse(readFileSync(join(dataDir, 'keyring.json'), 'utf8')) as { authorities: { id: string; state: string }[] }).authorities.find((a) => a.state === 'active')!.id;
    const activeBefore = keyringActive();

    const identities = await Promise.all(Array.from({ length: 40 }, async (_, i) => ({ token: await issuer.mint({ namespace: 'p2', serviceAccount: `w${i}` }), csr: (await peculiarCsr()).csrPem })));
    const burst = (client: CaClient, sink: string[], codes: Record<string, number>) => {
      let running = true;
      const loops = Array.from({ length: 48 }, async (_, k) => {
        for (let i = k; running; i += 48) {
          const id = identities[i % identities.length]!;
          const o = await createCertificate(client, { csr: id.csr, authorization: [`Bearer ${id.token}`], deadlineMs: 5000 });
          codes[o.status] = (codes[o.status] ?? 0) + 1;
          if (o.chain) sink.push(o.chain[0]!);
          else if (!running || o.status === 'UNAVAILABLE' || o.status === 'CANCELLED' || o.status === 'DEADLINE_EXCEEDED') await sleep(20);
        }
      });
      return { stop: async () => ((running = false), await Promise.all(loops)) };
    };

    const before: string[] = [];
    const codesBefore: Record<string, number> = {};
    const c1 = caClient(ca.grpc, rootBefore);
    const b1 = burst(c1, before, codesBefore);
    await until('300 certificates before the kill', () => before.length >= 300, 30_000);
    ca.proc.child.kill('SIGKILL'); // in the middle of it: 48 calls in flight
    await until('the CA to die', () => ca.proc.exited !== undefined, 10_000);
    await sleep(300);
    await b1.stop();
    c1.close();
    expect(ca.proc.exited?.signal).toBe('SIGKILL');
    // in-flight calls failed as UNAVAILABLE (retryable) and nothing else
    expect(Object.keys(codesBefore).filter((c) => !['OK', 'UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED'].includes(c))).toEqual([]);
    expect(readdirSync(dataDir).filter((f) => f.endsWith('.tmp')), 'no half-written file left').toEqual([]);

    ca = await startCa('server p2 (after)', dataDir, issuer, { port, args });
    expect(ca.rootPem, 'same trust bundle').toBe(rootBefore);
    expect(keyringActive(), 'same signing authority').toBe(activeBefore);
    const after: string[] = [];
    const c2 = caClient(ca.grpc, ca.rootPem);
    const b2 = burst(c2, after, {});
    await until('300 certificates after the restart', () => after.length >= 300, 30_000);
    await b2.stop();
    c2.close();

    const serials = [...before, ...after].map(serialOf);
    expect(new Set(serials).size, 'no serial repeats across the restart').toBe(serials.length);
    expect(new Set(after.map(authorityKeyIdOf))).toEqual(new Set([activeBefore]));
    expect(new Set(before.map(authorityKeyIdOf))).toEqual(new Set([activeBefore]));
    const out = opensslVerifyAll(join(dataDir, 'root-cert.pem'), [...before, ...after.slice(0, 50)], join(d, 'verify'));
    expect(out.trim().split('\n').filter((l) => l.endsWith(': OK'))).toHaveLength(before.length + Math.min(50, after.length));
    console.log(`P2: ${before.length} leaves before the SIGKILL (${JSON.stringify(codesBefore)}), ${after.length} after; ${serials.length} serials, all distinct`);
  }, 120_000);
});

// ---------------------------------------------------------------------------

/** connectionsTo, polled until it is `want` or `ms` have passed; the last count. */
async function settledConnections(pid: number, port: number, want: number, ms: number): Promise<number> {
  const end = Date.now() + ms;
  let n = connectionsTo(pid, port);
  while (n !== want && Date.now() < end) {
    await sleep(100);
    n = connectionsTo(pid, port);
  }
  return n;
}

/** ESTABLISHED TCP connections of process `pid` to local port `port` (from /proc: no ss needed). */
function connectionsTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const remotePort = parseInt(f[2]!.split(':')[1]!, 16);
      if (f[3] === '01' && remotePort === port && inodes.has(f[9]!)) n++;
    }
  }
  return n;
}

async function startAgent(name: string, d: string, ca: Ca, issuer: DevTokenIssuer, o: { certTtl: string; graceRatio?: string; all?: Proc[] }): Promise<{ proc: Proc; socket: string; out: string }> {
  mkdirSync(d, { mode: 0o700, recursive: true });
  writeFileSync(join(d, 'token'), await issuer.mint({ namespace: 'default', serviceAccount: name }), { mode: 0o600 });
  const socket = join(d, 'sds', 'socket');
  const out = join(d, 'out');
  const proc = startCastellan(`agent ${name}`, [
    'agent', '--ca-address', ca.grpc.replace('127.0.0.1', 'localhost'), '--ca-root-cert', join(ca.dataDir, 'root-cert.pem'), '--token-file', join(d, 'token'),
    '--sds-socket', socket, '--cert-ttl', o.certTtl, '--grace-ratio', o.graceRatio ?? '0.5', '--output-dir', out, '--http-listen', 'off', '--log-level', 'debug',
  ], o.all ?? procs);
  await proc.waitFor((e) => e.event === 'agent.issued', 30_000, 'agent.issued');
  return { proc, socket, out };
}

async function fetchDefault(socket: string): Promise<{ chainPem: string; serial: string }> {
  const c = createClient(SecretDiscoveryService, `unix:${socket}`, grpc.credentials.createInsecure());
  try {
    const res = await c.fetchSecrets(create(DiscoveryRequestSchema, { node: { id: 'envoy~faults' }, typeUrl: SECRET_TYPE_URL, resourceNames: ['default'] }), { deadline: Date.now() + 5000 });
    const chainPem = secretsOf(res).chainPem!;
    return { chainPem, serial: serialOf(chainPem) };
  } finally {
    c.close();
  }
}

describe('the agent\'s CA connection cut mid-stream (CA SIGKILLed, then back on the same address)', () => {
  it('ok/the agent keeps serving the valid certificate over the open SDS stream and FetchSecrets, fails and backs off, and pushes a new certificate on the same stream once the CA is back', async () => {
    const d = freshDir('cut');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    const port = await freePort();
    const dataDir = join(d, 'ca');
    let ca = await startCa('server cut (before)', dataDir, issuer, { port });
    // 20 s certificates renewed when 95% is left: the first renewal is due a second after issuance. With 10 s
    // certificates a full parallel run once saw the renewal 44 ms after the expiry: the agent timed its last
    // retry for the expiry itself (it now retries within half of what is left, test/agent/cache.test.ts),
    // and a CA restart on a loaded machine takes seconds of the lifetime.
    const agent = await startAgent('frontend', join(d, 'agent'), ca, issuer, { certTtl: '20s', graceRatio: '0.95' });
    const seen: { serial: string; at: number; notAfter: number }[] = [];
    const streamErrors: string[] = [];
    const w = watchSecrets(agent.socket, 'envoy~cut', (s) => {
      const c = new X509Certificate(s.chainPem);
      if (seen.at(-1)?.serial !== c.serialNumber) seen.push({ serial: c.serialNumber, at: Date.now(), notAfter: Date.parse(c.validTo) });
    }, (e) => streamErrors.push(e.message));
    cleanups.push(() => w.close());
    await until('the SDS stream to get a certificate', () => seen.length >= 1, 15_000);

    ca.proc.child.kill('SIGKILL');
    await until('the CA to die', () => ca.proc.exited !== undefined, 10_000);
    const killedAt = Date.now();
    const servingSerial = seen.at(-1)!.serial;
    const failuresAtKill = agent.proc.events.filter((e) => e.event === 'agent.issue_failed').length;
    await agent.proc.waitFor((e) => e.event === 'agent.issue_failed' && agent.proc.events.indexOf(e) >= 0 && agent.proc.events.filter((x) => x.event === 'agent.issue_failed').length >= failuresAtKill + 2, 20_000, 'two failed renewals while the CA is down');
    // still serving what it has, valid, over both SDS paths
    const during = await fetchDefault(agent.socket);
    expect(during.serial).toBe(seen.at(-1)!.serial);
    expect(new X509Certificate(during.chainPem).validToDate.getTime()).toBeGreaterThan(Date.now());
    expect(streamErrors, 'the SDS stream stays up while the CA is gone').toEqual([]);

    ca = await startCa('server cut (after)', dataDir, issuer, { port });
    await until('a new certificate on the same SDS stream', () => seen.some((s) => s.at > killedAt && s.serial !== servingSerial), 30_000);
    const fresh = await fetchDefault(agent.socket);
    expect(fresh.serial).not.toBe(servingSerial);
    opensslVerifyAll(join(dataDir, 'root-cert.pem'), [fresh.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!], join(d, 'verify'));
    // no gap: every certificate served was pushed before the previous one expired
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.at, `renewal ${i} before the previous expiry`).toBeLessThan(seen[i - 1]!.notAfter);
    expect(streamErrors).toEqual([]);
    expect(agent.proc.exited).toBeUndefined();
    // the bundle watch (TrustService) was cut too, and reconnected
    expect(agent.proc.events.some((e) => e.event === 'agent.bundle_watch_retry')).toBe(true);
    await agent.proc.stop('SIGTERM', 10_000);
  }, 90_000);
});

describe('the agent after a trust-bundle change (castellan ca prepare)', () => {
  // Found by this suite (and secrecy.test.ts), fixed in src/agent/agent.ts: on a new bundle the
  // agent replaced its CA client but dropped the open TrustService.WatchBundle stream without
  // cancelling it, and grpc-js' Client.close() does not end calls in flight: one more connection
  // per bundle change, and the process no longer exited on SIGTERM.
  // one scenario for both tests (the processes are this describe's own, killed at its end)
  let agent: { proc: Proc } | undefined;
  let caPort = 0;
  let ready: Promise<void> | undefined;
  const suiteProcs: Proc[] = [];
  afterAll(() => killAll(suiteProcs));
  const setup = () => (ready ??= scenario());
  const scenario = async () => {
    const d = freshDir('bundle');
    const issuer = await DevTokenIssuer.create({ dir: join(d, 'issuer') });
    caPort = await freePort();
    const ca = await startCa('server bundle', join(d, 'ca'), issuer, { port: caPort, args: ['--manual-rotation'], all: suiteProcs });
    agent = await startAgent('frontend', join(d, 'agent'), ca, issuer, { certTtl: '1h', all: suiteProcs });
    // Once, in a full parallel run, the agent held two connections 500 ms after its start (cause not
    // found; alone or beside CPU hogs it is always one). The leak this suite guards against never
    // settles, so wait for the steady state (at most 10 s) instead of a fixed pause.
    expect(await settledConnections(agent.proc.child.pid!, caPort, 1, 10_000), 'one connection to the CA before').toBe(1);
    const r = await castellanOnce(['ca', 'prepare', '--data-dir', ca.dataDir]);
    expect(r.code, r.stderr).toBe(0);
    await agent.proc.waitFor((e) => e.event === 'agent.bundle_pushed' && e.roots === 2, 20_000, 'the new bundle pushed');
    await sleep(2000);
  };

  it('ok/the scenario itself runs: the agent connects once, castellan ca prepare succeeds, the agent gets the new bundle pushed', async () => {
    await setup(); // (so that the tests below fail for their own reason, not the scenario's)
    expect(agent!.proc.exited).toBeUndefined();
  }, 60_000);

  it('ok/after a bundle change the agent holds one connection to the CA, not two', async () => {
    await setup();
    expect(await settledConnections(agent!.proc.child.pid!, caPort, 1, 10_000)).toBe(1);
  }, 60_000);

  it('ok/after a bundle change the agent still exits 0 within 4 s of SIGTERM', async () => {
    await setup();
    const r = await agent!.proc.stopOrKill(4000);
    expect(r.graceful).toBe(true);
    expect(r.code).toBe(0);
  }, 60_000);
});

// ---------------------------------------------------------------------------

describe('disk full while writing the keyring (a 200 KiB tmpfs)', () => {
  // One scenario, its findings asserted one per test (in order): a server whose data directory is a
  // full tmpfs is asked for a rotation step (castellan ca prepare, which first flushes the leaf
  // accounting and then writes a keyring with a new root).
  const st: {
    skip?: string;
    d: string;
    mnt: string;
    dataDir: string;
    ca?: Ca;
    client?: CaClient;
    token: string;
    goodKeyring: string;
    filesBefore: string[];
    refused?: { code: number; stdout: string; stderr: string };
    leftovers: string[];
  } = { d: '', mnt: '', dataDir: '', token: '', goodKeyring: '', filesBefore: [], leftovers: [] };
  const need = (ctx: { skip: (why?: string) => void }) => {
    if (st.skip) ctx.skip(st.skip);
  };
  const issue = async () => createCertificate(st.client!, { csr: (await peculiarCsr()).csrPem, authorization: [`Bearer ${st.token}`] });
  const keyringPath = () => join(st.dataDir, 'keyring.json');
  const suiteProcs: Proc[] = [];

  beforeAll(async () => {
    st.d = freshDir('enospc');
    st.mnt = join(st.d, 'tmpfs');
    mkdirSync(st.mnt, { mode: 0o700 });
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=200k,mode=0700', 'tmpfs', st.mnt], { encoding: 'utf8' });
    if (m.status !== 0) {
      st.skip = `cannot mount a tmpfs here (${(m.stderr || m.error?.message || `exit ${m.status}`).trim()}): the disk-full tests need root and mount(2)`;
      console.warn(`SKIPPED disk-full tests: ${st.skip}`);
      return;
    }
    const issuer = await DevTokenIssuer.create({ dir: join(st.d, 'issuer') });
    st.dataDir = join(st.mnt, 'ca');
    st.ca = await startCa('server enospc', st.dataDir, issuer, { args: ['--manual-rotation'], all: suiteProcs });
    st.client = caClient(st.ca.grpc, st.ca.rootPem);
    st.token = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
    expect((await issue()).status).toBe('OK'); // leaf accounting pending: prepare flushes it first
    st.goodKeyring = readFileSync(keyringPath(), 'utf8');
    st.filesBefore = readdirSync(st.dataDir);
    // fill the file system to the last byte
    const fd = openSync(join(st.mnt, 'filler'), 'w');
    const chunk = Buffer.alloc(4096, 0x61);
    for (const len of [4096, 1]) {
      try {
        for (;;) writeSync(fd, chunk, 0, len);
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
    }
    closeSync(fd);
    st.refused = await castellanOnce(['ca', 'prepare', '--data-dir', st.dataDir]);
    st.leftovers = readdirSync(st.dataDir).filter((f) => !st.filesBefore.includes(f));
    console.log(`ENOSPC: castellan ca prepare on a full disk → exit ${st.refused.code}: ${st.refused.stderr.trim()}\nENOSPC: files the failed write left in the data directory: ${JSON.stringify(st.leftovers)}`);
  }, 90_000);

  afterAll(async () => {
    st.client?.close();
    if (st.ca && !st.ca.proc.exited) await st.ca.proc.stop('SIGKILL');
    killAll(suiteProcs);
    if (st.skip || !st.mnt) return;
    for (let i = 0; i < 20; i++) {
      if (spawnSync('umount', [st.mnt]).status === 0) return;
      await sleep(100);
    }
    console.warn(`could not unmount ${st.mnt}`);
  });

  it('ENOSPC/the step is refused (non-zero exit, a message), the keyring on disk and root-cert.pem stay the last good ones', (ctx) => {
    need(ctx);
    expect(st.refused!.code).not.toBe(0);
    expect(st.refused!.stderr.trim()).not.toBe('');
    expect(readFileSync(keyringPath(), 'utf8')).toBe(st.goodKeyring);
    expect(readFileSync(join(st.dataDir, 'root-cert.pem'), 'utf8')).toBe(st.ca!.rootPem);
  });

  it('ENOSPC/the server keeps issuing from the same authority, status answers with one authority, nothing crashed', async (ctx) => {
    need(ctx);
    const a = await issue();
    const b = await issue();
    expect(a.status, `${a.details}; server ${JSON.stringify(st.ca!.proc.exited)}; last log lines:\n${st.ca!.proc.stderr.slice(-8).join('\n')}`).toBe('OK');
    expect(authorityKeyIdOf(a.chain![0]!)).toBe(authorityKeyIdOf(b.chain![0]!));
    const status = await castellanOnce(['ca', 'status', '--output', 'json', '--data-dir', st.dataDir]);
    expect(status.code).toBe(0);
    expect((JSON.parse(status.stdout) as { authorities: unknown[] }).authorities).toHaveLength(1);
    expect(st.ca!.proc.exited).toBeUndefined();
    expect(st.ca!.proc.events.filter((e) => e.level === 'fatal' || /uncaught|unhandled|crash/.test(String(e.event)))).toEqual([]);
  });

  // Found by this suite, fixed in src/ca/keystore-file.ts, src/platform/files.ts and src/cli/ca.ts:
  // writing the pid into keyring.json.lock failed with ENOSPC and left the lock behind; the step
  // then waited on it and failed UNAVAILABLE "locked by another process", which castellan ca
  // reported as exit 3 "cannot reach" although the server had answered.
  it('ENOSPC/castellan ca exits 1 with a message naming the full disk (not 3, "cannot reach the server", "locked by another process")', (ctx) => {
    need(ctx);
    expect(st.refused!.code).toBe(1);
    expect(st.refused!.stderr).toMatch(/ENOSPC|no space|disk (is )?full/i);
  });

  it('ENOSPC/the failed write leaves nothing behind in the data directory (no lock file, no temp file)', (ctx) => {
    need(ctx);
    expect(st.leftovers).toEqual([]);
  });

  it('ENOSPC/with space again, the step succeeds (at the latest once the stale lock has aged out) and the new root reaches root-cert.pem', async (ctx) => {
    need(ctx);
    rmSync(join(st.mnt, 'filler'), { force: true });
    // (the lock file left behind blocks keyring writes until it is 10 s old: the first attempt may wait for that)
    const t0 = Date.now();
    let r = await castellanOnce(['ca', 'prepare', '--data-dir', st.dataDir]);
    while (r.code !== 0 && Date.now() - t0 < 30_000) {
      await sleep(1000);
      r = await castellanOnce(['ca', 'prepare', '--data-dir', st.dataDir]);
    }
    console.log(`ENOSPC: with space again, prepare succeeded after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(readFileSync(keyringPath(), 'utf8')) as { authorities: unknown[] }).authorities).toHaveLength(2);
    await until('root-cert.pem to hold both roots', () => (readFileSync(join(st.dataDir, 'root-cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length === 2, 10_000);
    expect((await issue()).status).toBe('OK');
  }, 60_000);
});
