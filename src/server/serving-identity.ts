/**
 * The CA server's own TLS identity: a certificate issued by the active
 * authority, re-issued at half-life and whenever the active authority
 * changes, and the client trust (every trusted root and every signer's chain,
 * so a leaf presented without its intermediates still verifies).
 * `--plaintext` serves without TLS (local addresses only).
 */
import * as grpc from '@grpc/grpc-js';
import { issueServingCertificate } from '../ca/serving.ts';
import type { KeyringView } from '../ca/keyring.ts';
import { MemoryCertificateProvider } from '../grpc/tls-provider.ts';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';

/** Lifetime of the server's own TLS certificate; re-issued at half-life and on every rotation. */
const SERVING_TTL_MS = 7 * 24 * 3600_000;

export interface ServingIdentityOptions {
  plaintext: boolean;
  /** the address, for the plaintext warning */
  listen: string;
  dnsNames: string[];
  trustDomain: string;
  /** the keyring now */
  view(): KeyringView;
  clock: Clock;
  logger: Logger;
}

/** PEM the server verifies client certificates against: every trusted root and every signer's chain. */
export function clientTrustPem(view: KeyringView): string {
  const parts = new Set<string>([view.trustBundlePem]);
  for (const a of view.authorities.values()) for (const c of a.chainPem) parts.add(c);
  return [...parts].join('');
}

export class ServingIdentity {
  readonly credentials: grpc.ServerCredentials;
  private readonly o: ServingIdentityOptions;
  private readonly provider: MemoryCertificateProvider | undefined;
  private timer: TimerHandle | undefined;

  private constructor(o: ServingIdentityOptions) {
    this.o = o;
    if (o.plaintext) {
      this.credentials = grpc.ServerCredentials.createInsecure();
    } else {
      this.provider = new MemoryCertificateProvider();
      this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, false);
    }
  }

  /** Issues the first serving certificate (unless plaintext) and sets the client trust. */
  static async start(o: ServingIdentityOptions): Promise<ServingIdentity> {
    const s = new ServingIdentity(o);
    if (o.plaintext) {
      o.logger.warn({ event: 'server.plaintext', address: o.listen }, 'serving the CA API without TLS (local address only)');
      return s;
    }
    await s.refresh();
    s.provider!.setCaCertificates(clientTrustPem(o.view()));
    return s;
  }

  /** Follows a keyring change: new client trust; a new certificate when the active authority changed. */
  follow(view: KeyringView, prev: KeyringView | undefined): void {
    if (!this.provider) return;
    this.provider.setCaCertificates(clientTrustPem(view));
    if (!prev || prev.active.id !== view.active.id) this.refreshLater();
  }

  close(): void {
    this.timer?.cancel();
  }

  private refreshLater(): void {
    this.refresh().catch((e: unknown) => this.o.logger.error({ err: e, event: 'server.tls_refresh_failed' }, 'could not re-issue the server certificate'));
  }

  private async refresh(): Promise<void> {
    const { clock } = this.o;
    this.timer?.cancel();
    const id = await issueServingCertificate(this.o.view().active, { dnsNames: this.o.dnsNames, trustDomain: this.o.trustDomain, ttlMs: SERVING_TTL_MS, now: clock.now() });
    this.provider!.setIdentity(id.certChainPem, id.keyPem);
    const wait = Math.max(60_000, (id.notAfter - clock.now()) / 2);
    this.timer = clock.setTimer(() => this.refreshLater(), wait);
  }
}
