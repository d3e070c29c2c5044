/** The gRPC binding over a real Unix socket with grpc-js clients: statuses, fan-out of pushes, ACK flow. */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretSchema } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { DeltaDiscoveryRequestSchema, DiscoveryRequestSchema, type DiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { startSdsServer, type SdsServer } from '../../src/sds/server.ts';
import { tempDir } from '../support/tmp.ts';
import { FakeStore } from './fake-store.ts';

const tmp = tempDir('castellan-sds-srv-');
const store = new FakeStore();
let server: SdsServer;
const mkClient = (path: string) => createClient(SecretDiscoveryService, `unix:${path}`, grpc.credentials.createInsecure());
let client: ReturnType<typeof mkClient>;

beforeAll(async () => {
  store.setDefault('a');
  store.setRoot('r');
  server = await startSdsServer({ socketPath: join(tmp.path, 'sds', 'socket'), store });
  client = mkClient(server.socketPath);
});
afterAll(async () => {
  client.close();
  await server.close();
  tmp.cleanup();
});

function stream(names: string[], nodeId = 'n') {
  const s = client.streamSecrets();
  const got: DiscoveryResponse[] = [];
  const ended = new Promise<grpc.ServiceError | null>((res) => {
    s.on('error', (e: grpc.ServiceError) => res(e));
    s.on('end', () => res(null));
  });
  s.on('data', (r: DiscoveryResponse) => got.push(r));
  s.write(create(DiscoveryRequestSchema, { node: nodeId ? { id: nodeId } : undefined, typeUrl: SECRET_TYPE_URL, resourceNames: names }));
  return { s, got, ended };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timeout');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('SDS over gRPC', () => {
  const refusals: [string, string[], string, grpc.status, string][] = [
    ['fail/unknown name', ['default', 'spiffe://cluster.local/ns/x/sa/y'], 'n', grpc.status.NOT_FOUND, 'sds.unknown_resource'],
    ['fail/no node id', ['default'], '', grpc.status.INVALID_ARGUMENT, 'sds.missing_node'],
  ];
  for (const [name, names, node, code, tag] of refusals) {
    it(name, async () => {
      const { ended, got } = stream(names, node);
      const err = await ended;
      expect(err?.code).toBe(code);
      expect(err?.metadata.get('x-castellan-error')).toEqual([tag]);
      expect(got).toHaveLength(0);
    });
  }

  it('ok/a change is pushed to every stream watching it, and only to those', async () => {
    const watchers = [stream(['default']), stream(['default', 'ROOTCA']), stream(['default'])];
    const rootOnly = stream(['ROOTCA']);
    await until(() => watchers.every((w) => w.got.length === 1) && rootOnly.got.length === 1);
    for (const w of [...watchers, rootOnly]) {
      const r = w.got[0]!;
      w.s.write(create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNames: r.resources.map((a) => anyUnpack(a, SecretSchema)!.name), versionInfo: r.versionInfo, responseNonce: r.nonce }));
    }
    store.setDefault('b');
    await until(() => watchers.every((w) => w.got.length === 2));
    await new Promise((r) => setTimeout(r, 200));
    expect(rootOnly.got).toHaveLength(1);
    for (const w of watchers) {
      const s = w.got[1]!.resources.map((a) => anyUnpack(a, SecretSchema)!).find((x) => x.name === 'default')!;
      expect(s.type.case).toBe('tlsCertificate');
      expect(Buffer.from((s.type.value as { certificateChain: { specifier: { value: Uint8Array } } }).certificateChain.specifier.value).toString()).toBe('CHAIN b\n');
    }
    expect(server.activeStreams()).toBe(4);
    for (const w of [...watchers, rootOnly]) w.s.cancel();
    await until(() => server.activeStreams() === 0);
    expect(store.listeners.size).toBe(0);
  });

  it('ok/delta over gRPC; fail/delta unknown name', async () => {
    const d = client.deltaSecrets();
    const first = new Promise<{ resources: { name: string }[] }>((res) => d.once('data', res));
    d.write(create(DeltaDiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: ['ROOTCA'] }));
    expect((await first).resources.map((r) => r.name)).toEqual(['ROOTCA']);
    const err = new Promise<grpc.ServiceError>((res) => d.once('error', res));
    d.write(create(DeltaDiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: ['spiffe://other.example'] }));
    expect((await err).code).toBe(grpc.status.NOT_FOUND);
  });
});
