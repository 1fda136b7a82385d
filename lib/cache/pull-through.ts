/**
 * The pull-through policy, as routes see it: "give me this manifest / blob / tag list of this
 * repository". Whether it comes from the store or the upstream, and whether a stored tag is still
 * trusted, is decided by the parts this facade composes:
 *
 *   manifest by tag:    tag-resolver.ts   (tag TTL tiers, revalidation, stale-if-error, refresh-ahead)
 *   manifest by digest: manifests.ts      (stored → hit; else GET upstream, verify, store)
 *   blob:               blob-pulls.ts     (stored → hit; else one download per digest, every client follows it)
 *   tags list:          tag-lists.ts
 *   who may read what:  repository-access.ts (docs/ARCHITECTURE.md rule 9)
 *
 * How downloads and upstream questions are shared with other processes is a Downloads
 * (downloads.ts), chosen here once: LocalDownloads for one process, ClusterDownloads for replicas
 * on one store coordinated through leases.
 *
 * Upstream failures leave the parts as UpstreamError; the HTTP edge maps them to the OCI error
 * of the request's kind (lib/cache/error-answers.ts, toOciError; the edge answers with it).
 */
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import type { Store } from '../storage/store.js';
import type { SentRange } from '../storage/backend.js';
import type { Metadata } from '../metadata/metadata.js';
import type { UpstreamHealth } from '../metadata/upstream-health.js';
import { BlobPulls } from './blob-pulls.js';
import { UpstreamRanges } from './upstream-ranges.js';
import { ClusterDownloads, type ClusterDownloadOptions } from './cluster-downloads.js';
import { DescriptorSizes } from './descriptor-sizes.js';
import type { DownloadOptions } from './download.js';
import type { Downloads } from './downloads.js';
import { LocalDownloads } from './local-downloads.js';
import { Manifests } from './manifests.js';
import { DEFAULT_PULL_LIMITS, type BlobAnswer, type CacheResult, type Clock, type DownloadState, type ManifestAnswer, type PullLimits, type Target, type UpstreamEvents } from './pull-types.js';
import type { RefreshAhead, RefreshAheadOptions } from './refresh-ahead.js';
import { RepositoryAccess } from './repository-access.js';
import { TagLists } from './tag-lists.js';
import { TagResolver } from './tag-resolver.js';
import { GoneTags } from './gone-tags.js';

export type { BlobAnswer, CacheResult, Clock, DownloadState, ManifestAnswer, PullLimits, PullUpstream, Target, UpstreamEvents } from './pull-types.js';
export { DEFAULT_PULL_LIMITS } from './pull-types.js';
export type { ClusterDownloadOptions } from './cluster-downloads.js';

export class PullThrough {
  /** Blob bytes each upstream's downloads wrote (its sources and peers included), since start. */
  readonly fetchedBytes: ReadonlyMap<string, number>;
  /** Hot tags revalidated before their TTL ends (cache.refreshAhead); null: off. */
  readonly refreshAhead: RefreshAhead | null;
  private readonly local: LocalDownloads;
  private readonly downloads: Downloads;
  private readonly tags: TagResolver;
  /** Cached tags their upstream deleted, kept (cache.gonePolicies): ls --gone, the dashboard, metrics. */
  readonly gone: GoneTags;
  private readonly manifests: Manifests;
  private readonly blobs: BlobPulls;
  /** Client ranges asked of the upstream (lazy pulling): their outcomes, for metrics. */
  readonly ranges: UpstreamRanges;
  private readonly lists: TagLists;

