/**
 * Node mode's peers: the stevedore instances on the other nodes, as a source of blobs.
 *
 * The coordinator (Redis) is the directory (no DHT, no gossip), in the scope `stevedore:peers:<group>:`:
 *   - its holder directory (`has:<digest>` on Redis): the instances that hold the blob, each until
 *     its announcement expires. An instance announces what it stores when it stores it and again
 *     every ttl/3 while it holds it, and withdraws it when it evicts or deletes it; an instance that
 *     died drops out when its announcements expire.
 *   - the lease `fetching:<digest>`: held by the one instance fetching the blob from the
 *     sources by URL (the central cache, the registry). The others stream it from that instance
 *     while it downloads: a rollout costs the central cache about one copy of each layer, not one
 *     per node.
 *
 * A peer is trusted by digest only. Its bytes are verified before a client sees any of them
 * (download.ts, `untrusted`); a peer that is gone, stalls, or sends bytes that do not verify is
 * marked bad here (not asked for `badFor`) and the download continues from the next peer or
 * source, with Range. Peers serve each other on an endpoint of their own, only to requests signed
 * with the shared secret (peer-auth.ts: the secret itself never goes on the wire, since the
 * addresses come from Redis), only on addresses inside `node.peers.allowedNetworks`
 * (peer-networks.ts), and only what they hold (never fetching for a peer). A directory member or
 * lease record is an address from the coordinator, not trusted: asked only inside those networks.
 */
import type { Dispatcher } from 'undici';
import { LazyAgent } from '../util/lazy-undici.js';
import { activeTracer, tracedRequest } from '../util/tracing.js';
import type { Logger } from 'pino';
import type { ClusterCoordinator, HolderDirectory, Lease, Leases } from './coordinator.js';
import type { PeerBody, PeerSource } from './peer-endpoint.js';
import type { StoreObserver } from '../storage/blob-store.js';
import { PEER_BLOB_PATH, type PeerEndpoint } from './peer-endpoint.js';
import type { PeerRequestAuth } from './peer-auth.js';
import type { PeerNetworks } from './peer-networks.js';
import type { ProgressRule } from '../util/progress.js';
import type { Timeouts } from '../config/config.js';
import { discard, header } from '../util/http-body.js';

/** The fetching lease lapses this long after its holder last renewed it. */
const FETCH_LEASE_MS = 10_000;

export interface PeersOptions {
  /** This instance's URL as the others reach it. */
  self: string;
  /** Signs this instance's requests and checks the others' (node.peers.token). */
  auth: PeerRequestAuth;
  /** Where peers may be (node.peers.allowedNetworks). */
  networks: PeerNetworks;
  group: string;
  ttlMs: number;
  badForMs: number;
  timeouts: Timeouts;
  /** Whether this instance is downloading the digest now (its fetching lease is kept while it is). */
  downloading(digest: string): boolean;
  /** Every digest this instance stores (re-announced every ttl/3). */
  stored(): Iterable<string>;
  now?: () => number;
}

export type PeerEvent = 'fetched' | 'not_found' | 'failed' | 'marked_bad' | 'served';

/** The node tier's peers: the directory of who holds what, and transfers between node instances. */
export class NodePeers implements PeerSource, StoreObserver, PeerEndpoint {
  private readonly leases: Leases;
  private readonly directory: HolderDirectory;
  private readonly agent: LazyAgent;
  /** Peers found failing, until when they are not asked. */
  private readonly bad = new Map<string, number>();
  /** Fetching leases this instance holds, by digest. */
  private readonly fetching = new Map<string, Lease>();
  private readonly timer: NodeJS.Timeout;
  private readonly leaseTimer: NodeJS.Timeout;
  private readonly now: () => number;
  private refreshing = false;
  /** Counted for metrics. */
  readonly counts = new Map<PeerEvent, number>();
  readonly stall: ProgressRule;

