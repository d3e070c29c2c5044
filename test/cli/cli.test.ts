/**
 * The `castellan` command as users run it: real processes started through
 * bin/castellan.js (also under the machine's own, older Node, which must
 * re-exec the project's Node 24), exit codes and messages for bad
 * configuration, and a server process that issues, then drains on SIGTERM.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const BIN = join(root, 'bin/castellan.js');
const NODE24 = join(root, 'node_modules/.bin/node');
const tmp = tempDir('castellan-cli-');
afterAll(() => tmp.cleanup());

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}
async function castellan(args: string[], o: { node?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(o.node ?? NODE24, [BIN, ...args], { cwd: o.cwd ?? tmp.path, env: { ...process.env, ...o.env }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout: string; stderr: string };
    return { code: typeof x.code === 'number' ? x.code : null, stdout: x.stdout, stderr: x.stderr };
  }
}

describe('castellan CLI', () => {
  it('ok/--help works under the machine\'s own node too (re-exec into Node 24)', async () => {
    const system = (await promisify(execFile)('/usr/bin/env', ['which', '-a', 'node'], { env: { PATH: '/usr/local/bin:/usr/bin:/bin' } }).catch(() => ({ stdout: '' }))).stdout
      .split('\n')
      .find((p) => p.trim() !== '');
    for (const node of [NODE24, ...(system ? [system.trim()] : [])]) {
      const r = await castellan(['--help'], { node });
      expect(r.code, `${node}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/usage: castellan <command>/);
      for (const cmd of ['server', 'agent', 'dev', 'authz']) expect(r.stdout).toContain(cmd);
    }
  });

  it.each(['server', 'agent', 'dev'])('ok/castellan %s --help lists its flags', async (cmd) => {
    const r = await castellan([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--log-level/);
  });

  const bad: [string, string[], RegExp][] = [
    ['unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['unknown server flag', ['server', '--no-such-flag'], /no-such-flag/],
    ['plaintext on a public address', ['server', '--plaintext', '--grpc-listen', '0.0.0.0:0'], /plaintext/],
    ['bad duration', ['server', '--default-ttl', 'soon'], /--default-ttl/],
    ['default TTL above the maximum', ['server', '--default-ttl', '100d'], /default-ttl/],
    ['bad key type', ['server', '--ca-key-type', 'dsa-1024'], /ca-key-type/],
    ['a trusted node account that is not NS/SA', ['server', '--token-review', '--trusted-node-accounts', 'ztunnel'], /"ztunnel" is not NAMESPACE\/SERVICEACCOUNT/],
    ['trusted node accounts without token authentication', ['server', '--trusted-node-accounts', 'istio-system/ztunnel'], /needs token authentication/],
    ['agent without --ca-root-cert', ['agent'], /--ca-root-cert is required/],
    ['agent with a bad grace ratio', ['agent', '--ca-root-cert', 'x.pem', '--grace-ratio', '1.5'], /--grace-ratio/],
  ];
  it.each(bad)('fail/%s: exit 2 with a message naming the problem', async (_n, args, msg) => {
    const r = await castellan(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/); // a message, not a stack trace
  });

  it("fail/Istio's CA_TRUSTED_NODE_ACCOUNTS disagreeing with CASTELLAN_TRUSTED_NODE_ACCOUNTS: exit 2", async () => {
    const r = await castellan(['server', '--token-review'], { env: { CA_TRUSTED_NODE_ACCOUNTS: 'istio-system/ztunnel', CASTELLAN_TRUSTED_NODE_ACCOUNTS: 'kube-system/agent' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/both set, to different values/);
  });

  it('fail/unknown key in the config file: exit 2 naming the file and the key', async () => {
    const cfg = join(tmp.path, 'bad.yaml');
    writeFileSync(cfg, 'trustDomain: cluster.local\nmaxTTL: 1h\n');
    const r = await castellan(['server', '--config', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bad.yaml');
    expect(r.stderr).toContain('maxTTL');
  });

  it('fail/a data directory open to others is refused at start with a precise message', async () => {
    const dir = join(tmp.path, 'open-data');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const r = await castellan(['server', '--data-dir', dir, '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/open-data/);
    expect(r.stderr).toMatch(/0700|permissions|group|others/);
  });

  it('ok/castellan dev --once: CA, agents and a mutual-TLS call, exit 0', async () => {
    const r = await castellan(['dev', '--once', '--data-dir', join(tmp.path, 'dev')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/frontend\s+spiffe:\/\/cluster\.local\/ns\/default\/sa\/frontend/);
    expect(r.stdout).toMatch(/backend\s+spiffe:\/\/cluster\.local\/ns\/default\/sa\/backend/);
    expect(r.stdout).toMatch(/mTLS .*: OK/);
    expect(r.stdout).toMatch(/workload .*spiffe:\/\/cluster\.local\/ns\/default\/sa\/frontend from the Workload API → backend over mutual TLS: OK/);
    expect(r.stdout).toMatch(/jwt-svid .*validated it \(ValidateJWTSVID\): caller is spiffe:\/\/cluster\.local\/ns\/default\/sa\/frontend/);
    expect(r.stdout).toMatch(/jwt-svid .*another audience it is refused: INVALID_ARGUMENT/);
  }, 60_000);
});

describe('castellan server process', () => {
  let server: ChildProcess | undefined;
  afterAll(() => {
    server?.kill('SIGKILL');
  });

  it('ok/issues over TLS, then on SIGTERM lets calls in flight finish and exits 0', async () => {
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const data = join(tmp.path, 'srv');
    server = spawn(NODE24, [BIN, 'server', '--data-dir', data, '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off', '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--shutdown-grace', '5s'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const logs: Record<string, unknown>[] = [];
    const listening = new Promise<string>((resolve, reject) => {
      createInterface({ input: server!.stderr! }).on('line', (l) => {
        const j = JSON.parse(l) as Record<string, unknown>;
        logs.push(j);
        if (j.event === 'server.listening') resolve(j.grpc as string);
      });
      server!.once('exit', (c) => reject(new Error(`server exited (${c})`)));
    });
    const address = await listening;
    const rootPem = readFileSync(join(data, 'root-cert.pem'));
    const client = createClient(IstioCertificateService, address, grpc.credentials.createSsl(rootPem), { 'grpc.ssl_target_name_override': 'localhost' } as grpc.ClientOptions);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}`);
    const csr = (await peculiarCsr('spiffe://cluster.local/ns/default/sa/web')).csrPem;
    const req = create(IstioCertificateRequestSchema, { csr, validityDuration: 3600n });
    const first = await client.createCertificate(req, { metadata: md });
    expect(first.certChain).toHaveLength(2);

    // A burst in flight, then SIGTERM: every call settles, none with an error other than UNAVAILABLE.
    const calls = Array.from({ length: 40 }, () => client.createCertificate(req, { metadata: md, deadline: Date.now() + 10_000 }).then(() => 'OK', (e: grpc.ServiceError) => grpc.status[e.code]));
    await new Promise((r) => setTimeout(r, 5));
    server.kill('SIGTERM');
    const exit = new Promise<number | null>((r) => server!.once('exit', (c) => r(c)));
    const outcomes = await Promise.all(calls);
    expect(outcomes.filter((o) => o !== 'OK' && o !== 'UNAVAILABLE')).toEqual([]);
    expect(outcomes).toContain('OK');
    expect(await exit).toBe(0);
    client.close();
    expect(logs.map((l) => l.event)).toContain('server.stopped');
  }, 60_000);
});
