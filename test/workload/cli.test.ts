/**
 * `castellan workload …` against a real agent's Workload API (the agent
 * getting its identity from the real CA), and `castellan ca … --kind jwt`
 * against the CA's admin socket: output, files and modes, exit codes.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { startRealCa, type RealCa } from '../agent/real-ca.ts';
import { tempDir } from '../support/tmp.ts';
import { opensslVerify } from '../support/verifiers.ts';
import { peers, skipWithout } from '../support/peers.ts';

const root = new URL('../..', import.meta.url).pathname;
const NODE = join(root, 'node_modules/.bin/node');
const BIN = join(root, 'bin/castellan.js');
const tmp = tempDir('castellan-wl-cli-');
let ca: RealCa;
let agent: AgentHandle;
let socket: string;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(NODE, [BIN, ...args], { timeout: 60_000, env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: '' } });
    return { code: 0, ...r };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

beforeAll(async () => {
  ca = await startRealCa(tmp.path);
  agent = await startAgent(await ca.agentConfig('frontend', join(tmp.path, 'sds', 'sds.sock'), { workloadApiSocket: join(tmp.path, 'wl', 'api.sock') }));
  await agent.cache.whenReady();
  socket = agent.workload!.server.socketPath;
}, 60_000);

afterAll(async () => {
  await agent?.close();
  await ca?.stop();
  tmp.cleanup();
});

const ID = 'spiffe://cluster.local/ns/default/sa/frontend';

describe('castellan workload', () => {
  it('ok/fetch-x509 --write: svid.0.pem, svid.0.key (0600), bundle.0.pem; the chain verifies', async () => {
    const dir = join(tmp.path, 'out');
    const r = await cli('workload', 'fetch-x509', '--socket', socket, '--write', dir, '--output', 'json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { svids: { spiffeId: string; chain: unknown[]; bundle: unknown[] }[] };
    expect(j.svids).toHaveLength(1);
    expect(j.svids[0]).toMatchObject({ spiffeId: ID });
    expect(statSync(join(dir, 'svid.0.key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'svid.0.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    if (!skipWithout(peers.openssl)) {
      expect(opensslVerify(readFileSync(join(dir, 'bundle.0.pem'), 'utf8'), [readFileSync(join(dir, 'svid.0.pem'), 'utf8')], 'sslclient')).toMatch(/OK/);
    }
    const text = await cli('workload', 'fetch-x509', '--socket', `unix://${socket}`);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^Received 1 svid after [\d.]+ms/);
    expect(text.stdout).toContain(`SPIFFE ID:          ${ID}`);
  }, 120_000);

  it('ok/fetch-jwt then validate-jwt; wrong audience → exit 1', async () => {
    const f = await cli('workload', 'fetch-jwt', '--socket', socket, '--audience', 'svc-b', '--output', 'json');
    expect(f.code).toBe(0);
    const j = JSON.parse(f.stdout) as { svids: { spiffeId: string; token: string }[]; bundles: { trustDomain: string; keys: string[] }[] };
    expect(j.svids[0]!.spiffeId).toBe(ID);
    expect(j.bundles).toEqual([{ trustDomain: 'spiffe://cluster.local', keys: [expect.stringMatching(/^[0-9a-f]{32}$/)] }]);
    const v = await cli('workload', 'validate-jwt', '--socket', socket, '--audience', 'svc-b', '--token', j.svids[0]!.token);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain(`SPIFFE ID: ${ID}`);
    const bad = await cli('workload', 'validate-jwt', '--socket', socket, '--audience', 'svc-c', '--token', j.svids[0]!.token);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/INVALID_ARGUMENT: the audience is not in the token's aud claim/);
  }, 120_000);

  it('fail/usage errors exit 2, an absent socket exits 3', async () => {
    const none = await cli('workload', 'fetch-x509');
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--socket PATH is required/);
    expect((await cli('workload', 'fetch-jwt', '--socket', socket)).code).toBe(2);
    expect((await cli('workload', 'fetch-x509', '--socket', socket, '--output', 'yaml')).code).toBe(2);
    expect((await cli('workload', 'fetch-jwt', '--socket', socket, '--audience', 'a', '--write', tmp.path)).code).toBe(2);
    expect((await cli('workload', 'nope')).code).toBe(2);
    const gone = await cli('workload', 'fetch-x509', '--socket', join(tmp.path, 'absent.sock'), '--timeout', '2s');
    expect(gone.code).toBe(3);
    expect(gone.stderr).toMatch(/no answer from the Workload API/);
  }, 120_000);
});

describe('castellan ca --kind jwt', () => {
  it('ok/status lists the JWT key; prepare → activate (guard, then --force) → taint → retire (guard)', async () => {
    const admin = ['--admin-socket', ca.server.adminSocket];
    const st = await cli('ca', 'status', ...admin, '--output', 'json');
    expect(st.code).toBe(0);
    const s = JSON.parse(st.stdout) as { jwtKeys: { id: string; state: string; source: string; keyType: string }[] };
    expect(s.jwtKeys).toEqual([expect.objectContaining({ state: 'active', source: 'jwt', keyType: 'ES256' })]);
    const first = s.jwtKeys[0]!.id;
    const p = await cli('ca', 'prepare', '--kind', 'jwt', ...admin);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/PREPARED {2}\(JWT signing key, ES256\)/);
    const early = await cli('ca', 'activate', '--kind', 'jwt', ...admin);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/less than the propagation time/);
    const forced = await cli('ca', 'activate', '--kind', 'jwt', '--force', ...admin);
    expect(forced.code).toBe(0);
    expect(forced.stderr).toMatch(/FORCED past a guard rail/);
    expect((await cli('ca', 'taint', first, '--kind', 'jwt', ...admin)).code).toBe(0);
    // A token it signed (fetch-jwt above) is still valid: retiring is guarded; forced, it goes.
    const retire = await cli('ca', 'retire', first, '--kind', 'jwt', ...admin);
    expect(retire.code).toBe(1);
    expect(retire.stderr).toMatch(/signed JWT-SVIDs that are still valid/);
    expect((await cli('ca', 'retire', first, '--kind', 'jwt', '--force', ...admin)).code).toBe(0);
    const text = await cli('ca', 'status', ...admin);
    expect(text.stdout).toMatch(new RegExp(`${first} {2}RETIRED {2}\\(JWT signing key, ES256\\)`));
    expect((await cli('ca', 'import', '--kind', 'jwt', ...admin)).code).toBe(2);
    expect((await cli('ca', 'prepare', '--kind', 'rsa', ...admin)).code).toBe(2);
  }, 180_000);
});
