/**
 * Minimum progress on an upstream body. The idle timeout (undici's bodyTimeout) only notices
 * silence longer than itself, so a body dripping a byte every few seconds never trips it, and a
 * silent one holds its clients for the whole timeout. This watch looks at the bytes that arrived in
 * the last `windowMs`: fewer than `minBytes` (silence or a drip alike) is a stall.
 *
 * The reader reports each chunk with add(). While the reader itself waits (its disk is slow and the
 * body is paused by backpressure) it calls pause(): that wait is not the upstream's doing, and the
 * window starts again on resume().
 */
export interface ProgressRule {
  /** The window, in ms. */
  windowMs: number;
  /** Bytes that must arrive within every window. */
  minBytes: number;
}

export class ProgressWatch {
  private readonly rule: ProgressRule;
  private readonly onStall: (bytesInWindow: number) => void;
  private readonly now: () => number;
  /** Byte totals sampled at each tick, oldest first; the first is at or before the window's start once a whole window has passed. */
  private samples: Array<{ at: number; total: number }>;
  private total = 0;
  private paused = false;
  private timer: NodeJS.Timeout | null;

  constructor(rule: ProgressRule, onStall: (bytesInWindow: number) => void, now: () => number = Date.now) {
    this.rule = rule;
    this.onStall = onStall;
    this.now = now;
    this.samples = [{ at: now(), total: 0 }];
    // A look every quarter second (at least ten per window): a stall is noticed that soon.
    const tick = Math.max(25, Math.min(250, Math.floor(rule.windowMs / 10)));
    this.timer = setInterval(() => this.check(), tick);
    this.timer.unref();
  }

  add(bytes: number): void {
    this.total += bytes;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.samples = [{ at: this.now(), total: this.total }];
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Checks the last window; exposed for tests that drive time themselves. */
  check(): void {
    if (this.paused || !this.timer) return;
    const now = this.now();
    this.samples.push({ at: now, total: this.total });
    const windowStart = now - this.rule.windowMs;
    while (this.samples.length > 1 && this.samples[1]!.at <= windowStart) this.samples.shift();
    const first = this.samples[0]!;
    if (first.at > windowStart) return; // not a whole window yet
    const progress = this.total - first.total;
    if (progress < this.rule.minBytes) {
      this.stop();
      this.onStall(progress);
    }
  }
}
