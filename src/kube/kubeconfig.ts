/**
 * Credentials for every client-node call: --kubeconfig, else $KUBECONFIG,
 * else the in-cluster service account.
 */
import { KubeConfig } from '@kubernetes/client-node';

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  const path = kubeconfig ?? process.env.KUBECONFIG;
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}
