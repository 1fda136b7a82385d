/**
 * Memory given back when the process is idle (config `server.idleMemoryReturn`).
 *
 * V8 keeps its heap at the size the busiest moment grew it to: the young generation stays at
 * 2 × `--max-semi-space-size` (16 MiB) once start-up or a burst has grown it, and old-space pages
 * freed by a burst stay committed. V8 would shrink both in a memory-reducing collection, but it
 * starts one on its own only when told the process is idle or under memory pressure, and Node
 * tells it neither. So a process that served a burst, or just started (the modules' start-up
 * garbage), keeps that memory for as long as it sits idle — every node-local instance of a
 * DaemonSet, most of the day.
 *
 * This runs that collection itself (V8's "last resort" flavour of a full GC: it compacts and shrinks
 * the young generation to its minimum): once at start-up, before the port is opened, and then
 * whenever no request has arrived for the configured time after at least one did, with nothing in
 * flight (no request being answered, no download running). Probes and metric scrapes do not count
 * as requests there. It takes 20–60 ms of the event loop,
 * only when nothing waits for it. Under load it never runs: the young generation grows back to
 * what the load needs, and that is the size a busy process should have.
 */
import type { Logger } from 'pino';
import { v8Gc } from '../util/v8-gc.js';

export interface MemoryReturned {
  reason: 'start-up' | 'idle';
  ms: number;
  /** Resident set (bytes), before and after. */
  rss: [number, number];
  /** V8 heap committed (bytes), before and after. */
  heapTotal: [number, number];
}

/** One memory-reducing full collection now; what it gave back. */
export function returnMemory(reason: MemoryReturned['reason']): MemoryReturned {
  const gc = v8Gc();
  const before = process.memoryUsage();
  const started = performance.now();
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const ms = performance.now() - started;
  const after = process.memoryUsage();
  return { reason, ms, rss: [before.rss, after.rss], heapTotal: [before.heapTotal, after.heapTotal] };
}

export interface IdleMemoryOptions {
  /** No request for this long after the last one (and nothing in flight): the memory is returned. */
  quietMs: number;
  /** How often quiet is looked for (default: a quarter of quietMs, between 50 ms and 5 s). */
  checkMs?: number;
  /** Work that is not a request (downloads running): while true, no collection. */
  busy: () => boolean;
  log: Logger;
  /** Told each time (metrics). */
  onReturn?: (r: MemoryReturned) => void;
}

/**
 * Requests that are not activity: the kubelet's probes and Prometheus' scrapes come every few
 * seconds to an idle process, and would keep it from ever being quiet.
 */
const PROBES: ReadonlySet<string> = new Set(['healthz', 'readyz', 'metrics']);

/** Watches the requests and returns the memory after each busy spell, once quiet (see above). */
export class IdleMemory {
  /** Requests answered that were activity. */
  private answered = 0;
  private inFlight = 0;
  /** `answered` when last looked at. */
  private seen = 0;
  private quietSince = performance.now();
  /** Something ran since the last collection. */
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  /** Collections run so far (tests, logs). */
  returns = 0;

  constructor(private readonly o: IdleMemoryOptions) {}

  requestStarted(): void {
    this.inFlight++;
  }

  /** A request answered, by the route the server matched (probes and scrapes are not activity, see PROBES). */
  requestEnded(route: string | undefined): void {
    this.inFlight--;
    if (route === undefined || !PROBES.has(route)) this.answered++;
  }

  /** The start-up collection, then the watch. */
  start(): void {
    this.run('start-up');
    const checkMs = this.o.checkMs ?? Math.min(5_000, Math.max(50, Math.floor(this.o.quietMs / 4)));
    this.timer ??= setInterval(() => this.check(), checkMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private check(): void {
    const now = performance.now();
    if (this.answered !== this.seen) {
      this.seen = this.answered;
      this.quietSince = now;
      this.dirty = true;
      return;
    }
    if (!this.dirty || this.inFlight > 0 || this.o.busy()) {
      // Quiet counts from the end of the work, not from the last request's start.
      if (this.dirty) this.quietSince = now;
      return;
    }
    if (now - this.quietSince < this.o.quietMs) return;
    this.dirty = false;
    this.run('idle');
  }

  private run(reason: MemoryReturned['reason']): void {
    try {
      const r = returnMemory(reason);
      this.returns++;
      this.o.onReturn?.(r);
      const mib = (n: number): number => Math.round((n / 1048576) * 10) / 10;
      this.o.log.debug({ reason, ms: Math.round(r.ms), rssMiB: r.rss.map(mib), heapTotalMiB: r.heapTotal.map(mib) }, 'idle: memory returned (a memory-reducing garbage collection)');
    } catch (err) {
      // A runtime without V8's gc extension options: nothing is returned, nothing else changes.
      this.stop();
      this.o.log.warn({ err }, 'idle: memory cannot be returned on this runtime; server.idleMemoryReturn does nothing');
    }
  }
}
