/**
 * Cluster coordination behind one interface (docs/ARCHITECTURE.md, section 3.6): what processes
 * sharing one store (cluster mode), or one node group (the node tier), agree on. The rest of the
 * code receives a `ClusterCoordinator` and asks it; it never sees how the coordinator stores things.
 *
 *   - leases: who does a piece of work (download a digest, evict, append to an upload), renewed in
 *     the background while held, taken over once lapsed;
 *   - the shared index: the store's size and recency, fed by every replica, read by the evictor
 *     (the policy is lib/cluster/shared-index.ts; the records are the coordinator's);
 *   - the invalidation bus: a tag moved on one replica, told to the others;
 *   - the holder directory: which node instance holds which digest (the node tier);
 *   - shared values: tag freshness and upstream health (lib/metadata/), the same on every replica.
 *
 * Implementations: lib/cluster/in-process.ts (a single process: what runs without a configured
 * coordinator, and what unit tests use) and lib/cluster/redis/ (Redis). They are registered by
 * name in lib/cluster/coordinators.ts; every implementation runs the contract suite
 * test/cluster/coordinator-contract.ts.
 *
 * Nothing a coordinator returns is trusted beyond what it says it is (docs/ARCHITECTURE.md rule 10,
 * SECURITY.md "Other stevedore processes, and Redis"): whoever can write to it can put anything
 * there. Lease records and directory members are parsed and checked by their callers
 * (cache/remote-blob.ts, peers.ts with peer-networks.ts); the bus delivers only well-formed
 * invalidations and warm-mark notices (`parseBusMessage`); index records are digests the evictor parses before use, and a
 * pinned file is never evicted whatever they say (`BlobStore.evictChosen`).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { SharedValues } from '../metadata/shared-values.js';

export type { SharedValues } from '../metadata/shared-values.js';

export interface LeaseRecord {
  token: string;
  /** What the holder published about its work (JSON, the caller's format). */
  value: string;
}

export interface Lease {
  readonly key: string;
  readonly token: string;
  /** Aborted when the lease was taken by someone else or could not be renewed in time. */
  readonly lost: AbortSignal;
  /** Replaces what the holder publishes; false when the lease is no longer ours. */
  publish(value: string): Promise<boolean>;
  /** Gives the lease up (only if still ours). Stops renewing. */
  release(): Promise<void>;
}

/**
 * Leases, renewed in the background at a third of their TTL while held; a holder that cannot renew
 * its lease (taken over after a pause, or the coordinator gone for longer than the TTL) is told
 * through `lost`, and can neither extend nor delete its successor's.
 */
export interface Leases {
  /** True when other processes coordinate through this: work may be done elsewhere. */
  readonly shared: boolean;
  /** Whether leases can be taken now (the coordinator reachable). */
  available(): boolean;
  /**
   * Takes the lease for `key` if nobody holds it. Null: someone does. Throws when the coordinator
   * cannot be reached (the caller falls back to working alone), at once (no queue).
   */
  acquire(key: string, ttlMs: number, value?: string): Promise<Lease | null>;
  /** The current holder's record, or null when nobody holds the lease. Throws when unreachable. */
  read(key: string): Promise<LeaseRecord | null>;
  /** A short-lived note for the others (why a download failed). Throws when unreachable. */
  setNote(key: string, value: string, ttlMs: number): Promise<void>;
  getNote(key: string): Promise<string | null>;
}


/** One digest's record in the shared index, least recently used first. */
export interface IndexUse {
  digest: string;
  /** When any replica last served it (epoch ms). */
  usedAt: number;
}

/**
 * The records of the shared store index (lib/cluster/shared-index.ts holds the policy): for every
 * cached (unpinned) stored digest its size, counted once in a total however many replicas report
 * it; when it was last served; and what was evicted lately (replicas drop it from their index).
 * Every call throws when the coordinator cannot be reached.
 */
