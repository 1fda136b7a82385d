/**
 * bcrypt off the event loop. A bcrypt compare is ~80 ms of CPU at cost 10 (bcryptjs is pure JS);
 * run on the main thread, a burst of logins stalls every request, /healthz included. Here the
 * compares run in a small pool of worker threads (node:worker_threads), and the work is bounded:
 *
 *   compare(password, hash)
 *     a worker is idle (or fewer than `threads` are running)  → it runs there
 *     all are busy, fewer than `maxQueue` compares wait       → it waits its turn (FIFO)
 *     all are busy and `maxQueue` compares wait               → rejects at once with
 *                                                               HashQueueFullError (the edge: 429)
 *
 * Workers start on first need and hold the process open only while they work (unref'd when idle).
 * A worker that dies fails the compare it was running (never the process) and is replaced on the
 * next need. The worker's code is `workerMain` below, serialized and run with `eval`, so it is the
 * same from lib/*.ts under the tests' loader and from dist/*.js, and a worker loads nothing but
 * bcryptjs.
 *
 * (Not piscina: it loads its task from a module file, which lib/ under the tests' TypeScript loader and
 * dist/ would each need in its own form; a serialized function needs neither.)
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker, type MessagePort } from 'node:worker_threads';

export interface BcryptPoolOptions {
  /** Worker threads, i.e. compares at once. Default: the cores less one, 1 to 4. */
  threads?: number;
  /** Compares that may wait for a worker; beyond that compare() rejects. Default 32. */
  maxQueue?: number;
}

/** The queue is full: the caller should be told to come back later (429 with Retry-After). */
export class HashQueueFullError extends Error {
  readonly code = 'HASH_QUEUE_FULL';
  constructor(readonly retryAfterMs: number) {
    super('too many passwords are being checked');
    this.name = 'HashQueueFullError';
  }
}

interface CompareRequest {
  password: string;
  hash: string;
}

type CompareReply = { ok: boolean } | { error: string };

interface BcryptSync {
  compareSync(password: string, hash: string): boolean;
}

/** Runs in a worker. Serialized with toString: it uses nothing but its parameters. */
function workerMain(port: MessagePort, bcrypt: BcryptSync): void {
  port.on('message', (m: CompareRequest) => {
    let reply: CompareReply;
    try {
      reply = { ok: bcrypt.compareSync(m.password, m.hash) };
    } catch (err) {
      reply = { error: String(err) };
    }
    port.postMessage(reply);
  });
}

const WORKER_SOURCE = `const wt = require('node:worker_threads');\n(${workerMain.toString()})(wt.parentPort, require(wt.workerData.bcryptjs));\n`;
/** bcryptjs as `require` finds it (its CommonJS build), for the workers. */
const BCRYPTJS = createRequire(import.meta.url).resolve('bcryptjs');

interface Task extends CompareRequest {
  resolve(ok: boolean): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  task: Task | null;
  started: number;
}

export class BcryptPool {
  readonly threads: number;
  readonly maxQueue: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  /** Moving average of a compare's duration, for Retry-After. */
  private averageMs = 100;
  private closed = false;
  /** Compares finished (matched or not), for tests and diagnostics. */
  completed = 0;

  constructor(opts: BcryptPoolOptions = {}) {
    this.threads = Math.max(1, Math.floor(opts.threads ?? Math.min(4, Math.max(1, availableParallelism() - 1))));
    this.maxQueue = Math.max(0, Math.floor(opts.maxQueue ?? 32));
  }

  /** Compares waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Compares running now. */
  get running(): number {
    return this.slots.filter((s) => s.task !== null).length;
  }

  /** bcrypt's compare in a worker; rejects with HashQueueFullError when the queue is full. */
  compare(password: string, hash: string): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('the bcrypt pool is closed'));
    const slot = this.freeSlot();
    if (slot === null && this.queue.length >= this.maxQueue) return Promise.reject(new HashQueueFullError(this.estimateWaitMs()));
    return new Promise<boolean>((resolve, reject) => {
      const task: Task = { password, hash, resolve, reject };
      if (slot !== null) this.run(slot, task);
      else this.queue.push(task);
    });
  }

  /** Stops the workers; waiting and running compares reject. */
  async close(): Promise<void> {
    this.closed = true;
    const err = new Error('the bcrypt pool is closed');
    for (const task of this.queue.splice(0)) task.reject(err);
    await Promise.all(
      this.slots.splice(0).map(async (s) => {
        s.task?.reject(err);
        s.task = null;
        await s.worker.terminate();
      }),
    );
  }

  /** How long until a new compare would likely get a worker. */
  private estimateWaitMs(): number {
    return Math.ceil(((this.queue.length + this.threads) * this.averageMs) / this.threads);
  }

  /** An idle worker, or a new one while there are fewer than `threads`; null when all are busy. */
  private freeSlot(): Slot | null {
    const idle = this.slots.find((s) => s.task === null);
    if (idle) return idle;
    return this.slots.length < this.threads ? this.spawn() : null;
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptjs: BCRYPTJS }, execArgv: [] });
    const slot: Slot = { worker, task: null, started: 0 };
    worker.unref();
    worker.on('message', (reply: CompareReply) => {
      const task = slot.task;
      if (task === null) return;
      slot.task = null;
      worker.unref();
      this.completed++;
      this.averageMs = this.averageMs * 0.8 + (performance.now() - slot.started) * 0.2;
      if ('ok' in reply) task.resolve(reply.ok);
      else task.reject(new Error(`bcrypt compare failed: ${reply.error}`));
      this.next(slot);
    });
    const lost = (why: string): void => {
      const i = this.slots.indexOf(slot);
      if (i === -1) return;
      this.slots.splice(i, 1);
      slot.task?.reject(new Error(`the bcrypt worker ${why}`));
      slot.task = null;
      // What waits goes to a new worker in its place.
      if (this.closed || this.queue.length === 0) return;
      const free = this.freeSlot();
      if (free !== null) this.next(free);
    };
    worker.on('error', (err) => {
      lost(`failed: ${err.message}`);
      void worker.terminate();
    });
    worker.on('exit', (code) => lost(`exited (${code})`));
    this.slots.push(slot);
    return slot;
  }

  private run(slot: Slot, task: Task): void {
    slot.task = task;
    slot.started = performance.now();
    slot.worker.ref();
    slot.worker.postMessage({ password: task.password, hash: task.hash } satisfies CompareRequest);
  }

  private next(slot: Slot): void {
    const task = this.queue.shift();
    if (task) this.run(slot, task);
  }
}
