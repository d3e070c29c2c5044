/**
 * Time as a port, so tests can move it. All values are milliseconds since the
 * Unix epoch (like Date.now()); durations are milliseconds.
 */
export interface Clock {
  now(): number;
  /** Runs `fn` after `ms` milliseconds of this clock's time. The returned handle cancels it. */
  setTimer(fn: () => void, ms: number): TimerHandle;
}

export interface TimerHandle {
  cancel(): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    // Node timers overflow past 2^31-1 ms (~24.8 days); re-arm in steps.
    const MAX = 2_147_000_000;
    let cancelled = false;
    let t: NodeJS.Timeout;
    const deadline = Date.now() + ms;
    const arm = () => {
      const left = deadline - Date.now();
      t = setTimeout(() => {
        if (cancelled) return;
        if (deadline - Date.now() > 0 && left > MAX) arm();
        else fn();
      }, Math.max(0, Math.min(left, MAX)));
      t.unref?.();
    };
    arm();
    return {
      cancel() {
        cancelled = true;
        clearTimeout(t);
      },
    };
  },
};

/**
 * A clock that only moves when told to. `advance` fires due timers in
 * deadline order; `set` jumps (forwards or backwards, like a wall clock).
 */
export class FakeClock implements Clock {
  private current: number;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = Date.UTC(2030, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.current + Math.max(0, ms), fn });
    return { cancel: () => void this.timers.delete(id) };
  }

  /** Number of armed timers (lets tests wait until the code under test has armed one). */
  get pendingTimers(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= target && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.current = Math.max(this.current, next[1].at);
      next[1].fn();
    }
    this.current = target;
  }

  set(ms: number): void {
    this.current = ms;
  }
}
