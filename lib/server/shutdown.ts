/**
 * A shutdown bounded by `server.shutdownGrace` (rule 11): whatever is down — Redis, S3, a peer, the
 * upstream, a client that does not read — the process exits within its grace period. The drain is
 * best effort: answers and downloads get the grace less a reserve kept for closing; then every
 * closing step (handing downloads over, releasing leases, flushing the shared index, closing the
 * Redis connection, saving the index snapshot) is waited for at most until the deadline. A step
 * that does not finish in time is left undone, and the log names it: the next start, or another
 * replica, copes with what it left (expired leases, an index rebuilt from the files).
 */
import type { Logger } from 'pino';

/** What a step started after the deadline still gets (a local write, a socket destroyed). */
const STEP_FLOOR_MS = 100;

/** The part of the grace kept for the closing steps once the drain ends: a quarter, at most 2 s. */
export function closingReserve(graceMs: number): number {
  return Math.min(2_000, Math.floor(graceMs / 4));
}

export class ShutdownDeadline {
  private readonly end: number;
  /** Steps left undone (not finished by the deadline), in order. */
  readonly undone: string[] = [];

  constructor(
    readonly graceMs: number,
    private readonly log: Logger,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.end = this.now() + graceMs;
  }

  /** Milliseconds left until the deadline (0 once past it). */
  left(): number {
    return Math.max(0, this.end - this.now());
  }

  /** Resolves with `work` (true), or after `ms` (false), whichever comes first. */
  static within(work: Promise<unknown>, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    // Not unref'd: a process whose last work is a step that never settles must still reach its end.
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    return Promise.race([work.then(() => true), late]).finally(() => clearTimeout(timer));
  }

  /**
   * Runs one closing step and waits for it at most until the deadline (at least STEP_FLOOR_MS,
   * and at most `capMs` when given). Its failure is logged, never thrown; a step still running
   * is left to itself (the process exits soon) and named in the log. True when it finished.
   */
  async step(name: string, work: () => Promise<unknown>, capMs = Infinity): Promise<boolean> {
    const running = Promise.resolve()
      .then(work)
      .catch((err: unknown) => this.log.warn({ err, step: name }, 'shutdown: a closing step failed'));
    const done = await ShutdownDeadline.within(running, Math.min(capMs, Math.max(STEP_FLOOR_MS, this.left())));
    if (!done) {
      this.undone.push(name);
      this.log.warn({ step: name, graceMs: this.graceMs }, 'shutdown: a closing step did not finish within the grace period; left undone');
    }
    return done;
  }
}
