/**
 * The coordinator of a worker (config `server.workers` above 1, no Redis): the workers of one host
 * are the replicas of one store, and their coordination state lives in the primary
 * (host.ts, lib/server/supervisor.ts); every call is a request and its answer over the IPC channel
 * node:cluster opened between them. `shared`: the other workers take part.
 */
import { randomBytes } from 'node:crypto';
import cluster from 'node:cluster';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import {
  HeldLease,
  parseBusMessage,
  type ClusterCoordinator,
  type CoordinationScope,
  type CoordinatorFactory,
  type CoordinatorFinding,
  type HolderDirectory,
  type IndexRecords,
  type IndexUse,
  type InvalidationBus,
  type Lease,
  type LeaseOps,
  type LeaseRecord,
  type Leases,
  type SharedValues,
  type BusMessage,
} from '../coordinator.js';
import { IPC_TAG, isIpcMessage, type IpcChannel, type IpcRequest } from './protocol.js';

/** A call the primary has not answered in this long fails (it is busy or gone). */
const CALL_TIMEOUT_MS = 10_000;

/** The environment variable the supervisor sets in the workers it forks (how many there are). */
export const WORKERS_ENV = 'STEVEDORE_WORKER_COUNT';
/** The environment variable telling a worker its slot (1..N, kept by its replacement): the `worker` label of its metrics. */
export const WORKER_SLOT_ENV = 'STEVEDORE_WORKER_SLOT';

/** This process's worker slot when the supervisor forked it, else null (a single process). */
export function workerSlot(): string | null {
  return cluster.isWorker ? (process.env[WORKER_SLOT_ENV] ?? null) : null;
}

