/** A hand-written SecretStore for SDS tests: set/remove secrets and watch listeners. */
import type { SecretSnapshot, SecretStore } from '../../src/sds/resources.ts';
import { tlsCertificateSnapshot, validationContextSnapshot } from '../../src/sds/resources.ts';

export class FakeStore implements SecretStore {
  private snaps = new Map<string, SecretSnapshot>();
  readonly listeners = new Set<(name: string) => void>();

  get(name: string): SecretSnapshot | undefined {
    return this.snaps.get(name);
  }
  onChange(l: (name: string) => void): () => void {
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }
  setDefault(tag: string): SecretSnapshot {
    const s = tlsCertificateSnapshot(`CHAIN ${tag}\n`, `KEY ${tag}\n`);
    this.snaps.set(s.name, s);
    for (const l of [...this.listeners]) l(s.name);
    return s;
  }
  setRoot(tag: string): SecretSnapshot {
    const s = validationContextSnapshot(`ROOT ${tag}\n`);
    this.snaps.set(s.name, s);
    for (const l of [...this.listeners]) l(s.name);
    return s;
  }
  remove(name: string): void {
    this.snaps.delete(name);
    for (const l of [...this.listeners]) l(name);
  }
}
