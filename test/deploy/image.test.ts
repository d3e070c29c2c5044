/**
 * The container image, built from deploy/Dockerfile by deploy/image/build.sh
 * (buildah, chroot isolation; stand-in bases where the real ones cannot be
 * pulled) and run the way the manifests run it: as the image's user (65532),
 * read-only root filesystem, writable only where a volume is mounted.
 *
 * Running without a container engine: the image's root (`buildah mount`) is
 * entered with util-linux `unshare --root --wd --setuid --setgid` inside a
 * private mount namespace that bind-mounts the volumes, /proc and four device
 * nodes, then makes the image's root read-only. The spawned process execs
 * through to the image's entrypoint, so a signal sent to it reaches Node.
 * The network is the host's: independent clients outside the image (Python
 * grpcio, OpenSSL) talk to it on loopback and over a Unix socket in a shared
 * directory.
 *
 * Needs root, buildah, debootstrap (for the stand-ins), Python grpcio and
 * PyJWT, and OpenSSL. The first build on a machine takes minutes
 * (debootstrap, two npm installs); later ones reuse the stand-ins and
 * buildah's layer cache (~30 s).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, closeSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWith, peers, type Peer } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';
import { opensslVerify } from '../support/verifiers.ts';
import { generateSdsStubs, PYTHON } from '../sds/py-stubs.ts';
import { readDocs, ROOT } from './support.ts';

const TAG = 'localhost/castellan:image-test';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const KID = 'image-test-1';

const root: Peer = { name: 'root (buildah chroot isolation, mount namespaces)', install: 'run the tests as root, as CI does', available: () => process.getuid?.() === 0 };
let debootstrapFound: boolean | undefined;
const debootstrap: Peer = {
  name: 'debootstrap (stand-in base images)',
  install: 'sudo apt-get install -y debootstrap',
  available: () => (debootstrapFound ??= spawnSync('debootstrap', ['--version'], { stdio: 'ignore' }).status === 0),
};

interface ImageConfig {
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  Env?: string[];
  ExposedPorts?: Record<string, unknown>;
}
interface Mount {
  host: string;
  target: string;
  ro?: boolean;
}

const tmp = tempDir('castellan-image-');
let ctr = '';
let rootfs = '';
let config: ImageConfig;
let buildSeconds = 0;
const running = new Set<ChildProcess>();

function run(cmd: string, args: string[], o: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = o.timeoutMs ? setTimeout(() => p.kill('SIGKILL'), o.timeoutMs) : undefined;
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

const tail = (s: string, n = 40): string => s.trimEnd().split('\n').slice(-n).join('\n');

/**
 * Starts `argv` inside the image as its configured user, with `mounts` as the
 * only places besides /dev and /proc not from the image, and the image's root
 * read-only. Returns the child: its pid is the program's (the chain execs).
 */
function startInImage(argv: string[], mounts: Mount[]): ChildProcess {
  const [uid, gid] = (config.User ?? '').split(':');
  const script = `set -eu
root=$1; wd=$2; uid=$3; gid=$4; shift 4
n=$1; shift
i=0
# The container's root on itself, made read-only at the end; the volumes'
# mount points are made as a runtime makes them (in the container, not the image).
mount --bind "$root" "$root"
while [ "$i" -lt "$n" ]; do
  src=$1; dst=$2; mode=$3; shift 3; i=$((i + 1))
  mkdir -p "$root$dst"
  mount --bind "$src" "$root$dst"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$dst"; fi
done
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid,size=64k tmpfs "$root/dev"
for d in null zero random urandom; do touch "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; done
mount -o remount,bind,ro "$root"
exec /usr/bin/env -i ${(config.Env ?? []).map((e) => `'${e.replace(/'/g, `'\\''`)}'`).join(' ')} /usr/bin/unshare --root="$root" --wd="$wd" --setgid="$gid" --setuid="$uid" -- "$@"
`;
  const args = [rootfs, config.WorkingDir ?? '/', uid!, gid ?? uid!, String(mounts.length), ...mounts.flatMap((m) => [m.host, m.target, m.ro ? 'ro' : 'rw']), ...argv];
  const p = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'enter', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(p);
  p.on('exit', () => running.delete(p));
  return p;
}

const cli = (...args: string[]): string[] => [...config.Entrypoint!, ...args];

/** Collects a process's JSON log lines (pino) and its other output. */
function watch(p: ChildProcess): { lines: Record<string, unknown>[]; text: () => string; waitFor: (event: string, ms?: number) => Promise<Record<string, unknown>>; exit: Promise<number | null> } {
  const lines: Record<string, unknown>[] = [];
  let raw = '';
  const waiters: { event: string; resolve: (l: Record<string, unknown>) => void }[] = [];
  for (const s of [p.stdout!, p.stderr!]) {
    createInterface({ input: s }).on('line', (line) => {
      raw += line + '\n';
      try {
        const l = JSON.parse(line) as Record<string, unknown>;
        lines.push(l);
        for (const w of waiters.filter((x) => x.event === l.event)) w.resolve(l);
      } catch {
        /* not a log line */
      }
    });
  }
  const exit = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
  return {
    lines,
    text: () => raw,
    exit,
    waitFor: (event, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const have = lines.find((l) => l.event === event);
        if (have) return resolve(have);
        const t = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms; output:\n${tail(raw)}`)), ms);
        waiters.push({ event, resolve: (l) => (clearTimeout(t), resolve(l)) });
        void exit.then((code) => reject(new Error(`exited (${code}) before "${event}"; output:\n${tail(raw)}`)));
      }),
  };
}