class IpcLink {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly client = randomBytes(6).toString('hex');
  private readonly subscribers = new Map<string, Set<(m: BusMessage) => void>>();
  private readonly onMessage = (m: unknown): void => {
    if (!isIpcMessage(m) || (m.kind !== 'res' && m.kind !== 'bus') || m.client !== this.client) return;
    if (m.kind === 'res') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.ok) p.resolve(m.value ?? null);
      else p.reject(new Error(`coordinator (primary): ${m.error ?? 'failed'}`));
    } else if (m.kind === 'bus') {
      const parsed = parseBusMessage(JSON.stringify(m.message));
      if (parsed) for (const fn of this.subscribers.get(m.ns) ?? []) fn({ ...parsed });
      // Handled (or refused): the publisher is answered once every subscriber said so.
      if (typeof m.ack === 'number' && this.channel.connected) {
        try {
          this.channel.send({ stevedoreIpc: IPC_TAG, kind: 'bus-ack', id: m.ack });
        } catch {
          // the primary went away
        }
      }
    }
  };

  constructor(readonly channel: IpcChannel) {
    channel.on('message', this.onMessage);
  }

  call<T>(op: string, ns: string | null, args: unknown[]): Promise<T> {
    if (!this.channel.connected) return Promise.reject(new Error('coordinator (primary) unreachable: the IPC channel is closed'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`coordinator (primary) did not answer ${op} within ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      timer.unref();
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      const req: IpcRequest = { stevedoreIpc: IPC_TAG, kind: 'req', id, client: this.client, op, ns, args };
      try {
        this.channel.send(req);
      } catch (err) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  subscribe(ns: string, fn: (m: BusMessage) => void): void {
    let s = this.subscribers.get(ns);
    if (!s) this.subscribers.set(ns, (s = new Set()));
    s.add(fn);
  }

  close(): void {
    this.channel.off('message', this.onMessage);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('coordinator closed'));
    }
    this.pending.clear();
  }
}

class IpcLeases implements Leases {
  readonly shared = true;
  private readonly ops: LeaseOps;

  constructor(private readonly link: IpcLink, private readonly ns: string) {
    this.ops = {
      renew: (key, token, ttlMs) => link.call<boolean>('lease.renew', ns, [key, token, ttlMs]),
      publish: (key, token, value) => link.call<boolean>('lease.publish', ns, [key, token, value]),
      release: async (key, token) => {
        await link.call('lease.release', ns, [key, token]);
      },
    };
  }

  available(): boolean {
    return this.link.channel.connected;
  }

  async acquire(key: string, ttlMs: number, value = ''): Promise<Lease | null> {
    const token = await this.link.call<string | null>('lease.take', this.ns, [key, ttlMs, value]);
    return typeof token === 'string' ? new HeldLease(key, token, ttlMs, this.ops) : null;
  }

  read(key: string): Promise<LeaseRecord | null> {
    return this.link.call('lease.read', this.ns, [key]);
  }

  async setNote(key: string, value: string, ttlMs: number): Promise<void> {
    await this.link.call('lease.setNote', this.ns, [key, value, ttlMs]);
  }

  getNote(key: string): Promise<string | null> {
    return this.link.call('lease.getNote', this.ns, [key]);
  }
}

class IpcIndexRecords implements IndexRecords {
  constructor(private readonly link: IpcLink, private readonly ns: string) {}

  async update(batch: { added: ReadonlyMap<string, number>; forgotten: ReadonlySet<string>; used: readonly string[]; at: number }): Promise<void> {
    await this.link.call('index.update', this.ns, [{ added: [...batch.added], forgotten: [...batch.forgotten], used: batch.used, at: batch.at }]);
  }

  total(): Promise<number> {
    return this.link.call('index.total', this.ns, []);
  }

  leastRecent(n: number): Promise<IndexUse[]> {
    return this.link.call('index.leastRecent', this.ns, [n]);
  }

  forget(digest: string): Promise<number | null> {
    return this.link.call('index.forget', this.ns, [digest]);
  }

  async evicted(digest: string, at: number): Promise<void> {
    await this.link.call('index.evicted', this.ns, [digest, at]);
  }

  evictedSince(since: number): Promise<string[]> {
    return this.link.call('index.evictedSince', this.ns, [since]);
  }

  async dropEvictedBefore(at: number): Promise<void> {
    await this.link.call('index.dropEvictedBefore', this.ns, [at]);
  }

  reconcile(listed: ReadonlyMap<string, { size: number; mtime: number }>): Promise<{ added: number; removed: number }> {
    return this.link.call('index.reconcile', this.ns, [[...listed].map(([d, { size, mtime }]) => [d, size, mtime])]);
  }
}

class IpcBus implements InvalidationBus {
  constructor(private readonly link: IpcLink, private readonly ns: string) {}

  async publish(m: BusMessage): Promise<boolean> {
    try {
      return await this.link.call<boolean>('bus.publish', this.ns, [m]);
    } catch {
      return false;
    }
  }

  async subscribe(fn: (m: BusMessage) => void): Promise<void> {
    this.link.subscribe(this.ns, fn);
    await this.link.call('bus.subscribe', this.ns, []);
  }
}

class IpcDirectory implements HolderDirectory {
  constructor(private readonly link: IpcLink, private readonly ns: string) {}

  async announce(digests: readonly string[], member: string, until: number, keepMs: number): Promise<void> {
    await this.link.call('dir.announce', this.ns, [digests, member, until, keepMs]).catch(() => undefined);
  }

  async withdraw(digests: readonly string[], member: string): Promise<void> {
    await this.link.call('dir.withdraw', this.ns, [digests, member]).catch(() => undefined);
  }

  holders(digest: string, now: number): Promise<string[]> {
    return this.link.call('dir.holders', this.ns, [digest, now]);
  }
}

class IpcValues implements SharedValues {
  constructor(private readonly link: IpcLink) {}

  get<T>(key: string): Promise<T | null> {
    return this.link.call<T | null>('values.get', null, [key]);
  }

  async set<T>(key: string, value: T, ttlMs: number): Promise<void> {
    await this.link.call('values.set', null, [key, value, ttlMs]);
  }

  async delete(key: string): Promise<void> {
    await this.link.call('values.delete', null, [key]);
  }

  async clear(): Promise<void> {
    await this.link.call('values.clear', null, []);
  }

  async close(): Promise<void> {
    // the primary keeps them
  }
}

export class IpcCoordinator implements ClusterCoordinator {
  readonly name = 'ipc';
  readonly target = 'the supervisor process (node:cluster IPC)';
  readonly shared = true;
  readonly values: SharedValues;
  private readonly link: IpcLink;
  private readonly scopes = new Map<string, CoordinationScope>();

  constructor(channel: IpcChannel) {
    this.link = new IpcLink(channel);
    this.values = new IpcValues(this.link);
  }

  available(): boolean {
    return this.link.channel.connected;
  }

  onAvailability(): void {
    // A worker whose primary is gone exits (node:cluster): there is no coming back to tell.
  }

  scope(namespace: string): CoordinationScope {
    let s = this.scopes.get(namespace);
    if (!s) {
      s = {
        leases: new IpcLeases(this.link, namespace),
        index: new IpcIndexRecords(this.link, namespace),
        bus: new IpcBus(this.link, namespace),
        directory: new IpcDirectory(this.link, namespace),
      };
      this.scopes.set(namespace, s);
    }
    return s;
  }

  async close(): Promise<void> {
    this.link.close();
  }
}

let toPrimary: IpcLink | null = null;

/** A call to the supervisor (from a worker): answered by a handler it registered (IpcCoordinatorHost.handle). */
export function callPrimary<T>(op: string, args: unknown[] = []): Promise<T> {
  toPrimary ??= new IpcLink(process as unknown as IpcChannel);
  return toPrimary.call<T>(op, null, args);
}

/**
 * Answers the supervisor's collections named `what` (it asks every worker and merges: the
 * dashboard's per-process figures) with `fn`'s value.
 */
export function answerCollections(what: string, fn: () => Promise<unknown>): void {
  process.on('message', (m: unknown) => {
    if (!isIpcMessage(m) || m.kind !== 'collect' || m.what !== what) return;
    const reply = (value: unknown): void => {
      if (process.connected) process.send!({ stevedoreIpc: IPC_TAG, kind: 'collected', id: m.id, value });
    };
    fn().then(reply, () => reply(null));
  });
}

/** Whether this process is a worker forked by the supervisor with others beside it. */
function isWorkerOfMany(): boolean {
  return cluster.isWorker && Number(process.env[WORKERS_ENV] ?? '1') > 1 && typeof process.send === 'function';
}

/**
 * Chosen in a worker of several when no other coordinator (Redis) is configured; never in node
 * mode (node.peers: the supervisor runs one worker there).
 */
export const ipcCoordinator: CoordinatorFactory = {
  configured: (config: Config) => config.metadata.redis === null && config.node.peers === null && isWorkerOfMany(),
  async open(_config: Config, _log: Logger): Promise<ClusterCoordinator> {
    return new IpcCoordinator(process as unknown as IpcChannel);
  },
  async diagnose(): Promise<CoordinatorFinding[]> {
    return [{ level: 'info', target: 'node:cluster IPC', detail: 'the workers of one host coordinate through their supervisor', fix: null }];
  },
};
