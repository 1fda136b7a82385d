/**
 * The state of the IPC coordinator, kept in the primary (lib/server/supervisor.ts): the in-process
 * coordinator's parts (lib/cluster/in-process.ts), answering the workers' calls over their IPC
 * channels. When a worker's channel closes (it exited, or was killed), the leases it held are
 * released at once: another worker takes its downloads over without waiting for their TTL.
 *
 * What arrives is checked for shape (a call with arguments of the wrong type is answered with an
 * error); what is stored is whatever the workers put there, and the workers check what they read
 * as they would from any coordinator (docs/ARCHITECTURE.md rule 10).
 */
import { parseBusMessage } from '../coordinator.js';
import { InProcessCoordinator, type InProcessLeases } from '../in-process.js';
import { IPC_TAG, isIpcMessage, type IpcBusDelivery, type IpcChannel, type IpcRequest, type IpcResponse } from './protocol.js';

/**
 * How long a publish waits for the subscribers' acknowledgements: a worker that is busy longer (or
 * stuck) does not hold the publisher's answer (a push) beyond this; it still handles the message.
 */
export const BUS_ACK_WAIT_MS = 750;

type Args = unknown[];

const str = (v: unknown): string => {
  if (typeof v !== 'string') throw new Error('expected a string');
  return v;
};
const num = (v: unknown): number => {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error('expected a number');
  return v;
};
const strs = (v: unknown): string[] => {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error('expected strings');
  return v as string[];
};

interface Attached {
  channel: IpcChannel;
  onMessage: (m: unknown) => void;
  /** Leases taken through this channel and not yet released: `ns\0key` → token. */
  leases: Map<string, { ns: string; key: string; token: string }>;
  /** Bus subscriptions: namespace → clients. */
  subscriptions: Map<string, Set<string>>;
  /** Bus deliveries sent through this channel and not yet acknowledged. */
  unacked: Set<number>;
}

export class IpcCoordinatorHost {
  private readonly state: InProcessCoordinator;
  private readonly channels = new Set<Attached>();
  private readonly handlers = new Map<string, (args: unknown[]) => Promise<unknown>>();
  /** Bus deliveries not yet acknowledged: delivery id → the publish waiting for it. */
  private readonly unacked = new Map<number, () => void>();
  private nextDelivery = 0;

  constructor(now: () => number = Date.now) {
    this.state = new InProcessCoordinator(now);
  }

  /** Serves the calls arriving on `channel` until `detach` (call it when the worker exits). */
  attach(channel: IpcChannel): { detach(): void } {
    const a: Attached = { channel, leases: new Map(), subscriptions: new Map(), unacked: new Set(), onMessage: () => undefined };
    a.onMessage = (m: unknown) => {
      if (!isIpcMessage(m)) return;
      if (m.kind === 'req') void this.answer(a, m);
      else if (m.kind === 'bus-ack' && typeof m.id === 'number' && a.unacked.delete(m.id)) this.unacked.get(m.id)?.();
    };
    channel.on('message', a.onMessage);
    this.channels.add(a);
    return { detach: () => this.detach(a) };
  }

  /** Answers calls named `op` (not the coordinator's own: the supervisor's, e.g. the host's metrics). */
  handle(op: string, fn: (args: unknown[]) => Promise<unknown>): void {
    this.handlers.set(op, fn);
  }

  /** Number of leases held through the attached channels (tests, metrics). */
  leasesHeld(): number {
    let n = 0;
    for (const a of this.channels) n += a.leases.size;
    return n;
  }

  private detach(a: Attached): void {
    if (!this.channels.delete(a)) return;
    a.channel.off('message', a.onMessage);
    // Its holder is gone: the leases are free now rather than after their TTL.
    for (const { ns, key, token } of a.leases.values()) void this.leases(ns).ops.release(key, token);
    a.leases.clear();
    // Nor will it acknowledge what it was sent.
    for (const id of a.unacked) this.unacked.get(id)?.();
    a.unacked.clear();
  }

  private leases(ns: string): InProcessLeases {
    return this.state.scope(ns).leases as InProcessLeases;
  }

