/**
 * The blob downloads of this process: one Download per digest (download.ts), which every client of
 * this process asking for the digest follows (docs/ARCHITECTURE.md rule 3). As the Downloads of a
 * single process, a miss starts one here; cluster-downloads.ts starts them here too, for the
 * digests whose lease this replica holds.
 */
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import type { Store } from '../storage/store.js';
import type { DescriptorSizes } from './descriptor-sizes.js';
import { Download, type DownloadOptions } from './download.js';
import type { Downloads, Turn } from './downloads.js';
import { repoKey, repoOf, type BlobAnswer, type DownloadState, type PullLimits, type Target, type UpstreamEvents } from './pull-types.js';
import { DigestMismatchError } from '../storage/errors.js';
import type { RepositoryAccess } from './repository-access.js';

/** A finished download stays joinable this long, closing the gap between "not stored" and "stored". */
const FINISHED_DOWNLOAD_LINGER_MS = 5_000;
/**
 * The latest bytes of each download kept in memory: clients keeping up with it are sent these
 * (one copy for all of them) instead of each reading the temp file into buffers of its own.
 */
const SHARED_RECENT_BYTES = 2 * 1024 * 1024;

/** The answer of a client following a download in progress (it has answered: its size is known if the upstream said). */
function followAnswer(dl: Download): BlobAnswer {
  return {
    size: dl.size,
    cache: 'miss',
    available: () => dl.writer.written,
    open: (r) => dl.createReader(r?.start, r?.end),
    sendTo: (dest, r) => dl.sendTo(dest, r?.start, r?.end),
    release: async () => undefined,
  };
}

export class LocalDownloads implements Downloads {
  private readonly downloads = new Map<string, Download>();
  /** Blob bytes each upstream's downloads wrote (its sources and peers included), since start. */
  readonly fetchedBytes = new Map<string, number>();
  private readonly store: Store;
  private readonly log: Logger;
  private readonly access: RepositoryAccess;
  private readonly sizes: DescriptorSizes;
  private readonly limits: Pick<PullLimits, 'blobMaxSize'>;
  private readonly options: Partial<DownloadOptions>;
  private readonly events: UpstreamEvents | null;

  constructor(deps: {
    store: Store;
    log: Logger;
    access: RepositoryAccess;
    sizes: DescriptorSizes;
    limits: Pick<PullLimits, 'blobMaxSize'>;
    download?: Partial<DownloadOptions>;
    events?: UpstreamEvents | null;
  }) {
    this.store = deps.store;
    this.log = deps.log;
    this.access = deps.access;
    this.sizes = deps.sizes;
    this.limits = deps.limits;
    this.options = deps.download ?? {};
    this.events = deps.events ?? null;
  }

  // ---- Downloads (one process) -------------------------------------------------------------

  fetch(t: Target, d: Digest): Promise<BlobAnswer> {
    return this.follow(this.start(t, d));
  }

  turn(): Promise<Turn> {
    return Promise.resolve(null);
  }

  async tagMoved(): Promise<void> {
    // Nobody else to tell.
  }

  handOver(): Promise<number> {
    return Promise.resolve(0);
  }

  // ---- this process's downloads ------------------------------------------------------------

  /** A download still writing (a finished one lingers only to be joined by late starters). */
  inFlight(d: Digest): Download | undefined {
    const dl = this.downloads.get(d.value);
    return dl && dl.writer.state === 'writing' ? dl : undefined;
  }

  /** The download of `d` this process knows, writing or finished a moment ago (lingering). */
  latest(d: Digest): Download | undefined {
    return this.downloads.get(d.value);
  }

  /** Forgets a finished download (its blob was evicted since: it is fetched again). */
  forget(d: Digest, dl: Download): void {
    if (this.downloads.get(d.value) === dl) this.downloads.delete(d.value);
  }

