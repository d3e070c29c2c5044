/** The lead's real CA server (startCaServer) on loopback with a dev token issuer, for agent/SDS acceptance tests. */
import { join } from 'node:path';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { writeFileAtomic } from '../../src/platform/files.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import type { AgentConfig } from '../../src/agent/agent.ts';

export interface RealCa {
  server: CaServerHandle;
  issuer: DevTokenIssuer;
  /** Writes a fresh token for default/<sa> and returns its path. */
  tokenFile(sa: string, ns?: string): Promise<string>;
  /** An agent config pointing at this CA. */
  agentConfig(sa: string, socketPath: string, o?: Partial<AgentConfig>): Promise<AgentConfig>;
  /** Stops the CA; `restart` brings it back on the same port with the same keyring. */
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export async function startRealCa(dir: string, o: { grpcListen?: string; maxTtlMs?: number } = {}): Promise<RealCa> {
  const issuer = await DevTokenIssuer.create({ dir: join(dir, 'issuer') });
  const config = (listen: string) =>
    defaultServerConfig({
      dataDir: join(dir, 'ca'),
      grpcListen: listen,
      httpListen: null,
      auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
      signer: { workers: 0, maxBatchSize: 16, maxBatchWaitMs: 1, maxQueue: 1000 },
      shutdownGraceMs: 200,
      logLevel: 'silent',
    });
  let server = await startCaServer(config(o.grpcListen ?? '127.0.0.1:0'), { logger: silentLogger() });
  const address = server.grpcAddress;
  const ca: RealCa = {
    get server() {
      return server;
    },
    issuer,
    async tokenFile(sa, ns = 'default') {
      const p = join(dir, `token-${ns}-${sa}`);
      await writeFileAtomic(p, await issuer.mint({ namespace: ns, serviceAccount: sa }), 0o600);
      return p;
    },
    async agentConfig(sa, socketPath, over = {}) {
      return {
        caAddress: address,
        caRootPem: server.trustBundlePem,
        caServerName: 'localhost',
        tokenFile: await ca.tokenFile(sa),
        trustDomain: 'cluster.local',
        sdsSocket: socketPath,
        certTtlMs: 3600_000,
        keyType: 'ec-p256',
        graceRatio: 0.5,
        httpListen: null,
        ...over,
      };
    },
    stop: () => server.close(),
    async restart() {
      server = await startCaServer(config(address), { logger: silentLogger() });
    },
  };
  return ca;
}
