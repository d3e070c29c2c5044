/**
 * Automatic rotation of self-signed roots: on the leader only, one step at a
 * time (prepare → activate → retire, as nextAutoStep in keyring.ts decides),
 * re-armed for the next threshold; a failed step is retried in a minute.
 */
import { CastellanError } from '../platform/errors.ts';
import type { Clock, TimerHandle } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import type { KeyringDoc } from './keyring-doc.ts';
import { nextAutoStep } from './keyring.ts';
import type { LeaderElector } from './keystore.ts';

const HOUR = 3_600_000;

/** What the rotator acts on (CaManager). */
export interface RotationTarget {
  /** writes pending leaf accounting, so the step is decided on current figures */
  flush(): Promise<void>;
  /** the stored keyring now */
  doc(): KeyringDoc;
  prepare(): Promise<unknown>;
  activate(id: string): Promise<unknown>;
  retire(id: string): Promise<unknown>;
}

export interface RotatorOptions {
  enabled: boolean;
  propagationMs: number;
  leader: LeaderElector;
  clock: Clock;
  logger: Logger;
}

export class Rotator {
  private readonly o: RotatorOptions;
  private readonly target: RotationTarget;
  private timer: TimerHandle | undefined;
  private running: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(target: RotationTarget, o: RotatorOptions) {
    this.target = target;
    this.o = o;
  }

  /** Runs a step after `delayMs` (replacing any step already scheduled). */
  schedule(delayMs: number): void {
    if (this.closed || !this.o.enabled) return;
    this.timer?.cancel();
    this.timer = this.o.clock.setTimer(() => void this.rotateOnce(), Math.max(0, delayMs));
  }

  /** Resolves when no step is in progress. */
  idle(): Promise<unknown> {
    return this.running;
  }

  /** One step (leader only), then re-arms for the next threshold. */
  rotateOnce(): Promise<void> {
    const p = this.step();
    this.running = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
  }

  private async step(): Promise<void> {
    if (this.closed) return;
    const { clock, logger } = this.o;
    if (!this.o.leader.isLeader()) {
      this.schedule(HOUR);
      return;
    }
    try {
      await this.target.flush(); // decide on current leaf accounting
      const { step, recheckAt } = nextAutoStep(this.target.doc(), clock.now(), this.o.propagationMs);
      if (!step) {
        this.schedule(recheckAt - clock.now());
        return;
      }
      if (step.kind === 'prepare') await this.target.prepare();
      else if (step.kind === 'activate') await this.target.activate(step.id);
      else await this.target.retire(step.id);
      logger.info({ event: 'ca.auto_rotation', step: step.kind }, `automatic rotation: ${step.kind}`);
    } catch (e) {
      logger.error({ event: 'ca.auto_rotation_failed', err: e instanceof CastellanError ? e.message : String(e) }, 'automatic rotation step failed; retrying in a minute');
      this.schedule(60_000);
    }
  }
}