  private async answer(a: Attached, m: IpcRequest): Promise<void> {
    let res: IpcResponse;
    try {
      const value = await this.call(a, m.op, m.ns, Array.isArray(m.args) ? m.args : [], m.client);
      res = { stevedoreIpc: IPC_TAG, kind: 'res', id: m.id, client: m.client, ok: true, value: value === undefined ? null : value };
    } catch (err) {
      res = { stevedoreIpc: IPC_TAG, kind: 'res', id: m.id, client: m.client, ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    if (a.channel.connected) {
      try {
        a.channel.send(res);
      } catch {
        // the worker went away meanwhile
      }
    }
  }

  private async call(a: Attached, op: string, nsArg: string | null, args: Args, client: string): Promise<unknown> {
    const extra = this.handlers.get(op);
    if (extra) return extra(args);
    const v = this.state.values;
    switch (op) {
      case 'values.get':
        return v.get(str(args[0]));
      case 'values.set':
        return v.set(str(args[0]), args[1], num(args[2]));
      case 'values.delete':
        return v.delete(str(args[0]));
      case 'values.clear':
        return v.clear();
    }
    const ns = str(nsArg);
    const scope = this.state.scope(ns);
    const leases = scope.leases as InProcessLeases;
    switch (op) {
      case 'lease.take': {
        const key = str(args[0]);
        const token = leases.take(key, num(args[1]), str(args[2]));
        if (token !== null) a.leases.set(`${ns}\0${key}`, { ns, key, token });
        return token;
      }
      case 'lease.renew':
        return leases.ops.renew(str(args[0]), str(args[1]), num(args[2]));
      case 'lease.publish':
        return leases.ops.publish(str(args[0]), str(args[1]), str(args[2]));
      case 'lease.release': {
        const [key, token] = [str(args[0]), str(args[1])];
        await leases.ops.release(key, token);
        if (a.leases.get(`${ns}\0${key}`)?.token === token) a.leases.delete(`${ns}\0${key}`);
        return null;
      }
      case 'lease.read':
        return leases.read(str(args[0]));
      case 'lease.setNote':
        return leases.setNote(str(args[0]), str(args[1]), num(args[2]));
      case 'lease.getNote':
        return leases.getNote(str(args[0]));
      case 'index.update': {
        const b = args[0] as { added?: unknown; forgotten?: unknown; used?: unknown; at?: unknown };
        if (typeof b !== 'object' || b === null || !Array.isArray(b.added)) throw new Error('expected a batch');
        const added = new Map<string, number>();
        for (const e of b.added as unknown[]) {
          if (!Array.isArray(e)) throw new Error('expected [digest, size]');
          added.set(str(e[0]), num(e[1]));
        }
        return scope.index.update({ added, forgotten: new Set(strs(b.forgotten)), used: strs(b.used), at: num(b.at) });
      }
      case 'index.total':
        return scope.index.total();
      case 'index.leastRecent':
        return scope.index.leastRecent(num(args[0]));
      case 'index.forget':
        return scope.index.forget(str(args[0]));
      case 'index.evicted':
        return scope.index.evicted(str(args[0]), num(args[1]));
      case 'index.evictedSince':
        return scope.index.evictedSince(num(args[0]));
      case 'index.dropEvictedBefore':
        return scope.index.dropEvictedBefore(num(args[0]));
      case 'index.reconcile': {
        if (!Array.isArray(args[0])) throw new Error('expected a listing');
        const listed = new Map<string, { size: number; mtime: number }>();
        for (const e of args[0] as unknown[]) {
          if (!Array.isArray(e)) throw new Error('expected [digest, size, mtime]');
          listed.set(str(e[0]), { size: num(e[1]), mtime: num(e[2]) });
        }
        return scope.index.reconcile(listed);
      }
      case 'bus.subscribe': {
        let s = a.subscriptions.get(ns);
        if (!s) a.subscriptions.set(ns, (s = new Set()));
        s.add(client);
        return null;
      }
      case 'bus.publish': {
        const message = parseBusMessage(JSON.stringify(args[0]));
        if (!message) throw new Error('not a bus message');
        await this.broadcast(ns, message);
        return true;
      }
      case 'dir.announce':
        return scope.directory.announce(strs(args[0]), str(args[1]), num(args[2]), num(args[3]));
      case 'dir.withdraw':
        return scope.directory.withdraw(strs(args[0]), str(args[1]));
      case 'dir.holders':
        return scope.directory.holders(str(args[0]), num(args[1]));
      default:
        throw new Error(`unknown call ${op}`);
    }
  }

  /** Delivers `message` to every subscriber of `ns`; resolves once each handled it (or BUS_ACK_WAIT_MS passed). */
  private async broadcast(ns: string, message: unknown): Promise<void> {
    const acks: Promise<void>[] = [];
    const ids: number[] = [];
    for (const a of this.channels) {
      const clients = a.subscriptions.get(ns);
      if (!clients || !a.channel.connected) continue;
      for (const client of clients) {
        const id = this.nextDelivery++;
        const m: IpcBusDelivery = { stevedoreIpc: IPC_TAG, kind: 'bus', client, ns, message, ack: id };
        try {
          a.channel.send(m);
        } catch {
          continue; // gone: its exit detaches it
        }
        ids.push(id);
        a.unacked.add(id);
        acks.push(new Promise<void>((resolve) => this.unacked.set(id, resolve)));
      }
    }
    if (!acks.length) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(acks), new Promise<void>((resolve) => (timer = setTimeout(resolve, BUS_ACK_WAIT_MS)))]);
    clearTimeout(timer);
    for (const id of ids) this.unacked.delete(id);
    for (const a of this.channels) for (const id of ids) a.unacked.delete(id);
  }

  async close(): Promise<void> {
    for (const a of [...this.channels]) this.detach(a);
    await this.state.close();
  }
}
