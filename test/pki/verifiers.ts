/**
 * Third-party verifiers for issued leaves, run for real (a missing peer is a
 * failure, not a skip): `openssl verify -x509_strict`, Python cryptography
 * >= 42 path validation (the pyenv `python3`), and Go crypto/x509 plus the
 * X.509-SVID rules (test/pki/go-verify, built once into a temp dir).
 * Call `cleanupVerifiers()` in afterAll.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const dirs: string[] = [];
let goBinary: string | undefined;

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'castellan-pki-verify-'));
  dirs.push(d);
  return d;
}

function withFiles<T>(rootsPem: string, chainPem: string[], fn: (f: { roots: string; chain: string; leaf: string; untrusted: string }) => T): T {
  const d = mkdtempSync(join(tmpdir(), 'castellan-pki-chain-'));
  try {
    const f = { roots: join(d, 'roots.pem'), chain: join(d, 'chain.pem'), leaf: join(d, 'leaf.pem'), untrusted: join(d, 'untrusted.pem') };
    writeFileSync(f.roots, rootsPem);
    writeFileSync(f.chain, chainPem.join(''));
    writeFileSync(f.leaf, chainPem[0]!);
    writeFileSync(f.untrusted, chainPem.slice(1).join(''));
    return fn(f);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} failed: ${err.stdout ?? ''}${err.stderr ?? ''}${err.stdout || err.stderr ? '' : err.message}`);
  }
}

/** `openssl verify -x509_strict -purpose <purpose>`; returns openssl's output ("...: OK"). */
export function opensslVerify(rootsPem: string, chainPem: string[], purpose: 'sslclient' | 'sslserver'): string {
  return withFiles(rootsPem, chainPem, (f) => {
    const args = ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', f.roots];
    if (chainPem.length > 1) args.push('-untrusted', f.untrusted);
    return run('openssl', [...args, f.leaf]);
  });
}

export interface PyReport {
  version: string;
  client: string;
  client_sans?: string[];
  client_chain_len?: number;
  server: string;
}

/** Python cryptography client (and server) verifiers; see py/verify_svid.py. */
export function pyVerify(rootsPem: string, chainPem: string[]): PyReport {
  return withFiles(rootsPem, chainPem, (f) => JSON.parse(run('python3', [join(here, 'py/verify_svid.py'), f.roots, f.chain])) as PyReport);
}

/** Go crypto/x509 (client and server usage) + X.509-SVID rules; returns "ok\n". */
export function goVerify(rootsPem: string, chainPem: string[], spiffeId: string): string {
  if (!goBinary) {
    const d = tmp();
    goBinary = join(d, 'go-verify');
    run('go', ['build', '-o', goBinary, join(here, 'go-verify/main.go')], { ...process.env, GO111MODULE: 'off', GOCACHE: join(d, 'gocache'), GOPATH: join(d, 'gopath'), GOFLAGS: '' });
  }
  const bin = goBinary;
  return withFiles(rootsPem, chainPem, (f) => run(bin, [f.roots, f.chain, spiffeId]));
}

export function cleanupVerifiers(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  goBinary = undefined;
}