export interface IndexRecords {
  /**
   * One replica's batch: `added` counted (a digest already counted is not counted again) and its
   * recency raised to `at`; `forgotten` un-counted with its recency; `used` raised to `at` (never
   * lowered), whether counted or not.
   */
  update(batch: { added: ReadonlyMap<string, number>; forgotten: ReadonlySet<string>; used: readonly string[]; at: number }): Promise<void>;
  /** Bytes counted. */
  total(): Promise<number>;
  /** The `n` least recently used digests (counted or stray). */
  leastRecent(n: number): Promise<IndexUse[]>;
  /** Un-counts one digest and drops its recency; its size, or null when it was not counted. */
  forget(digest: string): Promise<number | null>;
  /** `digest` was evicted at `at` (announced to the replicas). */
  evicted(digest: string, at: number): Promise<void>;
  /** Digests evicted at `since` or later. */
  evictedSince(since: number): Promise<string[]>;
  /** Forgets evictions before `at`. */
  dropEvictedBefore(at: number): Promise<void>;
  /**
   * Makes the records match a listing of the store: a digest not counted is counted with its size
   * and, unless it has one, the recency `mtime`; a counted digest not listed is dropped; the total
   * becomes the listing's sum.
   */
  reconcile(listed: ReadonlyMap<string, { size: number; mtime: number }>): Promise<{ added: number; removed: number }>;
}

/** A push moved a tag of an upstream's namespace on replica `from`: the others forget their answer. */
export interface TagMoved {
  from: string;
  upstream: string;
  name: string;
  tag: string;
}

/**
 * A warm mark `id` was recorded in a node group's scope (pre-heat, cluster/warm-marks.ts): the
 * node instances read the marks now rather than at their next look. It carries no mark: the
 * records are read (and parsed) from the scope.
 */
export interface WarmMarked {
  kind: 'warm-mark';
  from: string;
  id: string;
}

/** What goes on the bus: a tag moved (cluster mode), or a warm mark recorded (the node tier). */
export type BusMessage = TagMoved | WarmMarked;

export function isTagMoved(m: BusMessage): m is TagMoved {
  return !('kind' in m);
}

/**
 * Tells every process of the scope what changed (best effort: a message published while one is
 * cut off is lost to it; a tag then lives out its TTL there, a warm mark waits for the nodes'
 * next look at the records).
 */
export interface InvalidationBus {
  /** Sends to every subscriber of the scope (this process's too); false when it could not be sent. */
  publish(m: BusMessage): Promise<boolean>;
  /**
   * Delivers every well-formed message published in the scope, by any process, to `fn`; anything
   * else on the channel is dropped. Resolves once subscribed, or after a short wait when the
   * coordinator does not answer (the subscription then completes when it does).
   */
  subscribe(fn: (m: BusMessage) => void): Promise<void>;
}

/** The most members `HolderDirectory.holders` returns (a node group larger than this is not a deployment seen). */
export const MAX_HOLDERS = 10_000;

/** The node tier's directory: which instance holds which digest (peers.ts). */
export interface HolderDirectory {
  /**
   * `member` holds each of `digests` until `until` (epoch ms). A digest's record that nobody
   * announces again disappears `keepMs` after the last announcement. Does nothing while the
   * coordinator is unreachable.
   */
  announce(digests: readonly string[], member: string, until: number, keepMs: number): Promise<void>;
  /** `member` no longer holds these. Does nothing while the coordinator is unreachable. */
  withdraw(digests: readonly string[], member: string): Promise<void>;
  /**
   * Members whose announcement for `digest` runs until `now` or later, at most `MAX_HOLDERS` of
   * them (a record anyone who can write to Redis may have filled: what is read is bounded).
   * Throws when unreachable.
   */
  holders(digest: string, now: number): Promise<string[]>;
}

/** What processes sharing one namespace (a store's replicas, a node group) coordinate with. */
export interface CoordinationScope {
  readonly leases: Leases;
  readonly index: IndexRecords;
  readonly bus: InvalidationBus;
  readonly directory: HolderDirectory;
}

export interface ClusterCoordinator {
  /** Its registered name ('in-process' for a single process's). */
  readonly name: string;
  /** Where it is, for logs (no secret in it). */
  readonly target: string;
  /** True when other processes coordinate through it (cluster mode, the node tier's directory). */
  readonly shared: boolean;
  /** Whether it answers now (Redis reachable). */
  available(): boolean;
  /** Called with every change of `available()`. */
  onAvailability(fn: (up: boolean) => void): void;
  /** Values shared by every process on this coordinator. */
  readonly values: SharedValues;
  /**
   * Leases, index records, bus and directory under one namespace (`stevedore:<storeId>:` for a
   * store's replicas, `stevedore:peers:<group>:` for a node group). Two calls with one namespace
   * see the same state.
   */
  scope(namespace: string): CoordinationScope;
  close(): Promise<void>;
}

