/**
 * The one live engine of a policy source (policy files, the Kubernetes API):
 * a new set is compiled aside and swapped in with one reference, so a
 * request in flight keeps the engine it started with; a set that does not
 * compile leaves the last good engine in force. Counts reloads in the
 * metrics; the sources log in their own words.
 */
import type { AuthzEngine } from './engine.ts';
import type { AuthzMetrics } from './metrics.ts';

export type Installed = { ok: true; engine: AuthzEngine; first: boolean } | { ok: false; error: string; repeated: boolean };

export class EngineHolder {
  #engine: AuthzEngine;
  #ready: boolean;
  #lastError: string | undefined;
  readonly #metrics: AuthzMetrics | undefined;

  /** `initial` serves until the first install; `ready` says whether it is a real set (else a fail-closed stand-in). */
  constructor(initial: AuthzEngine, o: { ready: boolean; metrics?: AuthzMetrics }) {
    this.#engine = initial;
    this.#ready = o.ready;
    this.#metrics = o.metrics;
    if (o.ready) this.#counted(initial);
  }

  /** The active engine. Capture it once per request. */
  get engine(): AuthzEngine {
    return this.#engine;
  }

  /** Whether a real set of policies is in force. */
  get ready(): boolean {
    return this.#ready;
  }

  /** The error of the last failed install, if the active set is older than its source. */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Builds an engine aside and makes it the active one; on failure the last good one stays. */
  install(build: () => AuthzEngine): Installed {
    try {
      const engine = build();
      const first = !this.#ready;
      this.#engine = engine;
      this.#ready = true;
      this.#lastError = undefined;
      this.#counted(engine);
      return { ok: true, engine, first };
    } catch (e) {
      const error = (e as Error).message;
      this.#metrics?.reloads.inc({ result: 'error' });
      const repeated = error === this.#lastError;
      this.#lastError = error;
      return { ok: false, error, repeated };
    }
  }

  #counted(engine: AuthzEngine): void {
    this.#metrics?.reloads.inc({ result: 'ok' });
    this.#metrics?.policies.set(engine.size);
    this.#metrics?.lastReloadSuccess.set(Math.floor(Date.now() / 1000));
  }
}
