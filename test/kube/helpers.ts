/**
 * Shared set-up of the Kubernetes tests: one HTTP double of the API per test
 * file (test/kube/apiserver-double.ts), a kubeconfig in a temp dir, and
 * keyring documents that parse (structure only: the stores never look
 * inside the certificates).
 */
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { vi } from 'vitest';
import { emptyLeaves, type KeyringDoc } from '../../src/ca/keyring-doc.ts';
import { tempDir } from '../support/tmp.ts';
import { KubeApiDouble } from './apiserver-double.ts';

export interface DoubleEnv {
  api: KubeApiDouble;
  kubeconfig: string;
  /** a freshly loaded KubeConfig (each replica gets its own) */
  kc: () => KubeConfig;
  /** a kubeconfig whose token the double does not accept */
  badKubeconfig: string;
  /** a KubeConfig with its own (accepted) token, so the double can partition this client alone */
  kcAs: (token: string) => KubeConfig;
  stop: () => Promise<void>;
}

export async function startDouble(prefix = 'castellan-kube-'): Promise<DoubleEnv> {
  const tmp = tempDir(prefix);
  const api = await new KubeApiDouble().start(tmp.path);
  const kubeconfig = join(tmp.path, 'kubeconfig');
  const badKubeconfig = join(tmp.path, 'bad-kubeconfig');
  api.writeKubeconfig(kubeconfig);
  api.writeKubeconfig(badKubeconfig, 'not-the-token');
  return {
    api,
    kubeconfig,
    badKubeconfig,
    kc: () => {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      return kc;
    },
    kcAs: (token) => {
      const path = join(tmp.path, `kubeconfig-${token}`);
      api.tokens.add(token);
      api.writeKubeconfig(path, token);
      const kc = new KubeConfig();
      kc.loadFromFile(path);
      return kc;
    },
    stop: async () => {
      await api.stop();
      tmp.cleanup();
    },
  };
}

/** A keyring document that parses; `tag` ends up in the certificate text so documents differ. */
export function keyringDoc(generation: number, tag = `g${generation}`): KeyringDoc {
  const t = new Date(Date.UTC(2030, 0, 1)).toISOString();
  return {
    version: 2,
    trustDomain: 'cluster.local',
    generation,
    authorities: [
      {
        id: 'ab'.repeat(20),
        state: 'active',
        source: 'self-signed',
        keyType: 'ec-p256',
        certPem: `-----BEGIN CERTIFICATE-----\n${Buffer.from(`root ${tag}`).toString('base64')}\n-----END CERTIFICATE-----\n`,
        keyPem: `-----BEGIN PRIVATE KEY-----\n${Buffer.from(`key ${tag}`).toString('base64')}\n-----END PRIVATE KEY-----\n`,
        chainPem: '',
        rootsPem: `-----BEGIN CERTIFICATE-----\n${Buffer.from(`root ${tag}`).toString('base64')}\n-----END CERTIFICATE-----\n`,
        createdAt: t,
        activatedAt: t,
        leaves: emptyLeaves(),
      },
    ],
  };
}

export const until = (fn: () => unknown, timeout = 8000): Promise<void> =>
  vi.waitFor(
    () => {
      if (!fn()) throw new Error('not yet');
    },
    { timeout, interval: 10 },
  );

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
export const unb64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');