/** One finding of `stevedore doctor` about a coordinator (no secret in it). */
export interface CoordinatorFinding {
  level: 'ok' | 'warn' | 'info' | 'fail';
  /** Where it is (a URL without its password). */
  target: string;
  detail: string;
  fix: string | null;
}

/** How a coordinator is chosen, opened and checked (registered by name in coordinators.ts). */
export interface CoordinatorFactory {
  /** Whether the configuration asks for this coordinator (Redis: metadata.redis is set). */
  configured(config: Config): boolean;
  /**
   * Connects. A coordinator that does not answer yet is returned all the same (`available()`
   * false: the process serves alone until it answers); credentials or a certificate it refuses
   * throw a ConfigError naming the key to fix.
   */
  open(config: Config, log: Logger): Promise<ClusterCoordinator>;
  /** `stevedore doctor`: connects as `serve` would and says what to fix. */
  diagnose(config: Config): Promise<CoordinatorFinding[]>;
}

/** A bus message, or null when it is not a well-formed one (anything may be on a channel). */
export function parseBusMessage(message: string): BusMessage | null {
  let m: { kind?: unknown; from?: unknown; id?: unknown };
  try {
    m = JSON.parse(message) as typeof m;
  } catch {
    return null;
  }
  if (m === null || typeof m !== 'object') return null;
  if (m.kind === undefined) return parseTagMoved(message);
  if (m.kind !== 'warm-mark' || typeof m.from !== 'string' || typeof m.id !== 'string' || !/^[0-9a-f]{16,64}$/.test(m.id)) return null;
  return { kind: 'warm-mark', from: m.from.slice(0, 500), id: m.id };
}

/** The same message with nothing but its own fields (what is sent). */
export function busMessageFields(m: BusMessage): BusMessage {
  return isTagMoved(m) ? { from: m.from, upstream: m.upstream, name: m.name, tag: m.tag } : { kind: 'warm-mark', from: m.from, id: m.id };
}

/** A bus message, or null when it is not a well-formed invalidation (anything may be on a channel). */
export function parseTagMoved(message: string): TagMoved | null {
  let m: { from?: unknown; upstream?: unknown; name?: unknown; tag?: unknown };
  try {
    m = JSON.parse(message) as typeof m;
  } catch {
    return null;
  }
  if (m === null || typeof m !== 'object') return null;
  if (typeof m.from !== 'string' || typeof m.upstream !== 'string' || typeof m.name !== 'string' || typeof m.tag !== 'string') return null;
  return { from: m.from, upstream: m.upstream, name: m.name, tag: m.tag };
}

export function newLeaseToken(): string {
  return randomBytes(12).toString('hex');
}

/** What an implementation does for a held lease; each acts only while `token` holds `key`. */
export interface LeaseOps {
  renew(key: string, token: string, ttlMs: number): Promise<boolean>;
  publish(key: string, token: string, value: string): Promise<boolean>;
  release(key: string, token: string): Promise<void>;
}

/** Background renewal shared by every implementation. */
export class HeldLease implements Lease {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private lastRenewed = Date.now();
  private released = false;

  constructor(
    readonly key: string,
    readonly token: string,
    private readonly ttlMs: number,
    private readonly ops: LeaseOps,
  ) {
    this.timer = setInterval(() => void this.renew(), Math.max(50, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get lost(): AbortSignal {
    return this.controller.signal;
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    let ours: boolean;
    try {
      ours = await this.ops.renew(this.key, this.token, this.ttlMs);
    } catch {
      // Unreachable: the lease may still be ours. Given up only once it must have expired.
      if (Date.now() - this.lastRenewed > this.ttlMs) this.lose(new Error(`lease ${this.key} could not be renewed for ${this.ttlMs} ms`));
      return;
    }
    if (ours) this.lastRenewed = Date.now();
    else this.lose(new Error(`lease ${this.key} was taken over`));
  }

  private lose(reason: Error): void {
    clearInterval(this.timer);
    this.released = true;
    this.controller.abort(reason);
  }

  async publish(value: string): Promise<boolean> {
    if (this.released) return false;
    return this.ops.publish(this.key, this.token, value);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.ops.release(this.key, this.token).catch(() => undefined);
  }
}
