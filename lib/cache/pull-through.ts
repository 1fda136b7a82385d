/**
 * The pull-through policy. Routes ask "give me this manifest / blob of this repository"; whether it
 * comes from the store or the upstream, and whether a stored tag is still trusted, is decided here.
 *
 *   manifest by tag:    fresh link → hit; stale link → HEAD upstream: same digest → revalidated,
 *                       changed → GET (miss); upstream failing → stored answer, marked stale.
 *                       Fresh for the tag's tier (tag-policy.ts); a `forever` tier never goes stale.
 *                       A hot tag is revalidated in the background before its TTL ends
 *                       (refresh-ahead.ts), so its clients never wait on that HEAD.
 *   manifest by digest: stored → hit; else GET upstream, verify, store
 *   blob:               stored → hit; else one Download per digest, every client follows it
 */
import { LRUCache } from 'lru-cache';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { parseManifest } from '../oci/media-types.js';
import type { Store } from '../storage/store.js';
import type { StoredBlob } from '../storage/blob-store.js';
import type { RepoRef, TagLink } from '../storage/repo-store.js';
import type { Metadata } from '../metadata/metadata.js';
import type { UpstreamSources } from '../upstream/upstream-sources.js';
import { offlineMessage, UpstreamError } from '../upstream/errors.js';
import { PassThrough } from 'node:stream';
import { Download, type DownloadOptions } from './download.js';
import type { Coordinator, Lease } from '../cluster/coordinator.js';
import { blobFailureKey, blobLeaseKey, FAILURE_NOTE_TTL_MS, RemoteBlob, type FailureNote, type HolderSource, type LeaseProgress, type PublishedDownload } from './cluster-download.js';
import type { UpstreamHealth } from '../metadata/upstream-health.js';
import { tagTTLFor } from './tag-policy.js';
import { RefreshAhead, type RefreshAheadOptions } from './refresh-ahead.js';
import { mapLimit } from '../util/map-limit.js';
import { CACHE_DEFAULTS } from '../config/schema.js';

/** One download in flight, as the dashboard shows it. */
export interface DownloadState {
  digest: string;
  /** `<upstream>/<name>`: the repository it was started for. */
  repository: string;
  written: number;
  size: number | null;
  followers: number;
  attempts: number;
  startedAt: number;
}

export type CacheResult = 'hit' | 'miss' | 'revalidated' | 'stale';

export interface Clock {
  now(): number;
}

export interface Target {
  client: UpstreamSources;
  /** Repository name as the upstream knows it (after `library/` normalization). */
  name: string;
}

export interface ManifestAnswer {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  cache: CacheResult;
  /** Set when the answer is stale: the reason, for `Warning: 110` and the log. */
  staleReason?: string;
}

export interface BlobAnswer {
  size: number | null;
  cache: CacheResult;
  /** Opens the bytes [start, end] (inclusive), or all of them. Call once (this or sendTo), or call release(). */
  open(range?: { start: number; end: number }): Readable;
  /** Sends the bytes to `dest` and ends it: the fast path for HTTP answers (pooled buffers, no stream). */
  sendTo(dest: Writable, range?: { start: number; end: number }): Promise<void>;
  /** Frees what the answer holds when open() will not be called (an error before streaming). */
  release(): Promise<void>;
  /** Stored content the client may fetch from elsewhere (StoredBlob.redirect): answer 307 to it. */
  redirect?(): Promise<string>;
}

interface TagAnswer {
  link: TagLink;
  how: CacheResult;
  staleReason?: string;
}

/** After the upstream failed, a stale tag answer is reused this long before asking again. */
const STALE_RETRY_MS = 10_000;
/** A finished download stays joinable this long, closing the gap between "not stored" and "stored". */
const FINISHED_DOWNLOAD_LINGER_MS = 5_000;
const MANIFEST_MEMO_BYTES = 64 * 1024 * 1024;
/**
 * The latest bytes of each download kept in memory: clients keeping up with it are sent these
 * (one copy for all of them) instead of each reading the temp file into buffers of its own.
 */
const SHARED_RECENT_BYTES = 2 * 1024 * 1024;
/** Files touched at once when a manifest's references are linked: never thousands together (EMFILE). */
const LINK_CONCURRENCY = 8;
/** Descriptor sizes remembered (per repository and digest) from manifests fetched upstream. */
const DESCRIPTOR_SIZES_MAX = 50_000;

/** What a manifest or a list from an upstream may cost. */
export interface PullLimits {
  /** Blobs and child manifests one manifest may name (cache.manifestMaxReferences). */
  manifestMaxReferences: number;
  /** No blob download goes past this (cache.blobMaxSize). */
  blobMaxSize: number;
  tagsListMaxTags: number;
  tagsListMaxBytes: number;
}

export const DEFAULT_PULL_LIMITS: PullLimits = {
  manifestMaxReferences: CACHE_DEFAULTS.manifestMaxReferences,
  blobMaxSize: CACHE_DEFAULTS.blobMaxSize,
  tagsListMaxTags: CACHE_DEFAULTS.tagsListMaxTags,
  tagsListMaxBytes: CACHE_DEFAULTS.tagsListMaxBytes,
};

/** Failures that leave stored content servable: the upstream cannot answer now, or must not be asked. */
function isTransient(err: unknown): err is UpstreamError {
  return (
    err instanceof UpstreamError &&
    (err.kind === 'unavailable' || err.kind === 'timeout' || err.kind === 'rate_limited' || err.kind === 'offline')
  );
}

