/**
 * The primary of `serve` with `server.workers` above 1 (docs/ARCHITECTURE.md, "Workers"): a light
 * supervisor that never loads the app (no store, no upstream clients, no dashboard). It forks the
 * workers (node:cluster: each runs `serve` as a single process would, on the port the primary
 * holds, connections handed out round-robin), keeps the coordination state they share
 * (lib/cluster/ipc/host.ts), restarts a worker that dies (at once after a long life, with a
 * backoff growing to 30 s in a crash loop), aggregates their metrics for /metrics, and on SIGTERM
 * or SIGINT has every worker drain (each within server.shutdownGrace) and exits once all have.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { Config } from '../config/config.js';
import { IpcCoordinatorHost } from '../cluster/ipc/host.js';
import { IPC_TAG, isIpcMessage, type IpcChannel, type IpcCollect } from '../cluster/ipc/protocol.js';
import { WORKER_SLOT_ENV, WORKERS_ENV } from '../cluster/ipc/coordinator.js';

/** A worker that lived this long before dying is restarted at once (not a crash loop). */
const STABLE_MS = 30_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** After the grace period, how long workers get to hand over and close before they are killed. */
const STOP_MARGIN_MS = 5_000;
/** A worker that has not given its part of a collection (the dashboard) in this long is left out. */
const COLLECT_TIMEOUT_MS = 2_000;

export interface Supervisor {
  /** Resolves when every worker has exited after a stop, with the exit code for the process (2: a worker found the configuration wrong). */
  stopped: Promise<number>;
  stop(signal: string): void;
  /** Sends `signal` to every running worker (SIGHUP: each re-reads its signature policies). */
  signal(signal: NodeJS.Signals): void;
}

/**
 * `env`: added to each worker's environment (the CLI passes node-flags.ts's NODE_ENV variables the
 * supervisor's own environment does not set: a worker is a new process, started as the bin is).
 */
export function superviseWorkers(config: Config, workers: number, log: Logger, env: Readonly<Record<string, string>> = {}): Supervisor {
  const host = new IpcCoordinatorHost();
  const aggregator = new AggregatorRegistry();
  const own = new Registry();
  const restarts = new Counter({ name: 'stevedore_worker_restarts_total', help: 'Workers restarted by the supervisor after they died, by worker slot', labelNames: ['worker'], registers: [own] });
  const alive = new Set<Worker>();
  new Gauge({
    name: 'stevedore_workers',
    help: 'Worker processes running (server.workers)',
    registers: [own],
    collect() {
      this.set(alive.size);
    },
  });
  // The secret the workers sign their requests to each other's peer endpoint with (a backend whose
  // downloads are not shared files: lib/server/app.ts loopbackPeerEndpoint). New at every start.
  const peerSecret = randomBytes(32).toString('base64url');
  host.handle('workers.peerSecret', async () => peerSecret);
  host.handle('metrics.host', async () => `${await aggregator.clusterMetrics()}\n${await own.metrics()}`);
  // The dashboard's per-process figures of every worker, for the worker answering to merge.
  let collectId = 0;
  host.handle('collect', async (args) => {
    const what = typeof args[0] === 'string' ? args[0] : '';
    const id = collectId++;
    const asked = [...alive].filter((w) => w.isConnected());
    const parts = await Promise.all(
      asked.map(
        (w) =>
          new Promise<unknown>((resolve) => {
            const timer = setTimeout(() => done(null), COLLECT_TIMEOUT_MS);
            const onMessage = (m: unknown): void => {
              if (isIpcMessage(m) && m.kind === 'collected' && m.id === id) done(m.value);
            };
            const done = (v: unknown): void => {
              clearTimeout(timer);
              w.off('message', onMessage);
              w.off('exit', gone);
              resolve(v);
            };
            const gone = (): void => done(null);
            w.on('message', onMessage);
            w.once('exit', gone);
            const ask: IpcCollect = { stevedoreIpc: IPC_TAG, kind: 'collect', id, what };
            w.send(ask);
          }),
      ),
    );
    return parts.filter((p) => p !== null);
  });

  let stopping = false;
  let exitCode = 0;
  let resolveStopped!: (code: number) => void;
  const stopped = new Promise<number>((r) => (resolveStopped = r));
  const backoff = new Map<number, number>();

  const fork = (slot: number): void => {
    const started = Date.now();
    const worker = cluster.fork({ ...env, [WORKERS_ENV]: String(workers), [WORKER_SLOT_ENV]: String(slot) });
    alive.add(worker);
    log.info({ worker: slot, pid: worker.process.pid }, 'supervisor: worker started');
    const channel: IpcChannel = {
      send: (m) => worker.send(m as never),
      on: (e, fn) => worker.on(e, fn),
      off: (e, fn) => worker.off(e, fn),
      get connected() {
        return worker.isConnected();
      },
    };
    const { detach } = host.attach(channel);
    let listened = false;
    worker.once('listening', () => (listened = true));
    worker.once('exit', (code, signal) => {
      alive.delete(worker);
      // Its leases are free now: another worker takes its downloads over.
      detach();
      if (!stopping && !listened && code === 2) {
        // The configuration names a file or service the worker refused (it said which on stderr):
        // restarting cannot help; the process exits 2 as a single one would.
        exitCode = 2;
        stop('configuration');
      }
      if (stopping) {
        if (alive.size === 0) resolveStopped(exitCode);
        return;
      }
      const lived = Date.now() - started;
      const delay = lived >= STABLE_MS ? 0 : Math.min(BACKOFF_MAX_MS, (backoff.get(slot) ?? BACKOFF_FIRST_MS / 2) * 2);
      backoff.set(slot, lived >= STABLE_MS ? BACKOFF_FIRST_MS / 2 : delay);
      restarts.inc({ worker: String(slot) });
      log.error({ worker: slot, pid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay }, 'worker exited; restarting it');
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay);
    });
  };

  log.info({ workers, pid: process.pid }, 'supervisor: starting workers');
  for (let slot = 1; slot <= workers; slot++) fork(slot);

  function stop(signal: string): void {
    if (stopping) return;
    stopping = true;
    log.info({ signal, workers: alive.size }, 'supervisor: draining every worker');
    if (alive.size === 0) resolveStopped(exitCode);
    for (const w of alive) w.process.kill('SIGTERM');
    // A worker that has not exited after its grace period and a margin is killed.
    setTimeout(() => {
      for (const w of alive) {
        log.warn({ pid: w.process.pid }, 'supervisor: worker did not exit within the grace period; killing it');
        w.process.kill('SIGKILL');
      }
    }, config.server.shutdownGrace + STOP_MARGIN_MS).unref();
  }
  void stopped.then(() => host.close());
  const signal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    log.info({ signal: sig, workers: alive.size }, 'supervisor: passing the signal to every worker');
    for (const w of alive) w.process.kill(sig);
  };
  return { stopped, stop, signal };
}