  constructor(deps: {
    store: Store;
    metadata: Metadata;
    log: Logger;
    clock?: Clock;
    manifestMaxSize: number;
    download?: Partial<DownloadOptions>;
    health?: UpstreamHealth;
    /** Tag TTLs are multiplied by this while an upstream's quota is low. */
    quotaTTLMultiplier?: number;
    limits?: Partial<PullLimits>;
    cluster?: ClusterDownloadOptions | null;
    refreshAhead?: RefreshAheadOptions | null;
    /** Upstream facts for lib/events (a tag that moved, a download that did not verify). */
    events?: UpstreamEvents | null;
  }) {
    const { store, log } = deps;
    const clock = deps.clock ?? { now: () => Date.now() };
    const limits = { ...DEFAULT_PULL_LIMITS, ...deps.limits };
    const access = new RepositoryAccess(store);
    const sizes = new DescriptorSizes();
    this.local = new LocalDownloads({ store, log, access, sizes, limits, events: deps.events ?? null, ...(deps.download ? { download: deps.download } : {}) });
    this.fetchedBytes = this.local.fetchedBytes;
    // The one place the mode is decided: replicas sharing a coordinator, or this process alone.
    this.downloads = deps.cluster?.coordinator.shared ? new ClusterDownloads(this.local, deps.cluster, { store, log, access }) : this.local;
    this.manifests = new Manifests({ store, access, turns: this.downloads, sizes, limits, manifestMaxSize: deps.manifestMaxSize });
    this.gone = new GoneTags({ store, manifests: this.manifests, log, clock });
    this.tags = new TagResolver({
      store,
      metadata: deps.metadata,
      log,
      clock,
      health: deps.health ?? null,
      quotaTTLMultiplier: deps.quotaTTLMultiplier ?? 1,
      manifests: this.manifests,
      turns: this.downloads,
      gone: this.gone,
      refreshAhead: deps.refreshAhead ?? null,
      events: deps.events ?? null,
    });
    this.refreshAhead = this.tags.refreshAhead;
    this.ranges = new UpstreamRanges(log);
    this.blobs = new BlobPulls({ store, access, local: this.local, downloads: this.downloads, ranges: this.ranges });
    this.lists = new TagLists(store, clock, limits);
  }

  // ---- manifests -----------------------------------------------------------------------------

  getManifestByTag(t: Target, tag: string): Promise<ManifestAnswer> {
    return this.tags.getManifest(t, tag);
  }

  getManifestByDigest(t: Target, d: Digest): Promise<ManifestAnswer> {
    return this.manifests.getByDigest(t, d);
  }

  /**
   * Forgets the memoized answer for a tag: a push into this upstream's namespace just moved it. The
   * other workers and replicas are told too, unless this came from them; resolves once they were
   * (Downloads.tagMoved), so that the push is answered after.
   */
  async forgetTag(upstream: string, name: string, tag: string, opts: { fromPeer?: boolean } = {}): Promise<void> {
    this.tags.forget(upstream, name, tag);
    if (!opts.fromPeer) await this.downloads.tagMoved(upstream, name, tag);
  }

  // ---- blobs ---------------------------------------------------------------------------------

  /** `range`: the client's one range as sent, if any; `gone`: aborted when the client leaves (see BlobPulls.get). */
  getBlob(t: Target, d: Digest, range?: SentRange, gone?: AbortSignal): Promise<BlobAnswer> {
    return this.blobs.get(t, d, range, gone);
  }

  /** Size and whether it is stored, without downloading (HEAD). */
  statBlob(t: Target, d: Digest): Promise<{ size: number | null; cache: CacheResult }> {
    return this.blobs.stat(t, d);
  }

  /** A blob as a peer asks for it (node mode): stored or being downloaded here, never fetched for it; null when neither. */
  peerBlob(d: Digest): Promise<BlobAnswer | null> {
    return this.blobs.forPeer(d);
  }

  /** Whether this process is downloading `digest` now (node mode keeps its peers' fetching lease meanwhile). */
  isDownloading(digest: string): boolean {
    return this.local.isDownloading(digest);
  }

  /** What each download writing now has done: the dashboard's "downloads in flight". */
  downloadsSnapshot(): DownloadState[] {
    return this.local.snapshot();
  }

  /** Upstream blob downloads writing now (metrics). */
  downloadsInFlight(): number {
    return this.local.writing();
  }

  // ---- tags list -----------------------------------------------------------------------------

  /**
   * The complete tags list: from the upstream, else the last complete one stored (stale). Fetching
   * stops when `signal` aborts (the client went away).
   */
  listTags(t: Target, signal?: AbortSignal): Promise<{ tags: string[]; cache: CacheResult; staleReason?: string }> {
    return this.lists.list(t, signal);
  }

  // ---- shutting down -------------------------------------------------------------------------

  /** Cluster mode: the downloads this replica holds are handed over to the others. Resolves with how many. */
  handOver(): Promise<number> {
    return this.downloads.handOver();
  }

  /** Waits for downloads in progress (graceful shutdown). */
  async drain(): Promise<void> {
    await this.local.drain();
  }
}