  constructor(
    private readonly coordinator: ClusterCoordinator,
    private readonly opts: PeersOptions,
    private readonly log: Logger,
  ) {
    const scope = coordinator.scope(`stevedore:peers:${opts.group}:`);
    this.leases = scope.leases;
    this.directory = scope.directory;
    this.now = opts.now ?? (() => Date.now());
    const t = opts.timeouts;
    this.stall = { windowMs: t.stall, minBytes: t.minProgress };
    this.agent = new LazyAgent({ connect: { timeout: t.connect, lookup: opts.networks.lookup }, headersTimeout: t.firstByte, bodyTimeout: t.idle, keepAliveTimeout: 30_000, connections: 32 });
    this.timer = setInterval(() => void this.renewAnnouncements(), Math.max(1_000, Math.floor(opts.ttlMs / 3)));
    this.timer.unref();
    // A fetching lease is given up as soon as its download ended without storing (it failed):
    // nobody waits on a node that has nothing to stream.
    this.leaseTimer = setInterval(() => void this.dropIdleLeases(), 1_000);
    this.leaseTimer.unref();
  }

  private count(e: PeerEvent): void {
    this.counts.set(e, (this.counts.get(e) ?? 0) + 1);
  }

  /** Why a request to the peer endpoint is refused (not signed with node.peers.token for this instance), or null. */
  refusal(method: string, path: string, authorization: string | undefined): string | null {
    return this.opts.auth.check(method, path, authorization);
  }

  served(): void {
    this.count('served');
  }

  // ---- the directory ---------------------------------------------------------------------

  /** This instance holds `digest` now (stored it): the others may fetch it here. */
  async announce(digests: string[]): Promise<void> {
    if (!this.coordinator.available() || digests.length === 0) return;
    await this.directory.announce(digests, this.opts.self, this.now() + this.opts.ttlMs, this.opts.ttlMs * 2);
  }

  /** This instance no longer holds `digest` (evicted, deleted). */
  async withdraw(digest: string): Promise<void> {
    if (!this.coordinator.available()) return;
    await this.directory.withdraw([digest], this.opts.self);
  }

  /** Stored a blob: announced, and the fetching lease (if ours) given up. */
  committed(digest: string): void {
    this.announce([digest])
      .then(() => this.releaseFetch(digest))
      .catch((err: unknown) => this.log.warn({ err, digest }, 'could not announce a stored blob to the peers'));
  }

  used(): void {
    // recency is local (each node evicts its own store)
  }

  pinChanged(): void {
    // pinned or not, it is held
  }

  evicted(digest: string): void {
    this.removed(digest);
  }

  removed(digest: string): void {
    this.withdraw(digest).catch((err: unknown) => this.log.warn({ err, digest }, 'could not withdraw a blob from the peers directory'));
  }

  /** Peers that hold `digest` (announcement not expired), not this one. */
  async holders(digest: string): Promise<string[]> {
    const now = this.now();
    const members = await this.directory.holders(digest, now);
    return members.filter((p) => p !== this.opts.self && this.opts.networks.allowsUrl(p));
  }

  private async dropIdleLeases(): Promise<void> {
    for (const digest of [...this.fetching.keys()]) if (!this.opts.downloading(digest)) await this.releaseFetch(digest).catch(() => undefined);
  }

  private async renewAnnouncements(): Promise<void> {
    if (this.refreshing || !this.coordinator.available()) return;
    this.refreshing = true;
    try {
      await this.announce([...this.opts.stored()]);
    } catch (err) {
      this.log.warn({ err }, 'could not renew the announcements of stored blobs');
    } finally {
      this.refreshing = false;
    }
  }

  private async releaseFetch(digest: string): Promise<void> {
    const lease = this.fetching.get(digest);
    if (!lease) return;
    this.fetching.delete(digest);
    await lease.release();
  }

  // ---- fetching from peers ---------------------------------------------------------------

  isBad(peer: string): boolean {
    const until = this.bad.get(peer);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.bad.delete(peer);
    return false;
  }

  markBad(peer: string, why: string): void {
    if (peer === this.opts.self) return;
    const wasBad = this.isBad(peer);
    this.bad.set(peer, this.now() + this.opts.badForMs);
    this.count('marked_bad');
    if (!wasBad) this.log.warn({ peer, reason: why, badForSec: Math.round(this.opts.badForMs / 1000) }, 'peer failed a transfer; not asked again for a while');
  }

