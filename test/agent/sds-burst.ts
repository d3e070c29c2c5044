/**
 * The SDS burst of test/agent/ops-burst.test.ts, in its own process so the
 * test runner's work never counts against the agent: argv[2] is the agent's
 * SDS socket, argv[3] the number of clients, argv[4] the rounds. Prints
 * READY, waits for a line on stdin, then per round opens every client at
 * once (each its own connection, as separate Envoys would), each a
 * StreamSecrets stream for `default` and `ROOTCA`, waits until every one has
 * both secrets, and closes them all. Last, one JSON line:
 * { complete, errors, elapsedMs }.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { secretsOf } from '../../src/dev/sds-client.ts';
import { DiscoveryRequestSchema, type DiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DEFAULT_RESOURCE, ROOTCA_RESOURCE, SECRET_TYPE_URL } from '../../src/sds/resources.ts';

const [socket, clients, rounds] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4] ?? 1)];

function one(i: number): Promise<boolean> {
  // A pool of its own: one connection per client, not one shared by all.
  const client = createClient(SecretDiscoveryService, `unix:${socket}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  return new Promise<boolean>((resolve) => {
    const s = client.streamSecrets();
    const have = { key: false, bundle: false };
    const done = (ok: boolean): void => {
      s.removeAllListeners('data');
      s.on('error', () => undefined);
      s.cancel();
      client.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 30_000);
    s.on('data', (res: DiscoveryResponse) => {
      const got = secretsOf(res);
      have.key ||= Boolean(got.keyPem && got.chainPem);
      have.bundle ||= Boolean(got.bundlePem);
      if (have.key && have.bundle) {
        clearTimeout(timer);
        done(true);
      }
    });
    s.on('error', () => {
      clearTimeout(timer);
      done(false);
    });
    s.write(create(DiscoveryRequestSchema, { node: { id: `sidecar~10.0.0.${i % 250}~burst-${i}.bench~bench.svc.cluster.local` }, typeUrl: SECRET_TYPE_URL, resourceNames: [DEFAULT_RESOURCE, ROOTCA_RESOURCE] }));
  });
}

process.stdout.write('READY\n');
await new Promise((r) => process.stdin.once('data', r));
let complete = 0;
let errors = 0;
const t0 = performance.now();
for (let r = 0; r < rounds; r++) {
  for (const ok of await Promise.all(Array.from({ length: clients }, (_, i) => one(i)))) {
    if (ok) complete++;
    else errors++;
  }
}
process.stdout.write(JSON.stringify({ complete, errors, elapsedMs: performance.now() - t0 }) + '\n', () => process.exit(0));