/** A directory the image's user owns, as a volume would be. */
function volume(name: string, mode = 0o700): string {
  const d = join(tmp.path, name);
  mkdirSync(d, { recursive: true });
  const [uid, gid] = (config.User ?? '').split(':').map(Number);
  chownSync(d, uid!, gid ?? uid!);
  chmodSync(d, mode);
  return d;
}

/** Every regular file of the image (paths relative to its root), symlinks not followed. */
function imageFiles(dir = rootfs, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) imageFiles(p, out);
    else if (e.isFile()) out.push('/' + relative(rootfs, p));
  }
  return out;
}

function head(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    return b.subarray(0, readSync(fd, b, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}

let markerLine = '';

beforeAll(async () => {
  if (![root, peers.buildah, debootstrap, peers.pythonGrpc, peers.pyjwt, peers.openssl].every((p) => p.available())) return;
  // The build's extra CA bundle: whatever this machine's Node trusts on top
  // of its own roots (a TLS-intercepting proxy's CA, here), plus a marker
  // certificate that must not end up in the image.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=castellan image-test build-only CA', '-days', '1', '-keyout', join(tmp.path, 'marker-key.pem'), '-out', join(tmp.path, 'marker.pem')], { stdio: 'pipe' });
  const marker = readFileSync(join(tmp.path, 'marker.pem'), 'utf8');
  markerLine = marker.split('\n').filter((l) => /^[A-Za-z0-9+/]{64}$/.test(l))[2]!;
  const extra = process.env.CASTELLAN_BUILD_CA ?? process.env.NODE_EXTRA_CA_CERTS;
  writeFileSync(join(tmp.path, 'build-ca.pem'), (extra && existsSync(extra) ? readFileSync(extra, 'utf8') + '\n' : '') + marker);

  const t0 = Date.now();
  const iidfile = join(tmp.path, 'iid');
  const b = await run(join(ROOT, 'deploy/image/build.sh'), ['--tag', TAG, '--extra-ca', join(tmp.path, 'build-ca.pem'), '--iidfile', iidfile]);
  buildSeconds = (Date.now() - t0) / 1000;
  if (b.code !== 0) throw new Error(`deploy/image/build.sh failed (${b.code}):\n${tail(b.out)}`);
  console.info(`image built in ${buildSeconds.toFixed(0)} s`);

  // By ID: another work tree's test on this machine may move the tag meanwhile.
  const id = readFileSync(iidfile, 'utf8').trim().replace(/^sha256:/, '');
  ctr = execFileSync('buildah', ['from', '--pull=never', '--name', `castellan-image-test-${process.pid}`, id], { encoding: 'utf8' }).trim();
  rootfs = execFileSync('buildah', ['mount', ctr], { encoding: 'utf8' }).trim();
  config = (JSON.parse(execFileSync('buildah', ['inspect', '--type', 'image', id], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { OCIv1: { config: ImageConfig } }).OCIv1.config;
}, 45 * 60_000);

afterAll(() => {
  for (const p of running) p.kill('SIGKILL');
  if (ctr) {
    execFileSync('buildah', ['umount', ctr], { stdio: 'ignore' });
    execFileSync('buildah', ['rm', ctr], { stdio: 'ignore' });
  }
  tmp.cleanup();
});

describeWith([root, peers.buildah, debootstrap, peers.pythonGrpc, peers.pyjwt, peers.openssl], 'container image (deploy/Dockerfile built by deploy/image/build.sh)', () => {
  it('runs the CLI as 65532:65532, exposes the CA and ops ports', () => {
    expect(config.User).toBe('65532:65532');
    expect(config.Entrypoint).toEqual(['/nodejs/bin/node', '/app/dist/cli/main.js']);
    expect(Object.keys(config.ExposedPorts ?? {}).sort()).toEqual(['15012/tcp', '15014/tcp']);
    expect(config.Env).toContain('NODE_ENV=production');
    // The base Deployment asks for the same user.
    const pod = readDocs(join(ROOT, 'deploy/kubernetes/base/deployment.yaml'))[0]!.spec.template.spec;
    expect(`${pod.securityContext.runAsUser}:${pod.securityContext.runAsGroup}`).toBe(config.User);
  });

  it('holds no shell, package manager or other program: the only executables are node and the loader', () => {
    const files = imageFiles();
    const elf = files.filter((f) => (statSync(join(rootfs, f)).mode & 0o111) !== 0 && head(join(rootfs, f), 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])));
    // The dynamic loader and libc are executable ELF files in Debian; nothing else may be.
    expect(elf.filter((f) => !/\/ld-linux[^/]*\.so\.\d+$|\/libc\.so\.6$/.test(f))).toEqual(['/nodejs/bin/node']);
    const names = new Set(files.map((f) => f.slice(f.lastIndexOf('/') + 1)));
    for (const tool of ['sh', 'bash', 'dash', 'busybox', 'apt', 'apt-get', 'dpkg', 'npm', 'npx', 'yarn', 'pnpm', 'corepack', 'tsc']) expect(names.has(tool), tool).toBe(false);
    for (const dir of ['/bin/sh', '/usr/bin/sh', '/usr/local/lib/node_modules', '/app/node_modules/npm', '/var/lib/dpkg', '/etc/apt']) expect(existsSync(join(rootfs, dir)), dir).toBe(false);
  });

  it('has the production dependencies of the lock file and nothing else, and no build inputs', () => {
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean; devOptional?: boolean }> };
    const prod = new Set(Object.entries(lock.packages).filter(([k, v]) => k.startsWith('node_modules/') && !v.dev).map(([k]) => k));
    const present = imageFiles(join(rootfs, 'app/node_modules'))
      .filter((f) => f.endsWith('/package.json'))
      .map((f) => f.slice('/app/'.length, -'/package.json'.length))
      .filter((p) => /(^|\/)node_modules\/(@[^/]+\/)?[^/@]+$/.test(p));
    expect(present.length).toBeGreaterThan(50);
    expect(present.filter((p) => !prod.has(p))).toEqual([]); // no devDependency (e.g. typescript, vitest, the "node" package)
    expect([...prod].filter((p) => !lock.packages[p]!.optional && !present.includes(p))).toEqual([]);
    const app = readdirSync(join(rootfs, 'app')).sort();
    expect(app).toEqual(['dist', 'node_modules', 'package.json']);
    expect(imageFiles(join(rootfs, 'app/dist')).filter((f) => !/\.js(\.map)?$/.test(f))).toEqual([]);
  });

  it('holds no key material, and not the CA bundle the build stages trusted', () => {
    const hits: string[] = [];
    for (const f of imageFiles()) {
      if (/keyring\.json$|\.key$/.test(f)) hits.push(f);
      const buf = readFileSync(join(rootfs, f));
      // A PEM private key block (code that names the label, as jose does, is not one).
      if (buf.includes('PRIVATE KEY-----') && /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64,}/.test(buf.toString('latin1'))) hits.push(`${f}: PEM private key`);
      if (buf.includes(markerLine)) hits.push(`${f}: the build-only CA`);
    }
    expect(hits).toEqual([]);
    expect(existsSync(join(rootfs, 'usr/local/etc/npmrc'))).toBe(false);
    expect((config.Env ?? []).filter((e) => /CA_CERT|npm_config/i.test(e) && !e.startsWith('SSL_CERT_FILE=/etc/ssl/certs/'))).toEqual([]);
  });

  it('every production dependency and every command loads from the image (nothing it needs was trimmed)', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    // reflect-metadata first, as src/platform/x509.ts loads it (@peculiar/x509 needs it).
    const deps = Object.keys(pkg.dependencies).sort((a, b) => Number(b === 'reflect-metadata') - Number(a === 'reflect-metadata'));
    const imp = watch(startInImage(['/nodejs/bin/node', '--input-type=module', '-e', `for (const d of ${JSON.stringify(deps)}) await import(d); console.log(JSON.stringify({ event: 'imported', n: ${deps.length}, uid: process.getuid(), gid: process.getgid(), groups: process.getgroups() }))`], []));
    expect(await imp.exit, imp.text()).toBe(0);
    expect(imp.lines.find((l) => l.event === 'imported')).toEqual({ event: 'imported', n: deps.length, uid: 65532, gid: 65532, groups: [65532] });
    await Promise.all(
      [[], ['server'], ['agent'], ['dev'], ['authz'], ['ca']].map(async (cmd) => {
        const h = watch(startInImage(cli(...cmd, '--help'), []));
        expect(await h.exit, `${cmd.join(' ')} --help: ${h.text()}`).toBe(0);
        expect(h.text()).toMatch(/usage: castellan/);
      }),
    );
  }, 120_000);

  let serverAddr = '';
  let rootPem = '';
  let server: ReturnType<typeof watch>;
  let serverProc: ChildProcess;
  const data = (): string => join(tmp.path, 'server-data');
  const stubs = join(tmp.path, 'stubs');

  it('the server, as 65532 on a read-only root, issues a certificate to a Python grpcio client that OpenSSL verifies', async () => {
    // A JWKS the server trusts, from a key the clients sign with.
    execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', join(tmp.path, 'jwt-key.pem')]);
    const jwk = createPublicKey(readFileSync(join(tmp.path, 'jwt-key.pem'))).export({ format: 'jwk' });
    const conf = join(tmp.path, 'server-conf');
    mkdirSync(conf);
    writeFileSync(join(conf, 'jwks.json'), JSON.stringify({ keys: [{ ...jwk, kid: KID, alg: 'RS256', use: 'sig' }] }));
    chmodSync(conf, 0o755);
    chmodSync(join(conf, 'jwks.json'), 0o644);
    volume('server-data');

    serverProc = startInImage(
      cli('server', '--data-dir', '/var/run/castellan/ca', '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--jwks-file', '/etc/castellan/jwks.json', '--jwt-issuer', ISSUER, '--signer-workers', '1'),
      [
        { host: data(), target: '/var/run/castellan' },
        { host: conf, target: '/etc/castellan', ro: true },
      ],
    );
    server = watch(serverProc);
    const listening = await server.waitFor('server.listening');
    serverAddr = String(listening.grpc);
    // The process is the image's node (re-executed in place with the server role's V8 flag, src/cli/launch.ts),
    // as 65532:65532 with no other group and no capabilities.
    const status = readFileSync(`/proc/${serverProc.pid}/status`, 'utf8');
    expect(readFileSync(`/proc/${serverProc.pid}/cmdline`, 'utf8').split('\0').slice(0, 4)).toEqual(['/nodejs/bin/node', '--max-semi-space-size=4', '/app/dist/cli/main.js', 'server']);
    expect(status).toMatch(/^Uid:\s+65532\s+65532\s+65532\s+65532$/m);
    expect(status).toMatch(/^Gid:\s+65532\s+65532\s+65532\s+65532$/m);
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    const ready = await fetch(`http://${String(listening.http)}/readyz`);
    expect(ready.status).toBe(200);

    rootPem = readFileSync(join(data(), 'ca/root-cert.pem'), 'utf8');
    mkdirSync(stubs);
    execFileSync(PYTHON, ['-m', 'grpc_tools.protoc', '-I', join(ROOT, 'proto'), `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, 'istio/v1/auth/ca.proto'], { stdio: 'pipe' });
    writeFileSync(join(tmp.path, 'root.pem'), rootPem);
    const id = 'spiffe://cluster.local/ns/payments/sa/ledger';
    const port = serverAddr.slice(serverAddr.lastIndexOf(':') + 1);
    const py = await run(PYTHON, [
      join(ROOT, 'test/interop/py/ca_client.py'),
      '--stubs', stubs, '--target', `localhost:${port}`, '--root', join(tmp.path, 'root.pem'),
      '--signing-key', join(tmp.path, 'jwt-key.pem'), '--kid', KID, '--issuer', ISSUER,
      '--sub', 'system:serviceaccount:payments:ledger', '--csr-uri', id, '--ttl', '3600',
    ]);
    expect(py.code, py.out).toBe(0);
    const r = JSON.parse(py.out) as { ok: boolean; chain: string[] };
    expect(r.ok).toBe(true);
    const certs = r.chain.slice(0, -1);
    expect(opensslVerify(rootPem, certs, 'sslclient')).toMatch(/OK/);
    expect(new X509Certificate(certs[0]!).subjectAltName).toBe(`URI:${id}`);
  }, 120_000);

  let agent: ReturnType<typeof watch>;
  let agentProc: ChildProcess;
  const shared = (): string => join(tmp.path, 'workload-socket');

  it('the agent, as 65532, serves SDS on a socket in a shared directory; a Python client fetches a chain OpenSSL verifies', async () => {
    expect(serverAddr, 'the server test ran').not.toBe('');
    const tokens = join(tmp.path, 'tokens');
    mkdirSync(tokens);
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ 'kubernetes.io': { namespace: 'shop', serviceaccount: { name: 'cart', uid: 'u-2' } } })
      .setProtectedHeader({ alg: 'RS256', kid: KID })
      .setIssuer(ISSUER)
      .setSubject('system:serviceaccount:shop:cart')
      .setAudience(['istio-ca'])
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 600)
      .sign(createPrivateKey(readFileSync(join(tmp.path, 'jwt-key.pem'))));
    writeFileSync(join(tokens, 'istio-token'), token, { mode: 0o644 });
    writeFileSync(join(tokens, 'root-cert.pem'), rootPem, { mode: 0o644 });
    chmodSync(tokens, 0o755);
    volume('workload-socket', 0o755);

    agentProc = startInImage(
      cli('agent', '--ca-address', serverAddr, '--ca-root-cert', '/var/run/secrets/tokens/root-cert.pem', '--token-file', '/var/run/secrets/tokens/istio-token', '--sds-socket', '/var/run/secrets/workload-spiffe-uds/socket', '--http-listen', 'off'),
      [
        { host: shared(), target: '/var/run/secrets/workload-spiffe-uds' },
        { host: tokens, target: '/var/run/secrets/tokens', ro: true },
      ],
    );
    agent = watch(agentProc);
    await agent.waitFor('agent.started');
    // Re-executed in place with the agent role's V8 flags (src/cli/launch.ts): the image's node, interpreter only.
    expect(readFileSync(`/proc/${agentProc.pid}/cmdline`, 'utf8').split('\0').slice(0, 7)).toEqual(['/nodejs/bin/node', '--max-semi-space-size=1', '--no-opt', '--no-maglev', '--no-sparkplug', '/app/dist/cli/main.js', 'agent']);
    const sock = join(shared(), 'socket');
    expect(lstatSync(sock).isSocket()).toBe(true);
    expect(lstatSync(sock).uid).toBe(65532);

    mkdirSync(join(tmp.path, 'sds-stubs'));
    generateSdsStubs(join(tmp.path, 'sds-stubs'));
    const py = await run(PYTHON, [join(import.meta.dirname, 'py/sds_fetch.py'), join(tmp.path, 'sds-stubs'), sock], { timeoutMs: 60_000 });
    expect(py.code, py.out).toBe(0);
    const r = JSON.parse(py.out) as { names: string[]; chain: string; has_key: boolean; root: string };
    expect(r.names).toEqual(['ROOTCA', 'default']);
    expect(r.has_key).toBe(true);
    expect(r.root.trim()).toBe(rootPem.trim());
    const certs = r.chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)!;
    expect(opensslVerify(rootPem, certs.filter((c) => c.trim() !== rootPem.trim()), 'sslserver')).toMatch(/OK/);
    expect(new X509Certificate(certs[0]!).subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/cart');
  }, 120_000);

  it('both stop on SIGTERM within the grace period, having written only to their volumes', async () => {
    expect(agentProc, 'the agent test ran').toBeDefined();
    const grace = Number(readDocs(join(ROOT, 'deploy/kubernetes/base/deployment.yaml'))[0]!.spec.template.spec.terminationGracePeriodSeconds) * 1000;
    const stopped: Record<string, number> = {};
    for (const [name, p, w] of [['agent', agentProc, agent], ['server', serverProc, server]] as const) {
      const t0 = performance.now();
      p.kill('SIGTERM');
      const code = await w.exit;
      stopped[name] = Math.round(performance.now() - t0);
      expect(code, `${name}: ${tail(w.text())}`).toBe(0);
    }
    console.info(`stopped on SIGTERM in ms: ${JSON.stringify(stopped)} (build ${buildSeconds.toFixed(0)} s)`);
    // Nothing was in flight: both stop at once, far inside the pod's grace period.
    expect(stopped.server!).toBeLessThan(Math.min(grace, 5000));
    expect(stopped.agent!).toBeLessThan(Math.min(grace, 5000));
    expect(server.lines.some((l) => l.event === 'server.stopped')).toBe(true);
    // The root was read-only (a write anywhere else would have failed the
    // start); what they wrote is in their volumes: the keyring, and the socket,
    // removed on the way out.
    expect(readdirSync(join(data(), 'ca')).sort()).toEqual(expect.arrayContaining(['keyring.json', 'root-cert.pem']));
    expect(statSync(join(data(), 'ca/keyring.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(data(), 'ca')).mode & 0o777).toBe(0o700);
    expect(readdirSync(shared())).toEqual([]);
  }, 60_000);
});