  /** Joins a download for this repository: its own, or one it may read (repository-access.ts). */
  async join(t: Target, d: Digest, dl: Download): Promise<BlobAnswer> {
    await this.access.authorizeJoin(t, d, dl.repoKey);
    return this.follow(dl);
  }

  /** Answers once the download's upstream answered (rejects with its UpstreamError when it did not). */
  async follow(dl: Download): Promise<BlobAnswer> {
    await dl.ready;
    return followAnswer(dl);
  }

  /**
   * Starts downloading `d` for this repository. `shared`: into the shared temp file, which other
   * replicas follow and may take over (this replica holds the digest's lease); `onStart` runs once
   * the download is registered, before anything else watches it.
   */
  start(t: Target, d: Digest, opts: { shared?: boolean; onStart?: (dl: Download) => void } = {}): Download {
    const repo = repoOf(t);
    const expectedSize = this.sizes.get(repo, d.value);
    const maxSize = this.limits.blobMaxSize;
    // The writer refuses past the limit too: a second line behind the download's own check.
    const writer = this.store.blobs.createWriter(d, { keepRecent: SHARED_RECENT_BYTES, maxSize: expectedSize ?? maxSize, shared: opts.shared === true });
    const timeouts = t.client.config.timeouts;
    const dl = new Download(
      d.value,
      repoKey(t),
      writer,
      // Peers (node mode) only for a blob this repository links: a manifest from a trusted source
      // named it (docs/ARCHITECTURE.md rule 9; a peer is trusted by digest, not by name).
      t.client.blobSource(t.name, d.value, { peersAllowed: () => this.store.repos.hasLink(repo, d) }),
      this.log.child({ upstream: t.client.name, repo: t.name }),
      {
        ...this.options,
        maxSize,
        expectedSize,
        stall: { windowMs: timeouts.stall, minBytes: timeouts.minProgress },
        upstream: t.client.name,
      },
    );
    this.downloads.set(d.value, dl);
    opts.onStart?.(dl);
    const counted = (): void => {
      this.fetchedBytes.set(t.client.name, (this.fetchedBytes.get(t.client.name) ?? 0) + dl.writer.written);
    };
    dl.done.then(counted, counted);
    dl.done.then(
      async () => {
        await this.store.repos.link(repo, d).catch((err: unknown) => this.log.warn({ err }, 'linking blob failed'));
        setTimeout(() => {
          if (this.downloads.get(d.value) === dl) this.downloads.delete(d.value);
          dl.writer.release();
        }, FINISHED_DOWNLOAD_LINGER_MS).unref();
      },
      (err: unknown) => {
        if (this.downloads.get(d.value) === dl) this.downloads.delete(d.value);
        if (err instanceof DigestMismatchError || (err as { cause?: unknown } | null)?.cause instanceof DigestMismatchError) {
          this.events?.verificationFailed?.(t.client.name, t.name, d.value, (err as Error).message);
        }
      },
    );
    return dl;
  }

  /** Whether this process is downloading `digest` now (node mode keeps its peers' fetching lease meanwhile). */
  isDownloading(digest: string): boolean {
    return this.downloads.get(digest)?.writer.state === 'writing';
  }

  /** What each download writing now has done: the dashboard's "downloads in flight". */
  snapshot(): DownloadState[] {
    const out: DownloadState[] = [];
    for (const dl of this.downloads.values()) {
      if (dl.writer.state !== 'writing') continue;
      out.push({ digest: dl.digest, repository: dl.repoKey, written: dl.writer.written, size: dl.size, followers: dl.followerCount, attempts: dl.attempts, startedAt: dl.startedAt });
    }
    return out;
  }

  /** Upstream blob downloads writing now (metrics). */
  writing(): number {
    let n = 0;
    for (const dl of this.downloads.values()) if (dl.writer.state === 'writing') n++;
    return n;
  }

  /** Waits for downloads in progress (graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.downloads.values()].map((d) => d.done));
  }
}
