/**
 * `castellan authz playground` in a real browser (Debian's headless Chromium
 * driven by playwright-core): the page decides with the authz engine as the
 * user types, shows YAML and validation errors at their line, runs a pasted
 * suite, and exports files that the real `castellan authz check` and
 * `authz test` accept unchanged and decide the same way.
 *
 * CASTELLAN_SCREENSHOTS=docs/images writes the README's screenshot.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { launchChromium, watchPage } from '../support/browser.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';

const root = new URL('../..', import.meta.url).pathname;
const BIN = join(root, 'bin/castellan.js');
const NODE24 = join(root, 'node_modules/.bin/node');

async function castellan(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(NODE24, [BIN, ...args], { cwd, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout: string; stderr: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout, stderr: x.stderr };
  }
}

/** Starts `castellan authz playground` and resolves with its URL. */
async function startPlayground(args: string[], cwd = root): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(NODE24, [BIN, 'authz', 'playground', '--listen', '127.0.0.1:0', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const m = /(http:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (c) => reject(new Error(`playground exited ${c}: ${err}`)));
  });
  return { url, proc };
}

/** expect.poll with room for a loaded machine (the page refreshes, CLI commands start a Node each). */
const poll = <T>(fn: () => T | Promise<T>) => expect.poll(fn, { timeout: 20_000, interval: 100 });

const tmp = tempDir('castellan-playground-');
afterAll(() => tmp.cleanup());

it('usage/a --listen address that is not loopback is refused (exit 2) unless --allow-remote', async () => {
  const r = await castellan(['authz', 'playground', '--listen', '0.0.0.0:0'], tmp.path);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/not a loopback address.*--allow-remote/);
  const bad = await castellan(['authz', 'playground', '--listen', 'localhost'], tmp.path);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/--listen must be HOST:PORT/);
  const help = await castellan(['authz', '--help'], tmp.path);
  expect(help.stdout).toMatch(/playground/);
}, 90_000);

