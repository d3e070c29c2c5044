/**
 * Wiring of node authorization (src/identity/impersonation.ts) into the CA
 * server: the authorizer always (so refused impersonations are counted by
 * reason), and, when trusted node accounts are configured, the pod cache it
 * reads (src/kube/pod-cache.ts, loaded only then: client-node is heavy).
 */
import type { Registry } from 'prom-client';
import type { Clock } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import { createImpersonationMetrics, NodeAuthorizer, type ImpersonationMetrics } from '../identity/impersonation.ts';
import type { PodCache } from '../kube/pod-cache.ts';
import type { ServerConfig } from './config.ts';

export interface NodeAuthorization {
  authorizer: NodeAuthorizer;
  metrics: ImpersonationMetrics;
  /** present when the feature is on; the server is not ready before its first list */
  pods?: PodCache;
}

export async function startNodeAuthorization(config: Pick<ServerConfig, 'trustDomain' | 'trustedNodeAccounts' | 'kubeconfig'>, o: { registry: Registry; clock: Clock; logger: Logger }): Promise<NodeAuthorization> {
  const metrics = createImpersonationMetrics(o.registry);
  let pods: PodCache | undefined;
  if (config.trustedNodeAccounts.length > 0) {
    const { watchPods } = await import('../kube/pod-cache.ts');
    const { loadKubeConfig } = await import('../kube/tokenreview.ts');
    pods = watchPods({ kubeConfig: loadKubeConfig(config.kubeconfig), clock: o.clock, logger: o.logger });
    o.logger.info(
      { event: 'ca.node_authorization', trustedNodeAccounts: config.trustedNodeAccounts.map((a) => `${a.namespace}/${a.serviceAccount}`) },
      'node agents of these service accounts may request certificates for pods on their node; not ready until the pods are listed',
    );
  }
  const authorizer = new NodeAuthorizer({ trustDomain: config.trustDomain, accounts: config.trustedNodeAccounts, pods, logger: o.logger, metrics });
  return { authorizer, metrics, pods };
}
