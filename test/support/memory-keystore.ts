/**
 * A hand-written in-memory Keystore (the port of src/ca/keystore.ts) with the
 * semantics of the real ones: create-if-absent, compare-and-swap updates,
 * change notifications, plus test hooks to play another replica (`writeExternal`)
 * or a corrupted store (`corrupt`).
 */
import { CastellanError } from '../../src/platform/errors.ts';
import { parseKeyringDoc, serializeKeyringDoc, type KeyringDoc } from '../../src/ca/keyring-doc.ts';
import type { Keystore, StoredKeyring } from '../../src/ca/keystore.ts';

export class MemoryKeystore implements Keystore {
  readonly where = 'memory keystore';
  text: string | undefined;
  version = 0;
  writes = 0;
  conflicts = 0;
  private watchers = new Set<{ onChange: (k: StoredKeyring) => void; onError: (e: unknown) => void }>();

  private stored(): StoredKeyring | null {
    return this.text === undefined ? null : { doc: parseKeyringDoc(this.text, this.where), version: String(this.version) };
  }

  async read(): Promise<StoredKeyring | null> {
    return this.stored();
  }

  async createIfAbsent(doc: KeyringDoc): Promise<{ stored: StoredKeyring; created: boolean }> {
    if (this.text !== undefined) return { stored: this.stored()!, created: false };
    this.set(serializeKeyringDoc(doc), false);
    return { stored: this.stored()!, created: true };
  }

  async update(doc: KeyringDoc, expectedVersion: string): Promise<StoredKeyring> {
    if (String(this.version) !== expectedVersion) {
      this.conflicts++;
      throw new CastellanError('ABORTED', 'keystore.conflict', 'conflict');
    }
    this.set(serializeKeyringDoc(doc), false);
    return this.stored()!;
  }

  /** Another replica (or an admin with kubectl) writes the store. */
  writeExternal(doc: KeyringDoc): void {
    this.set(serializeKeyringDoc(doc), true);
  }

  /** The store now holds garbage (a bad edit); watchers are told. */
  corrupt(text = '{"version": 2, "trustDomain": 7}'): void {
    this.set(text, true);
  }

  private set(text: string, notify: boolean): void {
    this.text = text;
    this.version++;
    this.writes++;
    if (!notify) return;
    for (const w of this.watchers) {
      try {
        w.onChange(this.stored()!);
      } catch (e) {
        w.onError(e);
      }
    }
  }

  watch(onChange: (k: StoredKeyring) => void, onError: (e: unknown) => void): () => void {
    const w = { onChange, onError };
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  async close(): Promise<void> {
    this.watchers.clear();
  }
}
