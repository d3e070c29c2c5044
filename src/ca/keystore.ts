/**
 * Ports of the keyring's persistence and of the cluster-wide duties of a CA
 * replica. Each has a real implementation and a hand-written fake:
 *
 *   Keystore             file: src/ca/keystore-file.ts (0600 file in --data-dir)
 *                        Kubernetes Secret: src/kube/keystore-secret.ts
 *   LeaderElector        single process: alwaysLeader() below
 *                        Kubernetes Lease: src/kube/lease.ts
 *   TrustBundlePublisher none, or the `istio-ca-root-cert` ConfigMaps: src/kube/bundle-publisher.ts
 *
 * The keyring document is opaque to stores: they keep its text (see
 * keyring-doc.ts for the schema) with a version token for optimistic
 * concurrency (a Secret's resourceVersion, a hash of the file).
 */
import type { KeyringDoc } from './keyring-doc.ts';

export interface StoredKeyring {
  readonly doc: KeyringDoc;
  /** opaque; changes with every write (resourceVersion, content hash) */
  readonly version: string;
}

export interface Keystore {
  /** Human-readable location for logs and errors, e.g. `Secret castellan-system/castellan-ca`. */
  readonly where: string;
  /**
   * The stored keyring, or null if none exists yet. A stored keyring that
   * cannot be parsed is a FAILED_PRECONDITION keystore.corrupt error
   * (the caller keeps its last good state).
   */
  read(): Promise<StoredKeyring | null>;
  /**
   * Stores `doc` only if no keyring exists (create-if-absent: several
   * replicas cold-starting together end with one root). Returns what is
   * stored afterwards and whether it is ours.
   */
  createIfAbsent(doc: KeyringDoc): Promise<{ stored: StoredKeyring; created: boolean }>;
  /**
   * Replaces the keyring if it is still at `expectedVersion`; otherwise
   * throws CastellanError ABORTED keystore.conflict (re-read and retry).
   */
  update(doc: KeyringDoc, expectedVersion: string): Promise<StoredKeyring>;
  /**
   * Calls `onChange` whenever the stored keyring changes (written by
   * another replica or process), with the new document; `onError` for a
   * document that cannot be parsed (the caller keeps its last good state).
   * Returns a function that stops watching.
   */
  watch(onChange: (k: StoredKeyring) => void, onError: (e: unknown) => void): () => void;
  /** Releases timers and connections. */
  close(): Promise<void>;
}

export interface LeaderElector {
  /** Whether this replica may rotate (and publish) now. */
  isLeader(): boolean;
  /** Called with the new value whenever leadership is gained or lost. */
  onChange(listener: (leader: boolean) => void): void;
  /** Gives leadership up (if held) and stops. */
  close(): Promise<void>;
}

export interface TrustBundlePublisher {
  /** Makes every target (e.g. every namespace's ConfigMap) hold `bundlePem`; idempotent. */
  publish(bundlePem: string): Promise<void>;
  close(): Promise<void>;
}

/** A lone process is always the leader. */
export function alwaysLeader(): LeaderElector {
  return {
    isLeader: () => true,
    onChange: () => undefined,
    close: async () => undefined,
  };
}
