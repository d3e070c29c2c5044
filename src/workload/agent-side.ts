/**
 * Wiring of the Workload API into `castellan agent` (imported only when
 * --workload-api-socket is given): the server over the agent's SecretCache
 * for X.509, and the JWT side fed by the CA client (minting) and the
 * WatchBundle updates (JWT bundle, tainted keys).
 */
import type { Registry } from 'prom-client';
import type { BundleUpdate, CaClient } from '../agent/ca-client.ts';
import type { SecretCache } from '../agent/cache.ts';
import type { Clock } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { resolveGroup } from '../sds/socket.ts';
import { AgentJwt } from './jwt.ts';

/** The agent settings the Workload API uses (a part of AgentConfig). */
export interface WorkloadApiConfig {
  trustDomain: string;
  workloadApiSocket?: string;
  workloadApiSocketGroup?: string;
}
import { createWorkloadMetrics } from './metrics.ts';
import { startWorkloadServer, type WorkloadServer } from './server.ts';

export interface WorkloadApi {
  readonly server: WorkloadServer;
  readonly jwt: AgentJwt;
  /** Every update pushed by the CA over WatchBundle. */
  onBundleUpdate(u: BundleUpdate): void;
  close(): Promise<void>;
}

export async function startWorkloadApi(
  config: WorkloadApiConfig,
  deps: { cache: SecretCache; client: () => CaClient | undefined; registry: Registry; clock: Clock; logger: Logger },
): Promise<WorkloadApi> {
  const metrics = createWorkloadMetrics(deps.registry);
  const jwt = new AgentJwt({
    trustDomain: config.trustDomain,
    clock: deps.clock,
    logger: deps.logger,
    metrics,
    mint: async (audiences) => {
      const c = deps.client();
      if (!c) throw new CastellanError('UNAVAILABLE', 'workload.no_ca', 'this agent has no CA client to mint JWT-SVIDs with');
      return c.mintJwtSvid(audiences);
    },
  });
  const gid = config.workloadApiSocketGroup ? resolveGroup(config.workloadApiSocketGroup) : undefined;
  const server = await startWorkloadServer({ socketPath: config.workloadApiSocket!, x509: deps.cache, jwt, policy: { gid }, logger: deps.logger, metrics });
  return {
    server,
    jwt,
    // The cache has applied (and validated) u.federatedBundles before this is called.
    onBundleUpdate: (u) => jwt.apply(u, new Map([...deps.cache.federatedBundles].map(([td, b]) => [td, b.jwtBundleJson]))),
    close: () => server.close(),
  };
}
