/**
 * security.md D1 with a real server process: the CA API's message limit
 * (--max-request-bytes, 64 KiB by default) holds for a 100 MB request
 * without the server buffering it (its peak RSS is read from /proc), and
 * oversized metadata is refused too; the server keeps serving.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';
import { caClient, createCertificate, killAll, startCastellan, type CaClient, type Proc } from './procs.ts';

// created when the tests run, not when the file is collected (vitest list leaves no directory behind)
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('castellan-limits-');
});
const procs: Proc[] = [];
let server: Proc;
let grpcAddress: string;
let rootPem: Buffer;
let client: CaClient;
let token: string;
let csr: string;

const MiB = 2 ** 20;
const vm = (pid: number, field: 'VmHWM' | 'VmRSS'): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;

beforeAll(async () => {
  const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
  const dataDir = join(tmp.path, 'ca');
  server = startCastellan('server', ['server', '--data-dir', dataDir, '--grpc-listen', '127.0.0.1:0', '--http-listen', 'off', '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer], procs);
  const l = await server.waitFor((e) => e.event === 'server.listening', 60_000, 'server.listening');
  grpcAddress = l.grpc as string;
  rootPem = readFileSync(join(dataDir, 'root-cert.pem'));
  client = caClient(grpcAddress, rootPem, { 'grpc.max_send_message_length': -1 });
  token = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
  csr = (await peculiarCsr('spiffe://cluster.local/ns/default/sa/web')).csrPem;
  // warm: the first issuance loads everything a normal call needs
  expect((await createCertificate(client, { csr, authorization: [`Bearer ${token}`] })).status).toBe('OK');
}, 60_000);

afterAll(() => {
  client?.close();
  killAll(procs);
  tmp?.cleanup();
});

describe('D1: message limits on the CA API, with bounded memory', () => {
  it('D1/a 100 MB CreateCertificate request is RESOURCE_EXHAUSTED, the server\'s peak RSS grows by less than 32 MiB, and it keeps issuing', async () => {
    const pid = server.child.pid!;
    const hwm0 = vm(pid, 'VmHWM');
    const huge = csr + 'A'.repeat(100 * 1000 * 1000);
    const o = await createCertificate(client, { csr: huge, authorization: [`Bearer ${token}`], deadlineMs: 60_000 });
    expect(o.status, o.details).toBe('RESOURCE_EXHAUSTED');
    const grown = vm(pid, 'VmHWM') - hwm0;
    console.log(`D1: 100 MB request → ${o.status} (${o.details}); server peak RSS +${(grown / MiB).toFixed(1)} MiB`);
    expect(grown).toBeLessThan(32 * MiB);
    expect((await createCertificate(client, { csr, authorization: [`Bearer ${token}`] })).status).toBe('OK');
    expect(server.exited).toBeUndefined();
  }, 120_000);

  it('D1/a request just over the 64 KiB default is refused, one just under is judged on its content (INVALID_ARGUMENT, not a size error)', async () => {
    const over = await createCertificate(client, { csr: csr + 'A'.repeat(65_536), authorization: [`Bearer ${token}`] });
    expect(over.status).toBe('RESOURCE_EXHAUSTED');
    const under = await createCertificate(client, { csr: csr + 'A'.repeat(60_000), authorization: [`Bearer ${token}`] });
    expect(under.status, under.details).toBe('INVALID_ARGUMENT');
  });

  it('D1/a connection may open 128 calls at once (--max-concurrent-streams): the server says so in its HTTP/2 SETTINGS', async () => {
    // Read by node:http2 as any HTTP/2 client would: SETTINGS_MAX_CONCURRENT_STREAMS bounds what one
    // connection has buffered in the server (a burst through few connections, docs/performance.md).
    const session = connect(`https://${grpcAddress}`, { ca: rootPem, checkServerIdentity: () => undefined });
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxConcurrentStreams).toBe(128);
    } finally {
      session.close();
    }
  });

  it('D1/1 MiB of metadata (an authorization header) is refused before anything reads it, and the server lives', async () => {
    const o = await createCertificate(client, { csr, authorization: [`Bearer ${'a'.repeat(MiB)}.b.c`] });
    expect(o.status, o.details).not.toBe('OK');
    expect(['RESOURCE_EXHAUSTED', 'UNAUTHENTICATED', 'INTERNAL', 'UNAVAILABLE']).toContain(o.status);
    console.log(`D1: 1 MiB authorization header → ${o.status} (${o.details})`);
    expect((await createCertificate(client, { csr, authorization: [`Bearer ${token}`] })).status).toBe('OK');
    expect(server.exited).toBeUndefined();
  });
});