describeWith([peers.chromium], 'policy playground in Chromium', () => {
  let closeBrowser: () => Promise<void>;
  let pg: { url: string; proc: ChildProcess };
  let page: Page;
  let watch: { foreign: string[]; errors: string[] };

  beforeAll(async () => {
    pg = await startPlayground([]);
    const b = await launchChromium();
    closeBrowser = b.close;
    page = await b.context.newPage();
    watch = watchPage(page, new URL(pg.url).origin);
    await page.goto(pg.url);
    await page.waitForSelector('body[data-ready="true"]');
  }, 60_000);
  afterAll(async () => {
    await closeBrowser?.();
    pg?.proc.kill('SIGTERM');
  });

  const decision = async (): Promise<string> => (await page.textContent('#decision'))!.trim();
  const decidedBy = async (): Promise<string> => (await page.textContent('#decided-by'))!.trim();
  /** Types at the end of the policies editor, as a person would. */
  const typeAtEnd = async (text: string): Promise<void> => {
    await page.focus('#policies');
    await page.keyboard.press('Control+End');
    await page.keyboard.type(text, { delay: 0 });
  };

  it('ok/the example is decided in the page: ALLOW by foo/httpbin-readers, with the explanation', async () => {
    await poll(decision).toBe('ALLOW');
    expect(await decidedBy()).toMatch(/^ALLOW by foo\/httpbin-readers \(ALLOW, rule 0\)/);
    const rows = await page.$$eval('#trace-body tr', (trs) => trs.map((t) => t.textContent ?? ''));
    expect(rows.some((r) => r.includes('foo/deny-admin') && r.includes('no match') && r.includes('to[0].operation.paths'))).toBe(true);
    expect(await page.textContent('#explain')).toMatch(/policies considered \(3\):/);
  }, 90_000);

  it('ok/typing a DENY policy flips the decision to DENY by it; removing it flips it back', async () => {
    const before = await page.inputValue('#policies');
    await typeAtEnd('---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: no-sleep\n  namespace: foo\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: ["bar"]\n');
    await poll(decision).toBe('DENY');
    expect(await decidedBy()).toMatch(/^DENY by foo\/no-sleep \(DENY, rule 0\)/);
    await page.fill('#policies', before);
    await poll(decision).toBe('ALLOW');
  }, 90_000);

  it('ok/the request form writes the request: a path under /admin is DENY by foo/deny-admin', async () => {
    await page.fill('#f-path', '/admin/config');
    await poll(decision).toBe('DENY');
    expect(await decidedBy()).toMatch(/^DENY by foo\/deny-admin/);
    expect(await page.inputValue('#request')).toMatch(/path: \/admin\/config/);
    await page.fill('#f-path', '/status/200');
    await poll(decision).toBe('ALLOW');
  }, 90_000);

  it('ok/a YAML error and a validation error are shown at their line, and nothing is decided', async () => {
    const good = await page.inputValue('#policies');
    const lines = good.split('\n');
    const at = lines.findIndex((l) => l.trim() === 'action: DENY');
    expect(at).toBeGreaterThan(0);
    // Istio's rules: an unknown action is an error on the line of the action.
    await page.fill('#policies', [...lines.slice(0, at), lines[at]!.replace('DENY', 'DENNY'), ...lines.slice(at + 1)].join('\n'));
    await poll(decision).toBe('—');
    const issue = page.locator('#policy-issues li.error').first();
    await poll(() => issue.textContent()).toMatch(new RegExp(`line ${at + 1} .*action`));
    expect(await page.getAttribute(`#policies-gutter .ln[data-line="${at + 1}"]`, 'class')).toMatch(/error/);
    // YAML itself broken: an unclosed flow sequence.
    const yamlAt = lines.findIndex((l) => l.includes('paths: ["/admin"'));
    await page.fill('#policies', [...lines.slice(0, yamlAt), '        paths: ["/admin", "/admin/*"', ...lines.slice(yamlAt + 1)].join('\n'));
    await poll(() => page.locator('#policy-issues li.error').first().textContent()).toMatch(/line \d+ .*invalid YAML/);
    const marked = await page.$$eval('#policies-gutter .ln.error', (ls) => ls.map((l) => Number(l.getAttribute('data-line'))));
    expect(marked.length).toBeGreaterThan(0);
    expect(marked.every((l) => l >= yamlAt + 1)).toBe(true);
    expect(await decision()).toBe('—');
    await page.fill('#policies', good);
    await poll(decision).toBe('ALLOW');
    expect(await page.$$('#policies-gutter .ln.error')).toHaveLength(0);
  }, 90_000);

  it('ok/a pasted suite runs with per-case results; a wrong expectation fails its case', async () => {
    await page.click('#run-suite');
    await poll(() => page.textContent('#suite-summary')).toBe('3 passed, 0 failed');
    const suite = await page.inputValue('#suite');
    await page.fill('#suite', suite.replace('expect: DENY\n    policy: foo/deny-admin', 'expect: ALLOW\n    policy: foo/deny-admin'));
    await page.click('#run-suite');
    await poll(() => page.textContent('#suite-summary')).toBe('2 passed, 1 failed');
    const failed = await page.$$eval('#suite-body tr.fail', (trs) => trs.map((t) => t.textContent ?? ''));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/nobody reaches the admin pages.*expected ALLOW; got DENY by foo\/deny-admin/);
    await page.fill('#suite', suite);
    await page.click('#run-suite');
    await poll(() => page.textContent('#suite-summary')).toBe('3 passed, 0 failed');
  }, 90_000);

  it('ok/exported files are accepted unchanged by authz check and authz test, with the same decisions', async () => {
    await page.fill('#f-path', '/headers');
    await page.fill('#f-method', 'POST');
    await poll(decision).toBe('DENY');
    const shown = await decidedBy();
    const names: string[] = [];
    page.on('download', (d) => {
      names.push(d.suggestedFilename());
      void d.saveAs(join(tmp.path, d.suggestedFilename()));
    });
    await page.click('#export');
    await poll(() => names.sort().join(' ')).toBe('policies.yaml request.yaml suite.test.yaml');
    await poll(async () => (await castellan(['authz', 'validate', 'policies.yaml'], tmp.path)).code).toBe(0);
    const check = await castellan(['authz', 'check', '--policies', 'policies.yaml', '--request', 'request.yaml'], tmp.path);
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout.split('\n')[0]).toBe(shown);
    expect(readFileSync(join(tmp.path, 'suite.test.yaml'), 'utf8')).toMatch(/- \.\/policies\.yaml/);
    const test = await castellan(['authz', 'test', 'suite.test.yaml'], tmp.path);
    expect(test.code, test.stdout + test.stderr).toBe(0);
    expect(test.stdout).toMatch(/3 passed, 0 failed/);
    await page.fill('#f-method', 'GET');
    await page.fill('#f-path', '/status/200');
    await poll(decision).toBe('ALLOW');
  }, 90_000);

  it('ok/the page loaded nothing from elsewhere and logged no error; a foreign Host header is refused', async () => {
    expect(watch.foreign).toEqual([]);
    expect(watch.errors).toEqual([]);
    // what a DNS-rebinding page would send: our address, another name
    const status = await new Promise<number>((resolve, reject) => {
      get(pg.url, { headers: { host: `rebind.example:${new URL(pg.url).port}` } }, (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject);
    });
    expect(status).toBe(421);
    // a loopback name on another port is fine: kubectl port-forward 9000:<port> arrives as localhost:9000
    const forwarded = await new Promise<number>((resolve, reject) => {
      get(pg.url, { headers: { host: 'localhost:9000' } }, (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject);
    });
    expect(forwarded).toBe(200);
    // the files given on the command line need the access token of the printed address
    const token = new URLSearchParams(new URL(pg.url).hash.slice(1)).get('token')!;
    expect((await fetch(new URL('/initial.json', pg.url))).status).toBe(401);
    expect((await fetch(new URL('/initial.json', pg.url), { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const post = await fetch(pg.url, { method: 'POST' });
    expect(post.status).toBe(405);
    const ok = await fetch(pg.url);
    expect(ok.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    if (process.env.CASTELLAN_SCREENSHOTS) await page.screenshot({ path: join(root, process.env.CASTELLAN_SCREENSHOTS, 'playground.png'), fullPage: true });
  }, 90_000);
});
