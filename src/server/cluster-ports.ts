/**
 * Where the keyring lives, whom this replica defers to, and where the trust
 * bundle is published: files in the data directory, or a Secret, a Lease and
 * ConfigMaps (src/kube/, loaded only when configured).
 */
import type { Keystore, LeaderElector, TrustBundlePublisher } from '../ca/keystore.ts';
import { alwaysLeader } from '../ca/keystore.ts';
import { fileKeystore } from '../ca/keystore-file.ts';
import type { Logger } from '../platform/logger.ts';
import type { ServerConfig } from './config.ts';

export interface ClusterPorts {
  keystore: Keystore;
  leader: LeaderElector;
  publisher?: TrustBundlePublisher;
}

/** `given` replaces any of them (tests, embedding). */
export async function clusterPorts(config: ServerConfig, given: Partial<ClusterPorts>, logger: Logger): Promise<ClusterPorts> {
  if (config.keystore.kind === 'file') {
    return { keystore: given.keystore ?? (await fileKeystore({ dataDir: config.dataDir })), leader: given.leader ?? alwaysLeader(), publisher: given.publisher };
  }
  const k = config.keystore;
  const { secretKeystore } = await import('../kube/keystore-secret.ts');
  const { leaseElector } = await import('../kube/lease.ts');
  const identity = process.env.POD_NAME ?? `${(await import('node:os')).hostname()}-${process.pid}`;
  const keystore = given.keystore ?? secretKeystore({ kubeconfig: k.kubeconfig, namespace: k.secretNamespace, name: k.secretName, logger });
  const leader = given.leader ?? leaseElector({ kubeconfig: k.kubeconfig, namespace: k.leaseNamespace, name: k.leaseName, identity, logger });
  let publisher = given.publisher;
  if (!publisher && config.publishTrustBundle) {
    const { configMapBundlePublisher } = await import('../kube/bundle-publisher.ts');
    publisher = configMapBundlePublisher({ kubeconfig: k.kubeconfig, namespaceSelector: config.publishTrustBundle.namespaceSelector, logger, leader });
  }
  return { keystore, leader, publisher };
}
