/**
 * Everything that follows the keyring: the signer's issuer, the expiry
 * gauges, the server's TLS identity and client trust, root-cert.pem, the
 * published trust bundle (leader only) and the agents watching the bundle.
 * A new follower of keyring changes plugs in here.
 */
import type { SigningAuthority } from '../ca/authority.ts';
import type { IssuerMaterial } from '../ca/issue.ts';
import type { KeyringView } from '../ca/keyring.ts';
import { writeRootCertFile } from '../ca/keystore-file.ts';
import type { LeaderElector, TrustBundlePublisher } from '../ca/keystore.ts';
import type { CaManager } from '../ca/manager.ts';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import type { ServingIdentity } from './serving-identity.ts';

export function issuerMaterial(a: SigningAuthority): IssuerMaterial {
  return { id: a.id, certDer: a.certDer, keyPkcs8Der: a.keyPkcs8Der, notBefore: a.notBefore, notAfter: a.notAfter };
}

export interface KeyringFollowers {
  manager: CaManager;
  signer: { setIssuer(m: IssuerMaterial): void };
  /** expiry gauges */
  setExpiries(view: KeyringView): void;
  serving: ServingIdentity;
  /** where root-cert.pem is written */
  dataDir: string;
  leader: LeaderElector;
  publisher?: TrustBundlePublisher;
  /** open WatchBundle streams */
  bundleWatchers: ReadonlySet<(v: KeyringView) => void>;
  logger: Logger;
}

/**
 * Writes root-cert.pem and publishes the bundle now, then follows every
 * keyring change. Returns the unsubscribe function.
 */
export async function followKeyring(f: KeyringFollowers): Promise<() => void> {
  const { manager, logger } = f;
  await writeRootCertFile(f.dataDir, manager.view().trustBundlePem);
  // The leader publishes the bundle: at start if it already leads, and whenever it becomes the leader
  // (an elector learns it leads only after its first round trip to the API).
  const publish = (why: string): void => {
    if (!f.publisher || !f.leader.isLeader()) return;
    f.publisher.publish(manager.view().trustBundlePem).catch((e: unknown) => logger.warn({ event: 'bundle.publish_failed', why, err: e instanceof CastellanError ? e.message : String(e) }, 'could not publish the trust bundle; it is retried'));
  };
  publish('start');
  f.leader.onChange((l) => {
    if (l) publish('leader');
  });
  return manager.onChange((view, prev) => {
    f.signer.setIssuer(issuerMaterial(view.active));
    f.setExpiries(view);
    f.serving.follow(view, prev);
    if (!prev || prev.trustBundlePem !== view.trustBundlePem) {
      writeRootCertFile(f.dataDir, view.trustBundlePem).catch((e: unknown) => logger.error({ err: e, event: 'bundle.file_failed' }, 'could not write root-cert.pem'));
      publish('bundle_changed');
    }
    for (const w of f.bundleWatchers) w(view);
    logger.info({ event: 'keyring.applied', generation: view.generation, active: view.active.id, tainted: view.taintedIds, roots: view.rootsDer.length }, 'keyring change applied');
  });
}
