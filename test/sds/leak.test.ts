/**
 * S3: connect/disconnect cycles leave file descriptors and memory flat.
 * Each cycle opens a gRPC StreamSecrets over the Unix socket, waits for the
 * first response, and cancels; plus a raw connect that hangs up before
 * speaking HTTP/2. 10 000 cycles, the count of security.md S3 (about 20 s;
 * CASTELLAN_S3_CYCLES changes it).
 */
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import { DiscoveryRequestSchema, type DiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { startSdsServer } from '../../src/sds/server.ts';
import { tempDir } from '../support/tmp.ts';
import { FakeStore } from './fake-store.ts';

const CYCLES = Number(process.env.CASTELLAN_S3_CYCLES ?? 10_000);
const tmp = tempDir('castellan-s3-');
afterAll(() => tmp.cleanup());

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const fds = (): number => readdirSync('/proc/self/fd').length;

function heap(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

async function cycle(socket: string): Promise<void> {
  const c = createClient(SecretDiscoveryService, `unix:${socket}`, grpc.credentials.createInsecure());
  const s = c.streamSecrets();
  await new Promise<void>((res, rej) => {
    s.once('data', (_r: DiscoveryResponse) => res());
    s.once('error', rej);
    s.write(create(DiscoveryRequestSchema, { node: { id: 'leak' }, typeUrl: SECRET_TYPE_URL, resourceNames: ['default', 'ROOTCA'] }));
  });
  s.on('error', () => undefined); // the cancel below surfaces as CANCELLED
  s.cancel();
  c.close();
  await new Promise<void>((res) => {
    const raw = connect({ path: socket });
    raw.once('connect', () => raw.destroy());
    raw.once('close', () => res());
    raw.once('error', () => res());
  });
}

describe('SDS connect/disconnect (S3)', () => {
  it(`ok/${CYCLES} cycles: fds and heap flat, no stream or listener left`, async () => {
    const store = new FakeStore();
    store.setDefault('a');
    store.setRoot('r');
    const server = await startSdsServer({ socketPath: join(tmp.path, 'sds', 'socket'), store });
    try {
      for (let i = 0; i < 200; i++) await cycle(server.socketPath); // warm-up (lazy allocations, JIT)
      await new Promise((r) => setTimeout(r, 200));
      const fd0 = fds();
      const heap0 = heap();
      const t0 = performance.now();
      for (let i = 0; i < CYCLES; i++) await cycle(server.socketPath);
      const ms = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 500));
      const fd1 = fds();
      const heap1 = heap();
      console.log(`S3: ${CYCLES} cycles in ${Math.round(ms)} ms; fds ${fd0} -> ${fd1}; heap ${(heap0 / 1e6).toFixed(1)} MB -> ${(heap1 / 1e6).toFixed(1)} MB`);
      expect(fd1 - fd0).toBeLessThanOrEqual(4);
      expect(heap1 - heap0).toBeLessThan(8e6);
      expect(server.activeStreams()).toBe(0);
      expect(store.listeners.size).toBe(0);
    } finally {
      await server.close();
    }
  }, 300_000);
});
