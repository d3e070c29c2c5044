/**
 * Root rotation with real processes and real TLS, driven by the admin CLI:
 * a `castellan server`, two `castellan agent`s (frontend, backend) writing
 * their certificates to output directories, and two workloads: a backend
 * TLS server that reloads its identity and trust from its agent's files,
 * and a frontend that keeps one mutual-TLS connection open (pinging it) and
 * makes a fresh handshake every 100 ms, each side checking the other's
 * SPIFFE ID. `castellan ca prepare → activate → taint → retire` runs in
 * between; the test demands zero failed handshakes and pings.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { authorityKeyIdOf, uriSansOf } from '../../src/agent/cert-info.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const NODE = join(root, 'node_modules/.bin/node');
const BIN = join(root, 'bin/castellan.js');
const tmp = tempDir('castellan-rot-e2e-');
const procs: ChildProcess[] = [];
afterAll(() => {
  for (const p of procs) p.kill('SIGKILL');
  tmp.cleanup();
});

function start(args: string[], onLine?: (j: Record<string, unknown>) => void): ChildProcess {
  const p = spawn(NODE, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  procs.push(p);
  createInterface({ input: p.stderr! }).on('line', (l) => {
    try {
      onLine?.(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  });
  return p;
}

async function ca(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(NODE, [BIN, 'ca', ...args, '--data-dir', join(tmp.path, 'ca')], { timeout: 30_000 });
    return { code: 0, ...r };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const files = (dir: string) => ({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert-chain.pem')), ca: readFileSync(join(dir, 'root-cert.pem')) });
/** Torn reads of an output directory (a new key with the chain still old: two back-to-back renames), re-read. */
let tornReads = 0;
/** The files of `dir` as a careful workload reads them: a key that does not match its chain means "read again". */
async function consistentFiles(dir: string): Promise<ReturnType<typeof files>> {
  for (let i = 0; ; i++) {
    const f = files(dir);
    try {
      createSecureContext(f);
      return f;
    } catch (e) {
      if (i >= 5 || !/key values mismatch/.test((e as Error).message)) throw e;
      tornReads++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
const peerId = (s: TLSSocket): string | undefined => {
  const c = s.getPeerCertificate(false);
  return c?.raw ? uriSansOf(c.raw)[0] : undefined;
};

describe('rotation end to end (real processes, real TLS, admin CLI)', () => {
  it('ok/prepare → activate → taint → retire with zero failed handshakes', async () => {
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const caDir = join(tmp.path, 'ca');
    let address = '';
    start(
      ['server', '--data-dir', caDir, '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off', '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--propagation-time', '8s', '--manual-rotation', '--default-ttl', '20s', '--log-level', 'info'],
      (j) => {
        if (j.event === 'server.listening') address = j.grpc as string;
      },
    );
    await until('the CA', () => address !== '');
    const agentOut: Record<string, string> = {};
    for (const sa of ['frontend', 'backend']) {
      const d = join(tmp.path, sa);
      mkdirSync(d, { mode: 0o700 });
      writeFileSync(join(d, 'token'), await issuer.mint({ namespace: 'default', serviceAccount: sa }), { mode: 0o600 });
      agentOut[sa] = join(d, 'out');
      start(['agent', '--ca-address', address.replace('127.0.0.1', 'localhost'), '--ca-root-cert', join(caDir, 'root-cert.pem'), '--token-file', join(d, 'token'), '--sds-socket', join(d, 'sds', 'socket'), '--cert-ttl', '20s', '--output-dir', agentOut[sa]!, '--http-listen', 'off', '--log-level', 'warn']);
    }
    const fe = agentOut.frontend!;
    const be = agentOut.backend!;
    await until('both agents', () => {
      try {
        files(fe);
        files(be);
        return true;
      } catch {
        return false;
      }
    });

    // Backend workload: identity and trust follow its agent's files (re-read every 100 ms).
    let beCtx: SecureContext = createSecureContext(files(be));
    let beRaw = '';
    const reload = setInterval(() => {
      try {
        const f = files(be);
        const raw = f.key.toString() + f.cert.toString() + f.ca.toString();
        if (raw !== beRaw) {
          beRaw = raw;
          beCtx = createSecureContext(f);
        }
      } catch {
        /* mid-rename: next tick */
      }
    }, 100);
    const server = createServer({ SNICallback: (_n, cb) => cb(null, beCtx), ...files(be), requestCert: true, rejectUnauthorized: true }, (s) => {
      if (peerId(s) !== 'spiffe://cluster.local/ns/default/sa/frontend') return void s.destroy();
      s.on('data', (d) => s.write(d));
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;

    const stats = { ok: 0, failed: [] as string[], pings: 0, pingFailures: 0 };
    const handshake = async (): Promise<TLSSocket> => {
      const own = await consistentFiles(fe);
      return new Promise((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port, servername: 'backend', ...own, checkServerIdentity: (_h, cert) => (uriSansOf(cert.raw)[0] === 'spiffe://cluster.local/ns/default/sa/backend' ? undefined : new Error(`server is ${uriSansOf(cert.raw)[0]}`)) });
        s.once('secureConnect', () => resolve(s));
        s.once('error', reject);
      });
    };
    // one long-lived connection, pinged
    const long = await handshake();
    long.on('error', () => stats.pingFailures++);
    let pong = true;
    long.on('data', () => {
      pong = true;
      stats.pings++;
    });
    const pinger = setInterval(() => {
      if (!pong) stats.pingFailures++;
      pong = false;
      long.write('ping');
    }, 200);
    // fresh handshakes all along
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          const s = await handshake();
          s.destroy();
          stats.ok++;
        } catch (e) {
          stats.failed.push(`${new Date().toISOString()} ${(e as Error).message}`);
        }
        await sleep(100);
      }
    })();

    const bundleSize = () => (readFileSync(join(caDir, 'root-cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length;
    const issuerOf = (dir: string) => authorityKeyIdOf(new X509Certificate(readFileSync(join(dir, 'cert-chain.pem'))).toString());
    await sleep(1500);
    const status0 = await ca(['status', '--output', 'json']);
    expect(status0.code, status0.stderr).toBe(0);
    const oldId = (JSON.parse(status0.stdout) as { authorities: { id: string; state: string }[] }).authorities.find((a) => a.state === 'active')!.id;

    // The text form says what automatic rotation does next (the JSON form carries the same fields).
    const text0 = await ca(['status']);
    expect(text0.code, text0.stderr).toBe(0);
    const s0 = JSON.parse(status0.stdout) as { autoRotation?: boolean };
    expect(text0.stdout).toMatch(s0.autoRotation ? /^next step: (prepare|activate|retire|nothing due)/m : /^next step: none \(automatic rotation is off/m);

    const prep = await ca(['prepare']);
    const preparedAt = Date.now();
    expect(prep.code, prep.stderr).toBe(0);
    expect(prep.stdout).toMatch(/PREPARED/);
    expect(bundleSize()).toBe(2);
    // the guard: too early
    const early = await ca(['activate']);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/propagation time.*--force/);
    // both agents' workloads trust the new root before anything is signed by it
    await until('the new bundle at both workloads', () => [fe, be].every((d) => (readFileSync(join(d, 'root-cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length === 2));
    // the propagation time (8 s: long enough that a CLI start on a loaded machine stays within it)
    await sleep(Math.max(0, preparedAt + 8500 - Date.now()));
    const act = await ca(['activate']);
    expect(act.code, act.stderr).toBe(0);
    expect(act.stdout).toMatch(/ACTIVE/);
    const newId = act.stdout.split(/\s/)[0]!;
    await sleep(1500);
    const t = await ca(['taint']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toContain(oldId);
    expect(t.stdout).toMatch(/TAINTED/);
    // tainted: both agents re-issue at once from the new authority
    // tainted: agents re-issue what the old authority signed (the fake-clock test pins the timing)
    await until('both agents on the new authority', () => [fe, be].every((d) => issuerOf(d) === newId), 10_000);
    // retire: refused until the old authority's last leaf (20 s) has expired, then done
    const refused = await ca(['retire']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/still valid.*--force/);
    await until('retire', async () => (await ca(['retire'])).code === 0, 40_000);
    expect(bundleSize()).toBe(1);
    await until('the old root gone at both workloads', () => [fe, be].every((d) => (readFileSync(join(d, 'root-cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length === 1));
    await sleep(2000);

    running = false;
    await loop;
    clearInterval(pinger);
    clearInterval(reload);
    long.destroy();
    server.close();
    const final = JSON.parse((await ca(['status', '--output', 'json'])).stdout) as { authorities: { id: string; state: string }[] };
    expect(final.authorities.find((a) => a.id === oldId)!.state).toBe('retired');
    console.log(`rotation e2e: ${stats.ok} handshakes, ${stats.pings} pings, ${tornReads} torn reads of the output directory re-read`);
    expect(stats.failed).toEqual([]);
    expect(stats.pingFailures).toBe(0);
    expect(stats.ok).toBeGreaterThan(100);
    expect(stats.pings).toBeGreaterThan(50);
  }, 150_000);
});
