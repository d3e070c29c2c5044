/**
 * Third-party verifiers of issued chains: OpenSSL (-x509_strict), Python
 * cryptography >= 42 (pyenv python3) and Go crypto/x509. Each throws with
 * the verifier's own words when it rejects.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const here = new URL('.', import.meta.url).pathname;

function files(rootsPem: string, chainPem: string[]): { dir: string; roots: string; chain: string; untrusted: string } {
  const dir = mkdtempSync(join(tmpdir(), 'castellan-verify-'));
  const roots = join(dir, 'roots.pem');
  const chain = join(dir, 'chain.pem');
  const untrusted = join(dir, 'untrusted.pem');
  writeFileSync(roots, rootsPem);
  writeFileSync(chain, chainPem.join(''));
  writeFileSync(untrusted, chainPem.slice(1).join('') || '');
  return { dir, roots, chain, untrusted };
}

/** `openssl verify -x509_strict -purpose <p>` of the leaf (chain[0]) with chain[1..] as untrusted intermediates. */
export function opensslVerify(rootsPem: string, chainPem: string[], purpose: 'sslclient' | 'sslserver'): string {
  const f = files(rootsPem, chainPem);
  const leaf = join(f.dir, 'leaf.pem');
  writeFileSync(leaf, chainPem[0]!);
  const args = ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', f.roots];
  if (chainPem.length > 1) args.push('-untrusted', f.untrusted);
  args.push(leaf);
  try {
    return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    throw new Error(`openssl verify failed: ${err.stdout ?? ''}${err.stderr ?? ''}`);
  } finally {
    rmSync(f.dir, { recursive: true, force: true });
  }
}

/** Python cryptography (>= 42, the pyenv python3) client-certificate path validation; returns its report. */
export function pyCryptographyVerify(rootsPem: string, chainPem: string[]): { version: string; uris: string[] } {
  const f = files(rootsPem, chainPem);
  try {
    const out = execFileSync('python3', [join(here, '../interop/py/verify_chain.py'), f.roots, f.chain], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return JSON.parse(out) as { version: string; uris: string[] };
  } catch (e) {
    const err = e as { stderr?: string };
    throw new Error(`python cryptography verify failed: ${err.stderr ?? String(e)}`);
  } finally {
    rmSync(f.dir, { recursive: true, force: true });
  }
}

let goBinary: string | undefined;
/** Go crypto/x509 verification (client and server usage) plus the X.509-SVID leaf rules. */
export function goVerify(rootsPem: string, chainPem: string[], spiffeId: string): string {
  if (!goBinary || !existsSync(goBinary)) {
    const dir = mkdtempSync(join(tmpdir(), 'castellan-go-'));
    goBinary = join(dir, 'go-verify');
    execFileSync('go', ['build', '-o', goBinary, join(here, '../interop/go-verify/main.go')], {
      env: { ...process.env, GO111MODULE: 'off', GOCACHE: process.env.GOCACHE ?? join(tmpdir(), 'castellan-gocache'), GOPATH: join(dir, 'gopath') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }
  const f = files(rootsPem, chainPem);
  try {
    return execFileSync(goBinary, [f.roots, f.chain, spiffeId], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string };
    throw new Error(`go verify failed: ${err.stderr ?? ''}`);
  } finally {
    rmSync(f.dir, { recursive: true, force: true });
  }
}
