/**
 * Acceptance: an SDS client that is not grpc-js (Python grpcio, Debian) drives
 * StreamSecrets (initial request, ACK adding a name, NACK, stale nonce, push
 * after rotation), FetchSecrets and DeltaSecrets over the agent's Unix
 * socket; then uses the received key and chain for a real TLS handshake
 * against a peer with another identity (the backend agent's output dir).
 * The agent gets its certificates from the real CA server.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { startRealCa, type RealCa } from '../agent/real-ca.ts';
import { tempDir } from '../support/tmp.ts';
import { generateSdsStubs, PYTHON } from './py-stubs.ts';
import { describeWith, peers } from '../support/peers.ts';

const tmp = tempDir('castellan-sds-py-');
let ca: RealCa;
let frontend: AgentHandle;
let backend: AgentHandle;
const stubs = join(tmp.path, 'stubs');
const work = join(tmp.path, 'work');

describeWith([peers.pythonGrpc], 'Python grpcio peer', () => {
  beforeAll(async () => {
    mkdirSync(stubs);
    mkdirSync(work);
    generateSdsStubs(stubs);
    ca = await startRealCa(tmp.path);
    frontend = await startAgent(await ca.agentConfig('frontend', join(tmp.path, 'fe', 'sds.sock')));
    backend = await startAgent(await ca.agentConfig('backend', join(tmp.path, 'be', 'sds.sock'), { outputDir: join(tmp.path, 'be-out') }));
    await frontend.cache.whenReady();
    await backend.cache.whenReady();
    await backend.cache.settled();
    copyFileSync(join(tmp.path, 'be-out', 'key.pem'), join(work, 'peer-key.pem'));
    copyFileSync(join(tmp.path, 'be-out', 'cert-chain.pem'), join(work, 'peer-chain.pem'));
    copyFileSync(join(tmp.path, 'be-out', 'root-cert.pem'), join(work, 'peer-root.pem'));
  }, 60_000);

  afterAll(async () => {
    await frontend?.close();
    await backend?.close();
    await ca?.stop();
    tmp.cleanup();
  });

  describe('SDS interop with Python grpcio', () => {
    it('ok/stream, fetch, delta and a TLS handshake with the served secrets', async () => {
      const py = spawn(PYTHON, [join(import.meta.dirname, 'py', 'sds_client.py'), stubs, frontend.sdsSocket, work], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      py.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const steps: Record<string, Record<string, unknown>> = {};
      const rl = createInterface({ input: py.stdout });
      rl.on('line', (line) => {
        const m = JSON.parse(line) as { step: string };
        steps[m.step] = m;
        if (m.step === 'wait_rotate') {
          void frontend.cache.reissueNow('test').then(() => py.stdin.write('rotated\n'));
        }
      });
      const code = await new Promise<number | null>((res) => py.on('close', res));
      expect(stderr, stderr).toBe('');
      expect(code).toBe(0);
      expect(steps.initial).toMatchObject({ names: ['default'] });
      expect(steps.added).toMatchObject({ names: ['ROOTCA', 'default'], nonce_differs: true });
      expect(steps.nack).toMatchObject({ resent: false });
      expect(steps.pushed).toMatchObject({ version_changed: true, chain_changed: true });
      expect(steps.fetch).toMatchObject({ names: ['ROOTCA', 'default'], type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' });
      expect(steps.fetch_unknown).toMatchObject({ code: 'NOT_FOUND' });
      expect(String(steps.fetch_unknown!.details)).toMatch(/only "default", "ROOTCA", "ALL" and "spiffe:\/\/<trust domain>"/);
      expect(steps.fetch_no_node).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(steps.delta).toMatchObject({ names: ['ROOTCA', 'default'], versions_nonempty: true, system_version: true });
      expect(steps.delta_ack).toMatchObject({ extra: false });
      expect(steps.delta_initial_versions).toMatchObject({ sent: false });
      expect(steps.delta_resubscribe).toMatchObject({ names: ['ROOTCA'] });
      expect(steps.tls).toMatchObject({
        client_id: 'spiffe://cluster.local/ns/default/sa/backend',
        server_id: 'spiffe://cluster.local/ns/default/sa/frontend',
        reply: 'hi\n',
      });
      expect(steps.done).toBeDefined();
      // every stream the client opened is gone from the agent
      await new Promise((r) => setTimeout(r, 200));
      expect(frontend.sds.activeStreams()).toBe(0);
      expect(frontend.cache.listenerCount).toBe(0);
    }, 60_000);
  });
});