/** The answer for a blob in the store (a hit). */
function storedAnswer(stored: StoredBlob): BlobAnswer {
  return {
    size: stored.size,
    cache: 'hit',
    open: (r) => stored.stream(r),
    sendTo: (dest, r) => stored.sendTo(dest, r),
    release: () => stored.close(),
    ...(stored.redirect ? { redirect: () => stored.redirect!() } : {}),
  };
}

/** The answer of a client following a download in progress (it has answered: its size is known if the upstream said). */
function followAnswer(dl: Download): BlobAnswer {
  return {
    size: dl.size,
    cache: 'miss',
    open: (r) => dl.createReader(r?.start, r?.end),
    sendTo: (dest, r) => dl.sendTo(dest, r?.start, r?.end),
    release: async () => undefined,
  };
}

/** The repository a download was started for, as a map key. */
function repoKey(r: RepoRef): string {
  return `${r.upstream}/${r.name}`;
}

/** Cluster mode: replicas on one shared store coordinate downloads through leases. */
export interface ClusterDownloads {
  coordinator: Coordinator;
  /** This replica's name, in lease records and logs. */
  replicaId: string;
  /** A download's lease expires this long after its holder last renewed it (then it is taken over). */
  leaseTtlMs: number;
  /** How often a download held elsewhere is looked at (file size, lease). */
  pollMs: number;
  /** A holder showing no progress this long is given up on; this replica then downloads alone. */
  noProgressMs: number;
  /** Counts takeovers and remote follows (metrics). */
  onEvent?(what: 'takeover' | 'remote_follow' | 'alone'): void;
  /** A push moved a tag of an upstream's namespace here: the other replicas forget their answer. */
  onTagMoved?(upstream: string, name: string, tag: string): void;
  /**
   * Replicas that share no disk (the S3 backend): this replica's URL, published in its leases, and
   * how the clients of others stream a download from the replica holding it (holder-stream.ts).
   */
  holders?: HolderSource & { readonly self: string };
}

export class PullThrough {
  private readonly store: Store;
  private readonly metadata: Metadata;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly manifestMaxSize: number;
  private readonly downloads = new Map<string, Download>();
  /** Blob bytes each upstream's downloads wrote (its sources and peers included), since start. */
  readonly fetchedBytes = new Map<string, number>();
  private readonly tags: LRUCache<string, TagAnswer, { target: Target; tag: string }>;
  /** Manifest bytes and media type by digest: the hot path serves them without touching the disk. */
  private readonly manifests: LRUCache<string, { bytes: Buffer; mediaType: string }>;

