/**
 * Acceptance, against the real CA server over TLS:
 * - renewal with TTLs of seconds: each new certificate is pushed over SDS
 *   before the previous one expires and validity intervals leave no gap;
 * - CA stopped: the agent keeps serving the valid certificate over SDS,
 *   backs off, and recovers when the CA returns on the same address.
 */
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { DiscoveryRequestSchema } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { SecretDiscoveryService } from '../../src/gen/envoy/service/secret/v3/sds_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { secretsOf, watchSecrets } from '../../src/dev/sds-client.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { startRealCa, type RealCa } from './real-ca.ts';
import { tempDir } from '../support/tmp.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function fetchDefaultSerial(socket: string): Promise<string> {
  const c = createClient(SecretDiscoveryService, `unix:${socket}`, grpc.credentials.createInsecure());
  try {
    const res = await c.fetchSecrets(create(DiscoveryRequestSchema, { node: { id: 't' }, typeUrl: SECRET_TYPE_URL, resourceNames: ['default'] }), { deadline: Date.now() + 5000 });
    return new X509Certificate(secretsOf(res).chainPem!).serialNumber;
  } finally {
    c.close();
  }
}

async function setup(): Promise<{ ca: RealCa; dir: string }> {
  const tmp = tempDir('castellan-life-');
  cleanups.push(() => tmp.cleanup());
  const ca = await startRealCa(tmp.path);
  cleanups.push(() => ca.stop());
  return { ca, dir: tmp.path };
}

describe('agent lifecycle against the real CA', () => {
  it('ok/renewal with 3s certificates: pushed before expiry, no validity gap', async () => {
    const { ca, dir } = await setup();
    const agent: AgentHandle = await startAgent(await ca.agentConfig('frontend', join(dir, 'sds.sock'), { certTtlMs: 3000 }), { jitter: 0 });
    cleanups.push(() => agent.close());
    const seen: { serial: string; notBefore: number; notAfter: number; receivedAt: number }[] = [];
    const w = watchSecrets(agent.sdsSocket, 'renewal-test', (s) => {
      const c = new X509Certificate(s.chainPem);
      if (seen.at(-1)?.serial === c.serialNumber) return;
      seen.push({ serial: c.serialNumber, notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo), receivedAt: Date.now() });
    });
    cleanups.push(() => w.close());
    await until(() => seen.length >= 4, 20_000, '4 certificates over SDS');
    for (let i = 1; i < seen.length; i++) {
      const prev = seen[i - 1]!;
      const next = seen[i]!;
      expect(next.receivedAt, `renewal ${i} pushed before the previous expiry`).toBeLessThan(prev.notAfter);
      expect(next.notBefore, `renewal ${i} overlaps the previous one`).toBeLessThanOrEqual(prev.notAfter);
      expect(next.serial).not.toBe(prev.serial);
    }
    const text = await agent.metrics.registry.getSingleMetricAsString('cert_expiry_seconds');
    const m = /cert_expiry_seconds\{resource_name="default"\} ([\d.]+)/.exec(text);
    expect(Number(m?.[1])).toBeGreaterThan(0);
    expect(Number(m?.[1])).toBeLessThanOrEqual(3);
  }, 30_000);

  it('ok/CA stopped: keeps serving, backs off, recovers when the CA returns', async () => {
    const { ca, dir } = await setup();
    const agent = await startAgent(await ca.agentConfig('frontend', join(dir, 'sds.sock'), { certTtlMs: 8000 }), {
      jitter: 0,
      backoff: { initialMs: 200, maxMs: 1000 },
    });
    cleanups.push(() => agent.close());
    await agent.cache.whenReady();
    const first = await fetchDefaultSerial(agent.sdsSocket);
    await ca.stop();
    // renewal is due at 4s; wait for a few failed attempts
    await until(() => agent.cache.status().consecutiveFailures >= 3, 15_000, 'failed attempts while the CA is down');
    expect(await fetchDefaultSerial(agent.sdsSocket)).toBe(first);
    expect(agent.cache.status().ready).toBe(true);
    const failed = await agent.metrics.registry.getSingleMetricAsString('num_failed_outgoing_requests');
    expect(Number(/num_failed_outgoing_requests\{request_type="csr"\} (\d+)/.exec(failed)?.[1])).toBeGreaterThanOrEqual(3);
    await ca.restart();
    await until(() => agent.cache.status().issuances >= 2, 15_000, 'recovery after the CA returns');
    expect(agent.cache.status().consecutiveFailures).toBe(0);
    expect(await fetchDefaultSerial(agent.sdsSocket)).not.toBe(first);
  }, 40_000);
});
