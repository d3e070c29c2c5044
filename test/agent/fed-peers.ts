/**
 * Peers for the federation tests (issue 17): an agent's material over SDS
 * (`default` + `ALL`, grpc-js and protobuf-es) and the Workload API, the Go
 * mutual-TLS peer (go-fedtls/main.go), and a Node mutual-TLS client that
 * validates per trust domain.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as tls from 'node:tls';
import { create, fromBinary } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import type { AgentHandle } from '../../src/agent/agent.ts';
import { chainsTo, uriSansOf } from '../../src/agent/cert-info.ts';
import { SecretSchema } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import { DiscoveryRequestSchema } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { SpiffeWorkloadAPI, X509SVIDRequestSchema, type X509SVIDResponse } from '../../src/gen/spiffe/workload/workload_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { parseSpiffeId } from '../../src/spiffe/id.ts';

/** Go peers started so far (killPeers() ends them). */
const procs: ChildProcess[] = [];
export function killPeers(): void {
  for (const p of procs.splice(0)) p.kill();
}

export const derToPem = (ders: Uint8Array[]): string => ders.map((d) => new X509Certificate(Buffer.from(d)).toString()).join('');
export const md = (): grpc.Metadata => {
  const m = new grpc.Metadata();
  m.set('workload.spiffe.io', 'true');
  return m;
};
export const workloadClient = (a: AgentHandle) => createClient(SpiffeWorkloadAPI, `unix:${a.workload!.server.socketPath}`, grpc.credentials.createInsecure());

/** Messages of a Workload API stream, as they come. */
export function collect<T>(stream: grpc.ClientReadableStream<T>): { msgs: T[]; next: (n: number) => Promise<T> } {
  const msgs: T[] = [];
  const waiters: (() => void)[] = [];
  stream.on('data', (m: T) => {
    msgs.push(m);
    for (const w of waiters.splice(0)) w();
  });
  stream.on('error', () => undefined);
  return {
    msgs,
    next: async (n) => {
      const deadline = Date.now() + 10_000;
      while (msgs.length < n) {
        if (Date.now() > deadline) throw new Error(`stream: ${msgs.length} messages, waited for ${n}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
      return msgs[n - 1]!;
    },
  };
}

export async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `default` and `ALL` from an agent's SDS socket (grpc-js client, protobuf-es decoding). */
export async function sdsMaterial(a: AgentHandle): Promise<{ chainPem: string; keyPem: string; domains: Map<string, string> }> {
  const c = createClient(SecretDiscoveryService, `unix:${a.sdsSocket}`, grpc.credentials.createInsecure());
  try {
    const r = await c.fetchSecrets(create(DiscoveryRequestSchema, { node: { id: 'fed-test' }, resourceNames: ['default', 'ALL'] }));
    let chainPem = '';
    let keyPem = '';
    const domains = new Map<string, string>();
    for (const any of r.resources) {
      const s = anyUnpack(any, SecretSchema)!;
      if (s.type.case === 'tlsCertificate') {
        chainPem = Buffer.from((s.type.value.certificateChain!.specifier as { value: Uint8Array }).value).toString();
        keyPem = Buffer.from((s.type.value.privateKey!.specifier as { value: Uint8Array }).value).toString();
      } else if (s.type.case === 'validationContext') {
        const cfg = fromBinary(SPIFFECertValidatorConfigSchema, s.type.value.customValidatorConfig!.typedConfig!.value);
        for (const td of cfg.trustDomains) domains.set(td.name, Buffer.from((td.trustBundle!.specifier as { value: Uint8Array }).value).toString());
      }
    }
    return { chainPem, keyPem, domains };
  } finally {
    c.close();
  }
}

/** The first FetchX509SVID response of an agent. */
export async function x509Svid(a: AgentHandle): Promise<X509SVIDResponse> {
  const c = workloadClient(a);
  const s = c.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md() });
  try {
    return await collect(s).next(1);
  } finally {
    s.cancel();
    c.close();
  }
}

let goBin = '';
export function buildGo(dir: string): string {
  if (!goBin) {
    mkdirSync(dir, { recursive: true });
    goBin = join(dir, 'go-fedtls');
    execFileSync('go', ['build', '-o', goBin, join(import.meta.dirname, 'go-fedtls', 'main.go')], {
      env: { ...process.env, GO111MODULE: 'off', GOCACHE: process.env.GOCACHE ?? join(tmpdir(), 'castellan-gocache'), GOPATH: join(dir, 'gopath') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }
  return goBin;
}

/** Writes material for the Go peer; returns its flags. */
export function goFlags(dir0: string, name: string, chainPem: string, keyPem: string, bundles: Record<string, string>): string[] {
  const dir = join(dir0, 'peer-' + name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'chain.pem'), chainPem);
  writeFileSync(join(dir, 'key.pem'), keyPem, { mode: 0o600 });
  const flags = ['-cert', join(dir, 'chain.pem'), '-key', join(dir, 'key.pem')];
  for (const [td, pem] of Object.entries(bundles)) {
    writeFileSync(join(dir, `${td}.pem`), pem);
    flags.push('-bundle', `${td}=${join(dir, `${td}.pem`)}`);
  }
  return flags;
}

/** Starts the Go peer as a server; resolves with its address and the lines it prints per connection. */
export async function goServer(goBinary: string, flags: string[]): Promise<{ addr: string; lines: string[] }> {
  const p = spawn(goBinary, ['server', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: string[] = [];
  const rl = createInterface({ input: p.stdout! });
  const addr = await new Promise<string>((resolve, reject) => {
    rl.on('line', (l) => {
      if (l.startsWith('listening ')) resolve(l.slice('listening '.length));
      else lines.push(l);
    });
    p.on('exit', (code) => reject(new Error(`go-fedtls server exited ${code}: ${stderr}`)));
  });
  return { addr, lines };
}

export type CallResult = { ok: true; peer: string; line: string } | { ok: false; reason: string };

/**
 * A Node mutual-TLS client validating the server per trust domain: the
 * peer's one SPIFFE ID picks the roots (`domains`, from SDS `ALL`); a trust
 * domain without roots, or a chain that does not verify against them, is refused.
 */
export function nodeCall(addr: string, chainPem: string, keyPem: string, domains: ReadonlyMap<string, string>): Promise<CallResult> {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const sock = tls.connect({ host, port, cert: chainPem, key: keyPem, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
    const done = (r: CallResult): void => {
      sock.destroy();
      resolve(r);
    };
    sock.on('error', (e) => done({ ok: false, reason: `tls: ${e.message}` }));
    sock.on('secureConnect', () => {
      const peer = sock.getPeerX509Certificate();
      if (!peer) return done({ ok: false, reason: 'no peer certificate' });
      const uris = uriSansOf(peer.raw);
      if (uris.length !== 1) return done({ ok: false, reason: `${uris.length} URI SANs` });
      const td = parseSpiffeId(uris[0]!).trustDomain;
      const roots = domains.get(td);
      if (!roots) return done({ ok: false, reason: `no bundle for trust domain ${td}` });
      const now = Date.now();
      if (!chainsTo(peer.toString(), roots) || Date.parse(peer.validTo) < now || Date.parse(peer.validFrom) > now) {
        return done({ ok: false, reason: `chain does not verify against the bundle of ${td}` });
      }
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('\n')) done({ ok: true, peer: uris[0]!, line: buf.trim() });
      });
      sock.on('end', () => done({ ok: false, reason: `server closed: ${buf}` }));
    });
  });
}

