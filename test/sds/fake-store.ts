/** A hand-written SecretStore for SDS tests: set/remove secrets and watch listeners. */
import type { SecretSnapshot, SecretStore } from '../../src/sds/resources.ts';
import { spiffeValidatorSnapshot, tlsCertificateSnapshot, validationContextSnapshot } from '../../src/sds/resources.ts';

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
  /** Trust-domain names (`spiffe://<td>`) served, as the agent's cache reports them. */
  dynamic: string[] = [];
  dynamicNames(): readonly string[] {
    return this.dynamic;
  }
  /** Serves `name` (`ALL` or `spiffe://<td>`) as a SPIFFE validator over `domains`. */
  setTrust(name: string, domains: [string, string][]): SecretSnapshot {
    const s = spiffeValidatorSnapshot(name, domains);
    this.snaps.set(s.name, s);
    for (const l of [...this.listeners]) l(s.name);
    return s;
  }
  remove(name: string): void {
    this.snaps.delete(name);
    for (const l of [...this.listeners]) l(name);
  }
}
