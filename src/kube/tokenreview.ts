/**
 * The Kubernetes TokenReview call (POST /apis/authentication.k8s.io/v1/tokenreviews)
 * through @kubernetes/client-node. Credentials: --kubeconfig, else $KUBECONFIG,
 * else the in-cluster service account.
 */
import { AuthenticationV1Api, KubeConfig } from '@kubernetes/client-node';

/** What Castellan needs of a review's answer. */
export interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
}

/** Port: sends one review. Rejects on transport or HTTP errors. */
export type TokenReviewer = (token: string, audiences: string[]) => Promise<TokenReviewStatus>;

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  const path = kubeconfig ?? process.env.KUBECONFIG;
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}

export function kubeTokenReviewer(kubeconfig?: string): TokenReviewer {
  const api = loadKubeConfig(kubeconfig).makeApiClient(AuthenticationV1Api);
  return async (token, audiences) => {
    const res = await api.createTokenReview({
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } },
    });
    return (res.status ?? {}) as TokenReviewStatus;
  };
}