  /**
   * Opens `digest` at a peer: one that stores it, else the one fetching it now (streamed as it
   * arrives there). With neither, this instance takes the fetching lease (the others will stream
   * from it) and returns null: the caller goes on to the central cache / registry.
   */
  async open(
    digest: string,
    start: number,
    signal: AbortSignal,
    exclude: ReadonlySet<string>,
  ): Promise<PeerBody | null> {
    if (!this.coordinator.available()) return null;
    // The directory changes under us (a fetching node finishes, stores, gives its lease up between
    // two of these calls): looked at again a few times rather than going to central needlessly.
    for (let round = 0; round < 3; round++) {
      const fromHolder = await this.fromHolders(digest, start, signal, exclude);
      if (fromHolder !== 'none') return fromHolder;
      if (this.fetching.has(digest)) return null;
      let lease: Lease | null;
      try {
        lease = await this.leases.acquire(`fetching:${digest}`, FETCH_LEASE_MS, this.opts.self);
      } catch {
        return null;
      }
      if (lease) {
        // Stored by another node just before we took the lease: fetched from it after all.
        const late = await this.fromHolders(digest, start, signal, exclude);
        if (late === 'none') {
          this.fetching.set(digest, lease);
          return null;
        }
        await lease.release();
        return late;
      }
      const holder = await this.leases.read(`fetching:${digest}`).catch(() => null);
      // Released between our attempt and our look: the fetching node is done (look for holders again).
      if (!holder) continue;
      const peer = holder.value;
      if (peer === this.opts.self || exclude.has(peer) || this.isBad(peer) || !this.opts.networks.allowsUrl(peer)) return null;
      return this.request(peer, digest, start, signal);
    }
    return null;
  }

  /** A transfer from a peer that holds `digest`, or 'none' when no holder (left) serves it. */
  private async fromHolders(
    digest: string,
    start: number,
    signal: AbortSignal,
    exclude: ReadonlySet<string>,
  ): Promise<PeerBody | 'none'> {
    let candidates: string[];
    try {
      candidates = shuffle((await this.holders(digest)).filter((p) => !exclude.has(p) && !this.isBad(p)));
    } catch {
      return 'none';
    }
    for (const peer of candidates) {
      const got = await this.request(peer, digest, start, signal);
      if (got) return got;
    }
    return 'none';
  }

  /** One GET to a peer; null (and the peer marked bad unless it merely lacks the blob) when it does not serve. */
  private async request(
    peer: string,
    digest: string,
    start: number,
    signal: AbortSignal,
  ): Promise<PeerBody | null> {
    const path = `${PEER_BLOB_PATH}${digest}`;
    const headers: Record<string, string> = { authorization: this.opts.auth.sign('GET', `${peer}${path}`), 'user-agent': 'stevedore-peer' };
    if (start > 0) headers.range = `bytes=${start}-`;
    let res: Dispatcher.ResponseData;
    try {
      const agent = await this.agent.get();
      const send = (): Promise<Dispatcher.ResponseData> => agent.request({ origin: peer, path, method: 'GET', headers, signal });
      const tracer = activeTracer();
      res = tracer ? await tracedRequest(tracer, 'GET', new URL(path, peer), { 'stevedore.peer': peer }, headers, send) : await send();
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      this.count('failed');
      this.markBad(peer, (err as Error).message);
      return null;
    }
    const status = res.statusCode;
    if (status === 404) {
      discard(res.body);
      this.count('not_found');
      return null;
    }
    const len = header(res.headers, 'content-length');
    if (status === 200) {
      this.count('fetched');
      return { peer, size: len !== undefined && /^\d+$/.test(len) ? Number(len) : null, start: 0, body: res.body, stall: this.stall };
    }
    const m = status === 206 ? /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(res.headers, 'content-range') ?? '') : null;
    if (m && Number(m[1]) === start) {
      this.count('fetched');
      return { peer, size: Number(m[3]), start, body: res.body, stall: this.stall };
    }
    discard(res.body);
    this.count('failed');
    this.markBad(peer, `answered ${status}${status === 206 ? ' with an unusable Content-Range' : ''}`);
    return null;
  }

  /** Stops renewing, withdraws what this instance announced (so no peer tries it), gives up fetching leases. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.leaseTimer);
    if (this.coordinator.available()) {
      try {
        await this.directory.withdraw([...this.opts.stored()], this.opts.self);
      } catch (err) {
        this.log.warn({ err }, 'could not withdraw the announcements of stored blobs (they expire)');
      }
    }
    await Promise.all([...this.fetching.keys()].map((d) => this.releaseFetch(d).catch(() => undefined)));
    await this.agent.close();
  }
}

function shuffle<T>(xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}
