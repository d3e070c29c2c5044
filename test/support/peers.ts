/**
 * System peers (third-party implementations the interop tests run): each is
 * detected by what the tests actually execute (a binary on PATH, a Python
 * module, a Go source tree), never by asking the package manager.
 *
 * `npm test` on a machine with only Node and npm reports a test needing an
 * absent peer as skipped, with the command that installs it; under `CI=true`
 * an absent peer is a failure instead, so CI keeps proving interop.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'vitest';

export interface Peer {
  /** Short name used in skip messages, e.g. "grpc-go". */
  readonly name: string;
  /** The one command that installs it on Debian/Ubuntu. */
  readonly install: string;
  /** True when the peer can run here (cached after the first probe). */
  available(): boolean;
}

function runs(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}

function peer(name: string, install: string, probe: () => boolean): Peer {
  let cached: boolean | undefined;
  return {
    name,
    install,
    available: () => (cached ??= probe()),
  };
}

const apt = (...pkgs: string[]): string => `sudo apt-get install -y ${pkgs.join(' ')}`;

export const peers = {
  openssl: peer('openssl', apt('openssl'), () => runs('openssl', ['version'])),
  go: peer('go (crypto/x509)', apt('golang-go'), () => runs('go', ['version'])),
  grpcGo: peer('grpc-go', apt('golang-go', 'golang-google-grpc-dev'), () => runs('go', ['version']) && existsSync('/usr/share/gocode/src/google.golang.org/grpc')),
  python: peer('python3', apt('python3'), () => runs('/usr/bin/python3', ['-c', 'import socket'])),
  pythonGrpc: peer('python grpcio + grpc-tools', apt('python3-grpcio', 'python3-grpc-tools'), () => runs('/usr/bin/python3', ['-c', 'import grpc, grpc_tools.protoc'])),
  pyjwt: peer('python PyJWT', apt('python3-jwt'), () => runs('/usr/bin/python3', ['-c', 'import jwt'])),
  pyCryptography: peer(
    'python cryptography >= 42',
    "pip install 'cryptography>=42'",
    () => runs('python3', ['-c', 'import cryptography, sys; sys.exit(0 if int(cryptography.__version__.split(".")[0]) >= 42 else 1)']),
  ),
  /** /usr/bin/python3's own cryptography (Debian's python3-cryptography), for scripts run with it */
  systemPyCryptography: peer('python3-cryptography', apt('python3-cryptography'), () => runs('/usr/bin/python3', ['-c', 'import cryptography.x509'])),
  chromium: peer('chromium', apt('chromium'), () => existsSync('/usr/bin/chromium') || runs('chromium', ['--version'])),
  promtool: peer('promtool', apt('prometheus'), () => runs('promtool', ['--version'])),
  buildah: peer('buildah', apt('buildah', 'debootstrap'), () => runs('buildah', ['--version'])),
  kubectl: peer('kubectl', apt('kubernetes-client'), () => runs('kubectl', ['version', '--client'])),
} as const;

/** Names of the peers in `need` that are absent here, with their install commands. */
export function missing(need: readonly Peer[]): string | undefined {
  const absent = need.filter((p) => !p.available());
  if (absent.length === 0) return undefined;
  return absent.map((p) => `${p.name} (${p.install})`).join(', ');
}

/**
 * Whether tests needing `need` should be skipped. Under CI=true an absent
 * peer throws instead (CI must prove interop, never skip it).
 */
export function skipWithout(...need: Peer[]): boolean {
  const why = missing(need);
  if (why === undefined) return false;
  if (process.env.CI === 'true') throw new Error(`required interop peer missing under CI=true: ${why}`);
  console.warn(`skipping: needs ${why}`);
  return true;
}

/** `describe` that is skipped (with the install command printed) when a peer is absent. */
export function describeWith(need: Peer[], name: string, fn: () => void): void {
  const why = missing(need);
  if (why !== undefined && process.env.CI === 'true') {
    describe(name, () => {
      it(`requires ${why}`, () => {
        throw new Error(`required interop peer missing under CI=true: ${why}`);
      });
    });
    return;
  }
  if (why !== undefined) {
    describe.skip(`${name} [skipped: needs ${why}]`, fn);
    return;
  }
  describe(name, fn);
}
