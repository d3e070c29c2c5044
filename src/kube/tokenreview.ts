/**
 * The Kubernetes TokenReview call (POST /apis/authentication.k8s.io/v1/tokenreviews)
 * through @kubernetes/client-node: the implementation of the TokenReviewer
 * port of src/identity/tokenreview.ts.
 */
import { AuthenticationV1Api } from '@kubernetes/client-node';
import type { TokenReviewer, TokenReviewStatus } from '../identity/tokenreview.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export function kubeTokenReviewer(kubeconfig?: string): TokenReviewer {
  const api = loadKubeConfig(kubeconfig).makeApiClient(AuthenticationV1Api);
  return async (token, audiences) => {
    const res = await api.createTokenReview({
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } },
    });
    return (res.status ?? {}) as TokenReviewStatus;
  };
}
