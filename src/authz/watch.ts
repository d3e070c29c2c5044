/**
 * A live policy set for long-running servers: loaded from files and
 * directories, reloaded when they change (fs.watch for promptness, a
 * fingerprint poll as the safety net for editors, ConfigMap symlink swaps and
 * file systems without inotify).
 *
 * A reload builds a whole new engine and swaps one reference, so a request in
 * flight keeps the engine it started with and no request ever waits. A bad
 * edit keeps the last good set, is logged once and counted
 * (`castellan_authz_policy_reloads_total{result="error"}`).
 *
 * A change is loaded only once the files have held still for the settle time:
 * a file rewritten in place is empty or half written for a moment, and an
 * empty file is a valid set with no policies. Loading that moment would drop
 * every DENY rule until the next check.
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import { AuthzEngine, type EngineOptions } from './engine.ts';
import { EngineHolder } from './engine-holder.ts';
import { loadPolicies, policyFingerprint } from './loader.ts';
import type { AuthzMetrics } from './metrics.ts';

export interface PolicyWatcherOptions {
  readonly paths: readonly string[];
  readonly engine: EngineOptions;
  readonly logger: Logger;
  readonly metrics?: AuthzMetrics;
  /** Fingerprint poll interval in milliseconds (default 2000; 0 disables polling). */
  readonly pollMs?: number;
  /**
   * How long the files must stay unchanged before a change is loaded, in
   * milliseconds (default 100). Also the quiet time after a file event.
   */
  readonly debounceMs?: number;
  /** Called after every reload attempt (tests). */
  readonly onReload?: (r: { ok: boolean; policies: number; error?: string }) => void;
  /** Time of the poll and the settle checks; default the system clock. */
  readonly clock?: Clock;
}

export class PolicyWatcher {
  readonly #holder: EngineHolder;
  #fingerprint: string;
  readonly #opts: PolicyWatcherOptions;
  readonly #watchers: FSWatcher[] = [];
  readonly #clock: Clock;
  #timer: TimerHandle | undefined;
  #debounce: TimerHandle | undefined;
  /** A changed fingerprint not yet loaded, and when it was first seen. */
  #pending: { fp: string; since: number } | undefined;
  #closed = false;

  /** Loads the initial set; throws CastellanError when it is invalid. */
  constructor(opts: PolicyWatcherOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#fingerprint = policyFingerprint(opts.paths);
    this.#holder = new EngineHolder(AuthzEngine.compile(loadPolicies(opts.paths).policies, opts.engine), { ready: true, metrics: opts.metrics });
    const dirs = new Set<string>();
    for (const p of opts.paths) {
      let isDir = false;
      try {
        isDir = statSync(p).isDirectory();
      } catch {
        // watched through its parent
      }
      dirs.add(isDir ? p : dirname(p));
    }
    for (const d of dirs) {
      try {
        const w = watch(d, { recursive: true, persistent: false }, () => this.#changed());
        w.on('error', () => undefined); // the poll still covers it
        this.#watchers.push(w);
      } catch {
        // no inotify here: polling only
      }
    }
    const poll = opts.pollMs ?? 2000;
    if (poll > 0) {
      const tick = (): void => {
        this.#timer = this.#clock.setTimer(() => {
          if (this.#closed) return;
          try {
            this.#check();
          } finally {
            tick();
          }
        }, poll);
      };
      tick();
    }
  }

  /** The active engine. Capture it once per request. */
  get engine(): AuthzEngine {
    return this.#holder.engine;
  }

  /** The error of the last failed reload, if the active set is older than the files. */
  get lastError(): string | undefined {
    return this.#holder.lastError;
  }

  #changed(): void {
    this.#recheck(this.#opts.debounceMs ?? 100);
  }

  #recheck(ms: number): void {
    if (this.#closed) return;
    this.#debounce?.cancel();
    this.#debounce = this.#clock.setTimer(() => this.#check(), ms);
  }

  #check(): void {
    if (this.#closed) return;
    const fp = policyFingerprint(this.#opts.paths);
    if (fp === this.#fingerprint) {
      this.#pending = undefined; // changed and changed back
      return;
    }
    const settle = this.#opts.debounceMs ?? 100;
    const now = this.#clock.now();
    if (this.#pending?.fp !== fp) {
      this.#pending = { fp, since: now }; // first sight, or still being written
      this.#recheck(settle);
      return;
    }
    if (now - this.#pending.since < settle) {
      this.#recheck(settle - (now - this.#pending.since));
      return;
    }
    this.#pending = undefined;
    this.#fingerprint = fp;
    this.reload();
  }

  /** Reloads now (also used by SIGHUP). Returns whether the new set is active. */
  reload(): boolean {
    const { logger } = this.#opts;
    const r = this.#holder.install(() => AuthzEngine.compile(loadPolicies(this.#opts.paths).policies, this.#opts.engine));
    if (r.ok) {
      logger.info({ event: 'authz.reload', policies: r.engine.size }, 'policies reloaded');
      this.#opts.onReload?.({ ok: true, policies: r.engine.size });
      return true;
    }
    const policies = this.#holder.engine.size;
    if (!r.repeated) logger.error({ event: 'authz.reload_failed', policies, error: r.error }, 'policy reload failed: keeping the last good policy set');
    this.#opts.onReload?.({ ok: false, policies, error: r.error });
    return false;
  }

  close(): void {
    this.#closed = true;
    this.#timer?.cancel();
    this.#debounce?.cancel();
    for (const w of this.#watchers) w.close();
  }
}
