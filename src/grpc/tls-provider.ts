/**
 * An in-memory grpc-js certificate provider: the server's TLS identity and
 * the CA certificates it verifies client certificates against can be swapped
 * at any time (rotation) without restarting the server or dropping
 * established connections.
 */
import type { experimental } from '@grpc/grpc-js';

type CaListener = experimental.CaCertificateUpdateListener;
type IdListener = experimental.IdentityCertificateUpdateListener;

export class MemoryCertificateProvider implements experimental.CertificateProvider {
  private ca: experimental.CaCertificateUpdate | null = null;
  private identity: experimental.IdentityCertificateUpdate | null = null;
  private caListeners = new Set<CaListener>();
  private idListeners = new Set<IdListener>();

  /** PEM: the server's certificate chain (leaf first) and its private key. */
  setIdentity(certChainPem: string, keyPem: string): void {
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(keyPem) };
    for (const l of this.idListeners) l(this.identity);
  }

  /** PEM: every certificate a client chain may end at. */
  setCaCertificates(pem: string): void {
    this.ca = { caCertificate: Buffer.from(pem) };
    for (const l of this.caListeners) l(this.ca);
  }

  // grpc-js subscribes to a provider before registering its own watcher, so
  // a value delivered synchronously here would be lost: deliver it on the
  // next microtask, once the subscriber is fully wired.
  addCaCertificateListener(l: CaListener): void {
    this.caListeners.add(l);
    queueMicrotask(() => {
      if (this.ca && this.caListeners.has(l)) l(this.ca);
    });
  }
  removeCaCertificateListener(l: CaListener): void {
    this.caListeners.delete(l);
  }
  addIdentityCertificateListener(l: IdListener): void {
    this.idListeners.add(l);
    queueMicrotask(() => {
      if (this.identity && this.idListeners.has(l)) l(this.identity);
    });
  }
  removeIdentityCertificateListener(l: IdListener): void {
    this.idListeners.delete(l);
  }
}
