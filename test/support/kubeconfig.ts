import { writeFileSync } from 'node:fs';

/** Writes a kubeconfig that points @kubernetes/client-node at an HTTPS API double (`url`, its CA, a bearer token). */
export function writeKubeconfig(path: string, o: { url: string; caPem: string; token: string }): void {
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      `clusters: [{name: double, cluster: {server: "${o.url}", certificate-authority-data: "${Buffer.from(o.caPem).toString('base64')}"}}]`,
      `users: [{name: castellan, user: {token: "${o.token}"}}]`,
      'contexts: [{name: double, context: {cluster: double, user: castellan}}]',
      'current-context: double',
      '',
    ].join('\n'),
  );
}
