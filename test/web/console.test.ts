/**
 * `castellan console` in a real browser (Debian's headless Chromium driven by
 * playwright-core) against a real `castellan server` process: the page shows
 * the authority on its timeline, follows a `castellan ca prepare` →
 * `activate` as it happens, shows the trust bundle, the refusals read from
 * /metrics and the command that moves each authority on.
 *
 * CASTELLAN_SCREENSHOTS=docs/images writes the README's screenshot.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { get } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { launchChromium, watchPage } from '../support/browser.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const BIN = join(root, 'bin/castellan.js');
const NODE24 = join(root, 'node_modules/.bin/node');
/** expect.poll with room for a loaded machine (the page refreshes, CLI commands start a Node each). */
const poll = <T>(fn: () => T | Promise<T>) => expect.poll(fn, { timeout: 20_000, interval: 100 });

const tmp = tempDir('castellan-console-');
const procs: ChildProcess[] = [];
afterAll(() => {
  for (const p of procs) p.kill('SIGKILL');
  tmp.cleanup();
});

async function castellan(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(NODE24, [BIN, ...args], { cwd: tmp.path, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout: string; stderr: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout, stderr: x.stderr };
  }
}

/** Spawns a castellan command and resolves with the first match of `pattern` in its stdout or stderr lines. */
function start(args: string[], pattern: RegExp): Promise<RegExpExecArray> {
  const p = spawn(NODE24, [BIN, ...args], { cwd: tmp.path, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  let out = '';
  return new Promise((resolve, reject) => {
    for (const s of [p.stdout!, p.stderr!]) {
      createInterface({ input: s }).on('line', (l) => {
        out += l + '\n';
        const m = pattern.exec(l);
        if (m) resolve(m);
      });
    }
    p.once('exit', (c) => reject(new Error(`castellan ${args[0]} exited ${c}: ${out}`)));
  });
}

it('usage/console: a non-loopback --listen is refused (exit 2); --help lists the flags', async () => {
  const r = await castellan(['console', '--listen', '0.0.0.0:8181']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/not a loopback address/);
  const m = await castellan(['console', '--metrics-url', 'ftp://x']);
  expect(m.code).toBe(2);
  const h = await castellan(['console', '--help']);
  expect(h.code).toBe(0);
  expect(h.stdout).toMatch(/--admin-socket PATH/);
}, 90_000);

describeWith([peers.chromium], 'CA console in Chromium', () => {
  const data = join(tmp.path, 'ca');
  const socket = join(data, 'admin.sock');
  let url: string;
  let grpcAddr: string;
  let page: Page;
  let closeBrowser: (() => Promise<void>) | undefined;
  let watch: { foreign: string[]; errors: string[] };

  beforeAll(async () => {
    const m = await start(
      ['server', '--data-dir', data, '--plaintext', '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--manual-rotation', '--propagation-time', '3s'],
      /"event":"server.listening".*"grpc":"([^"]+)","http":"([^"]+)"/,
    );
    grpcAddr = m[1]!;
    url = (await start(['console', '--admin-socket', socket, '--listen', '127.0.0.1:0', '--refresh', '400ms', '--metrics-url', `http://${m[2]}/metrics`], /(http:\/\/\S+)/))[1]!;
    const b = await launchChromium({ width: 1500, height: 1050 });
    closeBrowser = b.close;
    page = await b.context.newPage();
    watch = watchPage(page, new URL(url).origin);
    await page.goto(url);
    await page.waitForSelector('body[data-ready="true"]');
  }, 90_000);
  afterAll(async () => {
    await closeBrowser?.();
  });

  const states = (): Promise<string[]> => page.$$eval('svg.timeline g.row', (gs) => gs.map((g) => g.getAttribute('data-state') ?? '').sort());

  it('ok/one active authority on the timeline, in the bundle, with the command that starts a rotation', async () => {
    await poll(states).toEqual(['active']);
    expect(await page.textContent('#conn')).toMatch(/^live/);
    expect(await page.textContent('.card.state-active code.cmd')).toBe(`castellan ca prepare --admin-socket ${socket}`);
    expect(await page.$$('#bundle li')).toHaveLength(1);
    expect(await page.textContent('#next-auto')).toMatch(/automatic rotation is off/);
  }, 90_000);

  it('ok/prepare → activate: the page follows each step, with when the next one is safe', async () => {
    const prep = await castellan(['ca', 'prepare', '--admin-socket', socket, '--output', 'json']);
    expect(prep.code, prep.stderr).toBe(0);
    const id = (JSON.parse(prep.stdout) as { authority: { id: string } }).authority.id;
    await poll(states).toEqual(['active', 'prepared']);
    const card = page.locator(`.card[data-id="${id}"]`);
    expect(await card.locator('code.cmd').textContent()).toBe(`castellan ca activate ${id} --admin-socket ${socket}`);
    expect(await card.textContent()).toMatch(/safe (in \d+ s|now)/);
    await poll(() => page.$$('#bundle li').then((l) => l.length)).toBe(2);
    await poll(() => card.textContent()).toMatch(/safe now/);
    const act = await castellan(['ca', 'activate', '--admin-socket', socket]);
    expect(act.code, act.stderr).toBe(0);
    await poll(states).toEqual(['active', 'old']);
    expect(await page.getAttribute(`svg.timeline g.row[data-id="${id}"]`, 'data-state')).toBe('active');
    const old = page.locator('.card.state-old code.cmd');
    expect(await old.allTextContents()).toEqual([expect.stringMatching(/^castellan ca retire [0-9a-f]+ --admin-socket /), expect.stringMatching(/^castellan ca taint [0-9a-f]+ --admin-socket /)]);
    // The timeline marks the activation of the new authority.
    expect(await page.$$(`svg.timeline g.row[data-id="${id}"] .ev-activated`)).toHaveLength(1);
  }, 90_000);

  it('ok/a refused CreateCertificate shows up among the refusals, by reason, from the server\'s /metrics', async () => {
    const client = createClient(IstioCertificateService, grpcAddr, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer not-a-token');
    await expect(client.createCertificate(create(IstioCertificateRequestSchema, { csr: 'x', validityDuration: 3600n }), { metadata: md })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    client.close();
    await poll(() => page.textContent('table.refusals')).toMatch(/authentication failed: token\s*1/);
  }, 90_000);

  it('ok/read-only and local: no foreign request, no page error, GET only, foreign Host refused', async () => {
    expect(watch.foreign).toEqual([]);
    expect(watch.errors).toEqual([]);
    const post = await fetch(new URL('/api/status', url), { method: 'POST' });
    expect(post.status).toBe(405);
    // the CA's state needs the access token of the printed address (another local user has only the port)
    const token = new URLSearchParams(new URL(url).hash.slice(1)).get('token')!;
    expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const api = new URL('/api/status', url);
    expect((await fetch(api)).status).toBe(401);
    expect((await fetch(api, { headers: { authorization: `Bearer ${token.slice(0, -1)}x` } })).status).toBe(401);
    const ok = await fetch(api, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    const st = (await ok.json()) as { authorities: { id: string }[]; bundle: { ski: string }[]; nextStep: string; nextStepAt: string };
    expect(st.authorities).toHaveLength(2);
    // the admin API's new fields: the bundle as agents serve it (its roots are the two authorities) and the next step
    expect(st.bundle.map((b) => b.ski).sort()).toEqual(st.authorities.map((a) => a.id).sort());
    expect(['retire', '']).toContain(st.nextStep);
    expect(Number.isNaN(Date.parse(st.nextStepAt))).toBe(false);
    const status = await new Promise<number>((resolve, reject) => {
      get(new URL('/api/status', url), { headers: { host: `attacker.example:${new URL(url).port}` } }, (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject);
    });
    expect(status).toBe(421);
    if (process.env.CASTELLAN_SCREENSHOTS) {
      await page.click('#win-rotation');
      await page.waitForTimeout(600);
      await page.screenshot({ path: join(root, process.env.CASTELLAN_SCREENSHOTS, 'console.png'), fullPage: true });
      await page.click('#win-validity');
    }
  }, 90_000);

  it('ok/the page says so when the server goes away', async () => {
    for (const p of procs.filter((x) => x.spawnargs.includes('server'))) p.kill('SIGTERM');
    await poll(() => page.textContent('#conn')).toMatch(/cannot read the CA: the admin API at .* did not answer/);
  }, 90_000);
});