  private readonly downloadOptions: Partial<DownloadOptions>;
  private readonly health: UpstreamHealth | null;
  private readonly quotaTTLMultiplier: number;
  private readonly limits: PullLimits;
  /**
   * Sizes that manifests fetched upstream give for the blobs they name, by `upstream/name@digest`
   * (a manifest speaks for its own repository only): a download of one is held to that size.
   */
  private readonly descriptorSizes = new LRUCache<string, number>({ max: DESCRIPTOR_SIZES_MAX });
  private readonly cluster: ClusterDownloads | null;
  /** Downloads other replicas hold that clients of this one follow, by digest. */
  private readonly remotes = new Map<string, RemoteBlob>();
  /** When each lease of another replica last showed progress (cluster-download.ts). */
  private readonly leaseProgress = new LRUCache<string, LeaseProgress>({ max: 10_000 });
  /** A miss being resolved in cluster mode (lease asked for), shared by concurrent requests. */
  private readonly resolving = new Map<string, Promise<Download | RemoteBlob | 'stored'>>();
  /** Cluster downloads this replica holds the lease of. */
  private readonly held = new Map<Download, Promise<void>>();
  /** Downloads given up for another replica to continue (shutdown): their failure is no failure. */
  private readonly handedOver = new Set<Download>();
  /** Hot tags revalidated before their TTL ends (cache.refreshAhead); null: off. */
  readonly refreshAhead: RefreshAhead | null;
  /** Background revalidations in flight, by tag key: a request finding the answer expired waits for it instead of asking again. */
  private readonly refreshing = new Map<string, Promise<void>>();

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
    cluster?: ClusterDownloads | null;
    refreshAhead?: RefreshAheadOptions | null;
  }) {
    this.refreshAhead = deps.refreshAhead?.enabled ? new RefreshAhead(deps.refreshAhead) : null;
    this.cluster = deps.cluster?.coordinator.shared ? deps.cluster : null;
    this.limits = { ...DEFAULT_PULL_LIMITS, ...deps.limits };
    this.downloadOptions = deps.download ?? {};
    this.health = deps.health ?? null;
    this.quotaTTLMultiplier = deps.quotaTTLMultiplier ?? 1;
    this.store = deps.store;
    this.metadata = deps.metadata;
    this.log = deps.log;
    this.clock = deps.clock ?? { now: () => Date.now() };
    this.manifestMaxSize = deps.manifestMaxSize;
    this.tags = new LRUCache({
      max: 10_000,
      perf: this.clock,
      fetchMethod: async (key, _stale, { options, context }) => {
        // A background revalidation of this tag still running: its outcome is this answer's.
        const pending = this.refreshing.get(key);
        if (pending) await pending;
        const { answer, ttl } = await this.resolveTag(context.target, context.tag);
        options.ttl = Math.max(1, ttl);
        return answer;
      },
    });
    this.manifests = new LRUCache({
      maxSize: MANIFEST_MEMO_BYTES,
      sizeCalculation: (v) => v.bytes.length + 64,
    });
  }

  private repo(t: Target): RepoRef {
    return { upstream: t.client.name, name: t.name };
  }

  // ---- manifests -------------------------------------------------------------------------

  async getManifestByTag(t: Target, tag: string): Promise<ManifestAnswer> {
    const key = `${t.client.name}/${t.name}:${tag}`;
    const status: LRUCache.Status<string, TagAnswer> = {};
    const answer = await this.fetchTag(key, t, tag, status);
    if (!answer) throw new OciError('MANIFEST_UNKNOWN', `manifest ${t.name}:${tag} unknown`);
    // A memoized stale answer stays stale; otherwise a memory hit is a hit.
    const how = answer.how === 'stale' ? 'stale' : status.fetch === 'hit' ? 'hit' : answer.how;
    if (how === 'hit' && this.refreshAhead && status.fetch === 'hit' && status.start !== undefined && status.ttl !== undefined && status.remainingTTL !== undefined) {
      if (this.refreshAhead.note(key, status.start, status.ttl, status.remainingTTL)) this.startRefresh(key, t, tag);
    }
    const stored = await this.readStoredManifest(parseDigest(answer.link.digest));
    if (!stored) {
      // The bytes went missing under a cached link (deleted by hand, or evicted): forget and retry once.
      this.tags.delete(key);
      const again = await this.fetchTag(key, t, tag);
      const bytes = again && (await this.readStoredManifest(parseDigest(again.link.digest)));
      if (!again || !bytes) throw new OciError('MANIFEST_UNKNOWN', `manifest ${t.name}:${tag} unknown`);
      return { digest: again.link.digest, mediaType: bytes.mediaType, size: bytes.bytes.length, bytes: bytes.bytes, cache: again.how };
    }
    const result: ManifestAnswer = {
      digest: answer.link.digest,
      mediaType: stored.mediaType,
      size: stored.bytes.length,
      bytes: stored.bytes,
      cache: how,
    };
    if (answer.how === 'stale' && answer.staleReason) result.staleReason = answer.staleReason;
    return result;
  }

  /**
   * The memoized answer for a tag. A tag forgotten while it is being resolved (a push moved it, here
   * or on another replica) aborts that resolution (lru-cache rejects it with "deleted"): its answer
   * may predate the move, so the tag is resolved again rather than failing the request.
   */
  private async fetchTag(key: string, t: Target, tag: string, status?: LRUCache.Status<string, TagAnswer>): Promise<TagAnswer | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.tags.fetch(key, { context: { target: t, tag }, ...(status ? { status } : {}) });
      } catch (err) {
        if (attempt >= 3 || !(err instanceof Error) || err.message !== 'deleted') throw err;
      }
    }
  }

  private async resolveTag(t: Target, tag: string, waited = false): Promise<{ answer: TagAnswer; ttl: number }> {
    const repo = this.repo(t);
    const [link, checked, quota] = await Promise.all([
      this.store.repos.getTag(repo, tag),
      this.metadata.tagCheckedAt(repo.upstream, repo.name, tag),
      this.health?.quotaState(repo.upstream) ?? null,
    ]);
    const tier = tagTTLFor(t.client.config, t.name, tag);
    // Low quota upstream: trust stored tags longer instead of spending the last pulls.
    const ttl = tier === 'forever' ? Infinity : tier * (quota?.low ? this.quotaTTLMultiplier : 1);
    // How long this process reuses its answer before looking again. A `forever` tag is looked up
    // again in the store (never upstream) after the upstream's tagTTL, so a tag pushed or imported
    // by another replica or a CLI command on the same store is seen.
    const memo = tier === 'forever' ? t.client.config.tagTTL : ttl;
    const haveBytes = link ? await this.store.blobs.present(parseDigest(link.digest)) : false;
    if (t.client.offline) {
      // Offline by choice: what is stored is the answer; nothing is revalidated.
      if (link && haveBytes) return { answer: { link, how: 'hit' }, ttl: t.client.config.tagTTL };
      throw new OciError('OFFLINE', offlineMessage(t.client.name, `manifest ${t.name}:${tag}`));
    }
    // Never revalidated once stored: the upstream is not asked, and so cannot fail.
    if (link && haveBytes && tier === 'forever') return { answer: { link, how: 'hit' }, ttl: memo };
    if (link && haveBytes && checked && checked.digest === link.digest) {
      const age = this.clock.now() - checked.at;
      if (age >= 0 && age < ttl) return { answer: { link, how: 'hit' }, ttl: ttl - age };
    }
    // Cluster mode: one replica at a time asks the upstream about a tag; the others wait for it
    // and then find its answer in the shared state (one HEAD or GET per tag for the cluster).
    if (this.cluster && !waited) {
      const turn = await this.clusterTurn(`tag:${repo.upstream}/${repo.name}:${tag}`);
      if (turn === 'waited') return this.resolveTag(t, tag, true);
      try {
        return await this.askUpstreamForTag(t, tag, link, haveBytes, memo);
      } finally {
        await turn?.release();
      }
    }
    return this.askUpstreamForTag(t, tag, link, haveBytes, memo);
  }

  /**
   * Cluster mode: this replica's turn to do `key`'s upstream work (a lease, held until released),
   * or 'waited' once another replica that had it is done (then its result is in the shared state),
   * or null when Redis cannot say (this replica goes ahead alone).
   */
  private async clusterTurn(key: string): Promise<Lease | 'waited' | null> {
    const c = this.cluster!;
    if (!c.coordinator.available()) return null;
    try {
      const lease = await c.coordinator.acquire(key, c.leaseTtlMs);
      if (lease) return lease;
      // Bounded: a holder that takes longer than this (a stalled upstream) is not waited for.
      const deadline = Date.now() + 2 * c.leaseTtlMs;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, c.pollMs));
        if ((await c.coordinator.read(key)) === null) break;
      }
      return 'waited';
    } catch {
      return null;
    }
  }

  /** The upstream part of resolveTag: revalidate a stored tag with HEAD, or fetch its manifest. */
  private async askUpstreamForTag(t: Target, tag: string, link: TagLink | null, haveBytes: boolean, memo: number): Promise<{ answer: TagAnswer; ttl: number }> {
    const repo = this.repo(t);
    if (link && haveBytes) {
      try {
        const head = await t.client.headManifest(t.name, tag);
        if (head.digest === link.digest) {
          // Confirmed only by a cache that could not confirm it itself (another stevedore serving
          // stale): stale here too, and asked again soon, as if the upstream had failed.
          if (head.stale) return this.staleTag(t, tag, link, head.stale, memo);
          await this.metadata.setTagChecked(repo.upstream, repo.name, tag, link.digest, this.clock.now());
          return { answer: { link, how: 'revalidated' }, ttl: memo };
        }
        // Changed upstream (or no digest in the HEAD answer): fetch the new manifest below.
      } catch (err) {
        if (isTransient(err)) return this.staleTag(t, tag, link, err.message, memo);
        // A tag pushed here (seeded: pinned) that the upstream does not have is ours to serve.
        if (err instanceof UpstreamError && err.kind === 'not_found' && this.store.blobs.index.isPinned(link.digest)) {
          return { answer: { link, how: 'hit' }, ttl: memo };
        }
        if (err instanceof UpstreamError) throw err.toOciError('MANIFEST_UNKNOWN');
        throw err;
      }
    }
    let fetched;
    try {
      fetched = await t.client.getManifest(t.name, tag, this.manifestMaxSize);
    } catch (err) {
      if (link && haveBytes && isTransient(err)) return this.staleTag(t, tag, link, err.message, memo);
      if (err instanceof UpstreamError) throw err.toOciError('MANIFEST_UNKNOWN');
      throw err;
    }
    const stored = await this.storeManifest(t, fetched.bytes, fetched.mediaType, null, fetched.digest);
    const newLink: TagLink = { digest: stored.digest, mediaType: stored.mediaType, size: fetched.bytes.length };
    await this.store.repos.setTag(repo, tag, newLink);
    // The answer of a cache serving stale: stored, passed on as stale, and asked for again soon.
    if (fetched.stale) return this.staleTag(t, tag, newLink, fetched.stale, memo);
    await this.metadata.setTagChecked(repo.upstream, repo.name, tag, newLink.digest, this.clock.now());
    return { answer: { link: newLink, how: 'miss' }, ttl: memo };
  }

  /**
   * Refresh-ahead: revalidates a hot tag in the background (one HEAD; a GET when it moved), so that
   * when its memoized answer expires the tag's record is already fresh. Like any revalidation it
   * respects the upstream's state: nothing is asked during a cool-down (429), while the breaker is
   * open, or while the quota is low (then the TTL is stretched instead, see resolveTag); in cluster
   * mode only the replica that gets the tag's lease asks.
   */
  private startRefresh(key: string, t: Target, tag: string): void {
    const refresh = this.refreshAhead!;
    refresh.run(key, t.client.name, async () => {
      const p = this.refreshTag(t, tag).catch((err: unknown) => {
        this.log.debug({ upstream: t.client.name, repo: t.name, tag, err }, 'refresh-ahead of a tag failed; it is revalidated when it expires');
      });
      this.refreshing.set(key, p);
      try {
        await p;
      } finally {
        if (this.refreshing.get(key) === p) this.refreshing.delete(key);
      }
    });
  }

  private async refreshTag(t: Target, tag: string): Promise<void> {
    const repo = this.repo(t);
    const tier = tagTTLFor(t.client.config, t.name, tag);
    if (tier === 'forever' || t.client.offline) return;
    if (this.health) {
      const [gate, quota] = await Promise.all([this.health.gate(repo.upstream), this.health.quotaState(repo.upstream)]);
      if (!gate.open || quota?.low) return;
    }
    const link = await this.store.repos.getTag(repo, tag);
    if (!link || !(await this.store.blobs.present(parseDigest(link.digest)))) return;
    const lease = this.cluster ? await this.clusterTurn(`tag:${repo.upstream}/${repo.name}:${tag}`) : null;
    if (this.cluster && lease === 'waited') return;
    try {
      // Another replica (or a request on this one) checked it recently: not due yet, whatever this
      // replica's memoized answer says.
      const checked = await this.metadata.tagCheckedAt(repo.upstream, repo.name, tag);
      const window = Math.min(this.refreshAhead!.options.before, tier / 2);
      if (checked && checked.digest === link.digest && this.clock.now() - checked.at < tier - window) return;
      await this.askUpstreamForTag(t, tag, link, true, tier);
    } finally {
      if (lease && lease !== 'waited') await lease.release();
    }
  }

  /**
   * Forgets the memoized answer for a tag: a push into this upstream's namespace just moved it. In
   * cluster mode the other replicas are told too (`onTagMoved`), unless this came from them.
   */
  forgetTag(upstream: string, name: string, tag: string, opts: { fromPeer?: boolean } = {}): void {
    this.tags.delete(`${upstream}/${name}:${tag}`);
    if (!opts.fromPeer) this.cluster?.onTagMoved?.(upstream, name, tag);
  }

  private staleTag(t: Target, tag: string, link: TagLink, reason: string, ttl: number): { answer: TagAnswer; ttl: number } {
    this.log.warn({ upstream: t.client.name, repo: t.name, tag, reason }, 'upstream failing; serving stored tag');
    return { answer: { link, how: 'stale', staleReason: reason }, ttl: Math.min(STALE_RETRY_MS, ttl) };
  }

  async getManifestByDigest(t: Target, d: Digest, waited = false): Promise<ManifestAnswer> {
    const stored = await this.readStoredManifest(d);
    if (stored) {
      await this.authorizeStored(t, d, 'MANIFEST_UNKNOWN');
      return { digest: d.value, mediaType: stored.mediaType, size: stored.bytes.length, bytes: stored.bytes, cache: 'hit' };
    }
    if (this.cluster && !waited) {
      // One replica fetches it; the others then read what it stored.
      const turn = await this.clusterTurn(`manifest:${d.value}`);
      if (turn === 'waited') return this.getManifestByDigest(t, d, true);
      try {
        return await this.getManifestByDigest(t, d, true);
      } finally {
        await turn?.release();
      }
    }
    let fetched;
    try {
      fetched = await t.client.getManifest(t.name, d.value, this.manifestMaxSize);
    } catch (err) {
      if (err instanceof UpstreamError) throw err.toOciError('MANIFEST_UNKNOWN');
      throw err;
    }
    const saved = await this.storeManifest(t, fetched.bytes, fetched.mediaType, d, fetched.digest);
    return { digest: saved.digest, mediaType: saved.mediaType, size: fetched.bytes.length, bytes: fetched.bytes, cache: 'miss' };
  }

  private async readStoredManifest(d: Digest): Promise<{ bytes: Buffer; mediaType: string } | null> {
    const memo = this.manifests.get(d.value);
    if (memo) return memo;
    const bytes = await this.store.blobs.readSmall(d);
    if (!bytes) return null;
    let mediaType: string;
    try {
      mediaType = parseManifest(bytes).mediaType;
    } catch {
      return null; // stored content that is not a manifest (a layer asked for as a manifest)
    }
    const entry = { bytes, mediaType };
    this.manifests.set(d.value, entry);
    return entry;
  }

  /**
   * Verifies manifest bytes from the upstream and stores them: the digest must match the one asked
   * for and the one the upstream claimed. Links the manifest and everything it references to the
   * repository, so the blobs it names are served from the store without asking again.
   */
  private async storeManifest(
    t: Target,
    bytes: Buffer,
    declaredType: string,
    expected: Digest | null,
    claimed: string | null,
  ): Promise<{ digest: string; mediaType: string }> {
    const actual = digestOf(bytes, expected?.algorithm ?? 'sha256');
    if (expected && actual.value !== expected.value) {
      throw new OciError('MANIFEST_INVALID', `upstream ${t.client.name} sent a manifest for ${t.name}@${expected.value} whose digest is ${actual.value}`, { status: 502 });
    }
    if (claimed && claimed.startsWith(`${actual.algorithm}:`) && claimed !== actual.value) {
      throw new OciError('MANIFEST_INVALID', `upstream ${t.client.name} sent a manifest for ${t.name} whose digest ${actual.value} differs from the one it claimed (${claimed})`, { status: 502 });
    }
    let parsed;
    try {
      parsed = parseManifest(bytes, declaredType);
    } catch (err) {
      throw new OciError('MANIFEST_INVALID', `upstream ${t.client.name} sent an invalid manifest for ${t.name}: ${(err as Error).message}`, { status: 502 });
    }
    const descriptors = [...parsed.manifests, ...parsed.blobs];
    const max = this.limits.manifestMaxReferences;
    if (descriptors.length > max) {
      throw new OciError(
        'MANIFEST_INVALID',
        `upstream ${t.client.name} sent a manifest for ${t.name} naming ${descriptors.length} blobs and manifests, above the limit of ${max} (cache.manifestMaxReferences)`,
        { status: 502 },
      );
    }
    await this.store.blobs.putSmall(bytes, actual);
    const repo = this.repo(t);
    const refs = [...new Set([actual.value, ...descriptors.map((x) => x.digest)])];
    await mapLimit(refs, LINK_CONCURRENCY, (x) => this.store.repos.link(repo, parseDigest(x)));
    for (const d of parsed.blobs) if (d.size >= 0) this.descriptorSizes.set(`${repo.upstream}/${repo.name}@${d.digest}`, d.size);
    this.manifests.set(actual.value, { bytes, mediaType: parsed.mediaType });
    return { digest: actual.value, mediaType: parsed.mediaType };
  }

  /**
   * Content held here (stored, or being downloaded) that this repository does not link: served
   * under this name only once the upstream confirms that the repository has it (HEAD, no quota),
   * and linked then (docs/ARCHITECTURE.md rule 9). A digest is no key: content pushed to a private hosted
   * repository, or fetched for another repository with the upstream's credentials, never leaks
   * into a name that does not hold it. When the upstream cannot answer (rate-limited, breaker
   * open, unreachable, offline) the content is unknown here, as if it were not stored: a failed
   * check is never "known".
   */
  private async authorizeStored(t: Target, d: Digest, unknown: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN'): Promise<void> {
    const repo = this.repo(t);
    if (await this.store.repos.hasLink(repo, d)) return;
    try {
      await t.client.headBlob(t.name, d.value);
    } catch (err) {
      if (err instanceof UpstreamError) throw err.toOciError(unknown);
      throw err;
    }
    await this.store.repos.link(repo, d);
  }

  /** A download this repository asks to join: its own, or one it is allowed to read (authorizeStored). */
  private async authorizeJoin(t: Target, d: Digest, dl: Download): Promise<void> {
    if (dl.repoKey !== repoKey(this.repo(t))) await this.authorizeStored(t, d, 'BLOB_UNKNOWN');
  }

  // ---- blobs -----------------------------------------------------------------------------

  async getBlob(t: Target, d: Digest): Promise<BlobAnswer> {
    const joined = this.inFlight(d);
    if (joined) {
      await this.authorizeJoin(t, d, joined);
      return this.follow(joined, t);
    }
    if (await this.store.blobs.present(d)) {
      await this.authorizeStored(t, d, 'BLOB_UNKNOWN');
      const stored = await this.store.blobs.open(d);
      if (stored) {
        return storedAnswer(stored);
      }
    }
    // Joined even when it just finished: it was not stored yet when we looked. Unless it has been
    // evicted since (a small store): then it is fetched again.
    const finished = this.downloads.get(d.value);
    if (finished && (finished.writer.state !== 'committed' || (await this.store.blobs.present(d)))) {
      await this.authorizeJoin(t, d, finished);
      return this.follow(finished, t);
    }
    if (finished && this.downloads.get(d.value) === finished) this.downloads.delete(d.value);
    if (!this.cluster) return this.follow(this.startDownload(t, d), t);
    const source = await this.clusterSource(t, d);
    if (source === 'stored') return this.getBlob(t, d);
    if (source instanceof Download) {
      await this.authorizeJoin(t, d, source);
      return this.follow(source, t);
    }
    return this.followRemote(source, t, d);
  }

  // ---- cluster mode ----------------------------------------------------------------------

  /**
   * A miss in cluster mode: this replica downloads (it got the digest's lease), or follows the
   * replica that holds it. Redis unreachable: this replica downloads alone (per-replica coalescing).
   */
  private clusterSource(t: Target, d: Digest): Promise<Download | RemoteBlob | 'stored'> {
    const pending = this.resolving.get(d.value);
    if (pending) return pending;
    const p = (async (): Promise<Download | RemoteBlob | 'stored'> => {
      const c = this.cluster!;
      const remote = this.remotes.get(d.value);
      if (remote) return remote;
      let lease: Lease | null | 'unavailable' = 'unavailable';
      if (c.coordinator.available()) {
        try {
          lease = await c.coordinator.acquire(blobLeaseKey(d), c.leaseTtlMs, this.published(t, null, false));
        } catch {
          lease = 'unavailable';
        }
      }
      if (lease === 'unavailable') {
        c.onEvent?.('alone');
        return this.startDownload(t, d);
      }
      if (lease) {
        // Stored meanwhile: the holder before us finished between our look and our lease.
        if (await this.store.blobs.adopt(d)) {
          await lease.release();
          return 'stored';
        }
        return this.startDownload(t, d, lease);
      }
      c.onEvent?.('remote_follow');
      return this.remoteFor(t, d);
    })();
    this.resolving.set(d.value, p);
    const forget = (): void => {
      if (this.resolving.get(d.value) === p) this.resolving.delete(d.value);
    };
    p.then(forget, forget);
    return p;
  }

  private published(t: Target, size: number | null, ready: boolean): string {
    const c = this.cluster!;
    const pub: PublishedDownload = { owner: c.replicaId, repoKey: repoKey(this.repo(t)), size, ready, ...(c.holders ? { url: c.holders.self } : {}) };
    return JSON.stringify(pub);
  }

  private remoteFor(t: Target, d: Digest): RemoteBlob {
    const existing = this.remotes.get(d.value);
    if (existing) return existing;
    const c = this.cluster!;
    const remote: RemoteBlob = new RemoteBlob(d, {
      store: this.store,
      coordinator: c.coordinator,
      log: this.log,
      pollMs: c.pollMs,
      leaseTtlMs: c.leaseTtlMs,
      noProgressMs: c.noProgressMs,
      progress: this.leaseProgress,
      ...(c.holders ? { holders: c.holders } : {}),
      takeOver: async () => {
        if (this.inFlight(d)) return null;
        const lease = await c.coordinator.acquire(blobLeaseKey(d), c.leaseTtlMs, this.published(t, remote.size, false)).catch(() => null);
        if (!lease) return null;
        if (await this.store.blobs.adopt(d)) {
          await lease.release();
          return null;
        }
        c.onEvent?.('takeover');
        this.log.warn({ digest: d.value, previousHolder: remote.owner || 'unknown', upstream: t.client.name, repo: t.name }, 'the replica downloading this blob is gone; taking its download over');
        this.startDownload(t, d, lease);
        return lease.token;
      },
      onDone: () => {
        if (this.remotes.get(d.value) === remote) this.remotes.delete(d.value);
      },
    });
    this.remotes.set(d.value, remote);
    return remote;
  }

  /** Answers from a download another replica holds (or this one took over) through the shared file. */
  private async followRemote(remote: RemoteBlob, t: Target, d: Digest): Promise<BlobAnswer> {
    const release = remote.use();
    try {
      await remote.ready;
    } catch (err) {
      release();
      if (err instanceof UpstreamError) throw err.toOciError('BLOB_UNKNOWN');
      // Stored after all (the RemoteBlob saw the file land): served like any stored blob.
      if (await this.store.blobs.present(d)) return this.getBlob(t, d);
      // Its lease stands but nobody works on it (Redis says so, Redis is not trusted): alone.
      if (remote.state === 'abandoned') return this.downloadAlone(t, d);
      throw err;
    }
    if (remote.state === 'committed') {
      release();
      await this.store.blobs.adopt(d);
      return this.getBlob(t, d);
    }
    if (remote.state === 'abandoned') {
      release();
      return this.downloadAlone(t, d);
    }
    // A holder address outside cluster.allowedNetworks, or one that sent bytes that did not verify.
    const holders = this.cluster?.holders;
    if (holders && remote.url && !holders.usable(remote.url)) {
      release();
      return this.downloadAlone(t, d);
    }
    try {
      // The repository in the lease record comes from Redis: never taken for this one's authorization.
      await this.authorizeStored(t, d, 'BLOB_UNKNOWN');
    } catch (err) {
      release();
      throw err;
    }
    // What the headers will say (from the lease record): checked against the bytes before the last one.
    const promised = remote.size;
    const sendTo = async (dest: Writable, r?: { start: number; end: number }): Promise<void> => {
      try {
        await remote.sendTo(dest, r?.start, r?.end, promised);
      } finally {
        release();
      }
    };
    return {
      size: promised,
      cache: 'miss',
      sendTo,
      open: (r) => {
        const out = new PassThrough();
        sendTo(out, r).catch((err: unknown) => out.destroy(err as Error));
        return out;
      },
      release: async () => release(),
    };
  }

  /** The download another replica holds cannot be followed: this replica downloads the blob itself (no lease). */
  private async downloadAlone(t: Target, d: Digest): Promise<BlobAnswer> {
    this.cluster?.onEvent?.('alone');
    const running = this.inFlight(d);
    if (running) {
      await this.authorizeJoin(t, d, running);
      return this.follow(running, t);
    }
    return this.follow(this.startDownload(t, d), t);
  }

  /** Size and whether it is stored, without downloading (HEAD). */
  async statBlob(t: Target, d: Digest): Promise<{ size: number | null; cache: CacheResult }> {
    const dl = this.inFlight(d);
    if (dl) {
      await this.authorizeJoin(t, d, dl);
      await this.awaitReady(dl, t);
      return { size: dl.size, cache: 'miss' };
    }
    const info = await this.store.blobs.statPresent(d);
    if (info) {
      await this.authorizeStored(t, d, 'BLOB_UNKNOWN');
      return { size: info.size, cache: 'hit' };
    }
    try {
      const { size } = await t.client.headBlob(t.name, d.value);
      return { size, cache: 'miss' };
    } catch (err) {
      if (err instanceof UpstreamError) throw err.toOciError('BLOB_UNKNOWN');
      throw err;
    }
  }

  /** Whether this process is downloading `digest` now (node mode keeps its peers' fetching lease meanwhile). */
  isDownloading(digest: string): boolean {
    return this.downloads.get(digest)?.writer.state === 'writing';
  }

  /**
   * A blob as a peer asks for it (node mode): stored here, or being downloaded here, whatever the
   * repository (peers trust digests, and check names themselves); never fetched for the peer.
   * Null when neither.
   */
  async peerBlob(d: Digest): Promise<BlobAnswer | null> {
    const dl = this.inFlight(d);
    if (dl && !dl.writer.withhold) {
      try {
        await dl.ready;
      } catch {
        return null;
      }
      return followAnswer(dl);
    }
    const stored = await this.store.blobs.open(d);
    if (!stored) return null;
    return storedAnswer(stored);
  }

  /** What each download writing now has done: the dashboard's "downloads in flight". */
  downloadsSnapshot(): DownloadState[] {
    const out: DownloadState[] = [];
    for (const dl of this.downloads.values()) {
      if (dl.writer.state !== 'writing') continue;
      out.push({ digest: dl.digest, repository: dl.repoKey, written: dl.writer.written, size: dl.size, followers: dl.followerCount, attempts: dl.attempts, startedAt: dl.startedAt });
    }
    return out;
  }

  /** Upstream blob downloads writing now (metrics). */
  downloadsInFlight(): number {
    let n = 0;
    for (const dl of this.downloads.values()) if (dl.writer.state === 'writing') n++;
    return n;
  }

  /** A download still writing (a finished one lingers only to be joined by late starters). */
  private inFlight(d: Digest): Download | undefined {
    const dl = this.downloads.get(d.value);
    return dl && dl.writer.state === 'writing' ? dl : undefined;
  }

  private async follow(dl: Download, t: Target): Promise<BlobAnswer> {
    await this.awaitReady(dl, t);
    return followAnswer(dl);
  }

  private async awaitReady(dl: Download, _t: Target): Promise<void> {
    try {
      await dl.ready;
    } catch (err) {
      if (err instanceof UpstreamError) throw err.toOciError('BLOB_UNKNOWN');
      throw err;
    }
  }

  private startDownload(t: Target, d: Digest, lease?: Lease): Download {
    const expectedSize = this.descriptorSizes.get(`${t.client.name}/${t.name}@${d.value}`) ?? null;
    const maxSize = this.limits.blobMaxSize;
    // The writer refuses past the limit too: a second line behind the download's own check.
    // Holding a cluster lease: the shared temp file, which other replicas follow and may take over.
    const writer = this.store.blobs.createWriter(d, { keepRecent: SHARED_RECENT_BYTES, maxSize: expectedSize ?? maxSize, shared: lease !== undefined });
    const timeouts = t.client.config.timeouts;
    const dl = new Download(
      d.value,
      repoKey(this.repo(t)),
      writer,
      // Peers (node mode) only for a blob this repository links: a manifest from a trusted source
      // named it (docs/ARCHITECTURE.md rule 9; a peer is trusted by digest, not by name).
      t.client.blobSource(t.name, d.value, { peersAllowed: () => this.store.repos.hasLink(this.repo(t), d) }),
      this.log.child({ upstream: t.client.name, repo: t.name }),
      {
        ...this.downloadOptions,
        maxSize,
        expectedSize,
        stall: { windowMs: timeouts.stall, minBytes: timeouts.minProgress },
        upstream: t.client.name,
      },
    );
    this.downloads.set(d.value, dl);
    if (lease) this.holdLease(lease, dl, t, d);
    const counted = (): void => {
      this.fetchedBytes.set(t.client.name, (this.fetchedBytes.get(t.client.name) ?? 0) + dl.writer.written);
    };
    dl.done.then(counted, counted);
    dl.done.then(
      async () => {
        await this.store.repos.link(this.repo(t), d).catch((err: unknown) => this.log.warn({ err }, 'linking blob failed'));
        setTimeout(() => {
          if (this.downloads.get(d.value) === dl) this.downloads.delete(d.value);
          dl.writer.release();
        }, FINISHED_DOWNLOAD_LINGER_MS).unref();
      },
      () => {
        if (this.downloads.get(d.value) === dl) this.downloads.delete(d.value);
      },
    );
    return dl;
  }

  /**
   * The holder's side of a cluster download: publishes the size once the upstream answered, stops
   * (leaving the file to whoever took over) if the lease is lost, says why it failed, and releases
   * the lease once the blob is stored or failed.
   */
  private holdLease(lease: Lease, dl: Download, t: Target, d: Digest): void {
    this.log.info({ digest: d.value, replica: this.cluster?.replicaId, upstream: t.client.name, repo: t.name }, 'downloading a blob for the cluster (holding its lease)');
    const onLost = (): void => {
      this.log.warn({ digest: d.value, reason: (lease.lost.reason as Error | undefined)?.message }, 'lost the lease of a download; another replica continues it');
      dl.cancel(new OciError('BLOB_UNKNOWN', `the download of ${d.value} was taken over by another replica`, { status: 503 }), { keepFile: true });
    };
    lease.lost.addEventListener('abort', onLost, { once: true });
    dl.ready.then(
      () => lease.publish(this.published(t, dl.size, true)).catch(() => false),
      () => undefined,
    );
    const settled = dl.done.then(
      async () => {
        lease.lost.removeEventListener('abort', onLost);
        this.held.delete(dl);
        await lease.release();
      },
      async (err: unknown) => {
        lease.lost.removeEventListener('abort', onLost);
        this.held.delete(dl);
        // Handed over: no failure note, so the first replica to look takes it over at once.
        if (!lease.lost.aborted && !this.handedOver.delete(dl)) {
          const oci = err instanceof UpstreamError ? err.toOciError('BLOB_UNKNOWN') : err instanceof OciError ? err : new OciError('BLOB_UNKNOWN', `the download of ${d.value} failed: ${(err as Error).message}`, { status: 502 });
          // Its reason, not its message: followers on other replicas put it in their status line (an upstream's quoted words stay here).
          const note: FailureNote = { token: lease.token, code: oci.code, message: oci.reason, status: oci.status };
          await this.cluster?.coordinator.setNote(blobFailureKey(d), JSON.stringify(note), FAILURE_NOTE_TTL_MS).catch(() => undefined);
        }
        await lease.release();
      },
    );
    this.held.set(dl, settled);
  }

  // ---- tags list -------------------------------------------------------------------------

  /**
   * The complete tags list: from the upstream, else the last complete one stored (stale). Fetching
   * stops when `signal` aborts (the client went away).
   */
  async listTags(t: Target, signal?: AbortSignal): Promise<{ tags: string[]; cache: CacheResult; staleReason?: string }> {
    const repo = this.repo(t);
    // Tags pushed here (seeded) are served by getManifestByTag whatever the upstream says: list them too.
    const seeded = await this.seededTags(repo);
    try {
      const tags = await t.client.listTags(t.name, { maxTags: this.limits.tagsListMaxTags, maxBytes: this.limits.tagsListMaxBytes }, signal);
      await this.store.repos.setTagsList(repo, tags, this.clock.now());
      return { tags: [...new Set([...tags, ...seeded])], cache: 'miss' };
    } catch (err) {
      if (isTransient(err)) {
        const stored = await this.store.repos.getTagsList(repo);
        if (stored || seeded.length) return { tags: [...new Set([...(stored?.tags ?? []), ...seeded])], cache: 'stale', staleReason: err.message };
      }
      if (err instanceof UpstreamError) throw err.toOciError('NAME_UNKNOWN');
      throw err;
    }
  }

  /** Stored tags whose manifest is pinned: pushed into this upstream's namespace (or prefetched with --pin). */
  private async seededTags(repo: RepoRef): Promise<string[]> {
    const out: string[] = [];
    for (const tag of await this.store.repos.listStoredTags(repo)) {
      const link = await this.store.repos.getTag(repo, tag).catch(() => null);
      if (link && this.store.blobs.index.isPinned(link.digest)) out.push(tag);
    }
    return out;
  }

  /**
   * Shutting down in cluster mode: the downloads this replica still holds are stopped with their
   * bytes left in the shared file and their leases released, so another replica resumes each one
   * (with Range) at once instead of failing its clients. Resolves when they have settled.
   */
  async handOver(): Promise<number> {
    const held = [...this.held];
    for (const [dl] of held) {
      this.handedOver.add(dl);
      dl.cancel(new OciError('BLOB_UNKNOWN', `this replica is shutting down; another continues the download of ${dl.digest}`, { status: 503 }), { keepFile: true });
    }
    // Settled: each lease released (after the file was left as it is).
    await Promise.allSettled(held.map(([, settled]) => settled));
    if (held.length) this.log.info({ downloads: held.length }, 'shutting down: downloads in progress handed over to the other replicas');
    return held.length;
  }

  /** Waits for downloads in progress (graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.downloads.values()].map((d) => d.done));
  }
}
