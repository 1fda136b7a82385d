/**
 * The signal of one upstream operation: aborted when any of its sources is (the client went away,
 * the proxy is shutting down, a download was given up) or when its deadline passes. Listeners on
 * long-lived sources are removed by dispose(), so nothing accumulates on them.
 */
export class LinkedSignal {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private readonly unlinks: Array<() => void> = [];

  constructor(sources: ReadonlyArray<AbortSignal | undefined>, deadline?: { ms: number; reason: () => Error }) {
    for (const s of sources) {
      if (!s) continue;
      if (s.aborted) {
        this.abort(s.reason);
        return;
      }
      const onAbort = (): void => this.abort(s.reason);
      s.addEventListener('abort', onAbort, { once: true });
      this.unlinks.push(() => s.removeEventListener('abort', onAbort));
    }
    if (deadline) {
      this.timer = setTimeout(() => this.abort(deadline.reason()), deadline.ms);
      this.timer.unref();
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Ends the deadline (a blob body has none once its answer began); the sources still abort. */
  endDeadline(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  dispose(): void {
    this.endDeadline();
    for (const unlink of this.unlinks.splice(0)) unlink();
  }

  private abort(reason: unknown): void {
    if (this.controller.signal.aborted) return;
    this.controller.abort(reason);
    this.dispose();
  }
}
