/**
 * Blobs of proxied repositories: stored → a hit (once this repository may read it:
 * repository-access.ts); being downloaded here → its clients follow that download; else one
 * download for the digest, started or followed through Downloads (this process alone, or the
 * replica holding the digest's lease in cluster mode). A Range past what the download wrote is
 * asked of the upstream at once (upstream-ranges.ts).
 */
import type { Digest } from '../oci/digest.js';
import type { SentRange, StoredBody } from '../storage/backend.js';
import type { Store } from '../storage/store.js';
import type { Downloads } from './downloads.js';
import type { LocalDownloads } from './local-downloads.js';
import type { BlobAnswer, CacheResult, Target } from './pull-types.js';
import type { RepositoryAccess } from './repository-access.js';
import type { EarlyRange, UpstreamRanges } from './upstream-ranges.js';

/** The answer for a blob in the store (a hit): the stored body itself, said to be one. */
function storedAnswer(stored: StoredBody): BlobAnswer {
  return Object.assign(stored, { cache: 'hit' as const });
}

export class BlobPulls {
  private readonly store: Store;
  private readonly access: RepositoryAccess;
  private readonly local: LocalDownloads;
  private readonly downloads: Downloads;
  private readonly ranges: UpstreamRanges | null;

  constructor(deps: { store: Store; access: RepositoryAccess; local: LocalDownloads; downloads: Downloads; ranges?: UpstreamRanges | null }) {
    this.store = deps.store;
    this.access = deps.access;
    this.local = deps.local;
    this.downloads = deps.downloads;
    this.ranges = deps.ranges ?? null;
  }

  /**
   * The blob for a client: stored, or followed as it downloads. A Range the download cannot answer
   * yet is asked of the upstream meanwhile (upstream-ranges.ts, lazy pulling). `range` is the
   * client's one range as sent (`bytes=S-E`, `S-`, `-N`), if that is what it sent: on a cold blob it
   * is asked of the upstream alongside the download's first request rather than after it, and
   * that GET is stopped if `gone` aborts (the client left) before the range is sent.
   */
  async get(t: Target, d: Digest, range?: SentRange, gone?: AbortSignal): Promise<BlobAnswer> {
    const found = await this.find(t, d, range, gone);
    if ('early' in found) return found.early;
    return this.ranges ? this.ranges.wrap(t, d, found) : found;
  }

  /** The answer, or (`early`) one already made by UpstreamRanges.first for a cold blob's range. */
  private async find(t: Target, d: Digest, range?: SentRange, gone?: AbortSignal): Promise<BlobAnswer | { early: BlobAnswer }> {
    const joined = this.local.inFlight(d);
    if (joined) {
      // Not answered yet (its upstream is slow to answer): the client's range goes to the upstream
      // now, as on a cold blob, rather than once the download has its first bytes.
      const early = joined.answered ? null : this.early(t, d, range, gone);
      return this.alongside(t, d, early, this.local.join(t, d, joined));
    }
    if (await this.store.blobs.present(d)) {
      await this.access.authorizeStored(t, d);
      const stored = await this.store.blobs.open(d);
      if (stored) return storedAnswer(stored);
    }
    // Joined even when it just finished: it was not stored yet when we looked. Unless it has been
    // evicted since (a small store): then it is fetched again.
    const finished = this.local.latest(d);
    if (finished && (finished.writer.state !== 'committed' || (await this.store.blobs.present(d)))) {
      return this.local.join(t, d, finished);
    }
    if (finished) this.local.forget(d, finished);
    // Cold here: the client's range goes to the upstream now, alongside the download's first request.
    const early = this.early(t, d, range, gone);
    return this.alongside(t, d, early, this.fetch(t, d));
  }

  /** The client's range asked of the upstream now (UpstreamRanges.early), if it is one to ask. */
  private early(t: Target, d: Digest, range?: SentRange, gone?: AbortSignal): EarlyRange | null {
    return range && this.ranges ? this.ranges.early(t, d, range, gone) : null;
  }

  /** `answer`, or with a range sent early, whichever of the two decides first (UpstreamRanges.first). */
  private async alongside(t: Target, d: Digest, early: EarlyRange | null, answer: Promise<BlobAnswer>): Promise<BlobAnswer | { early: BlobAnswer }> {
    return early ? { early: await this.ranges!.first(t, d, early, answer) } : answer;
  }

  /** One download for the digest, started or followed; stored meanwhile (by another replica): as any stored blob. */
  private async fetch(t: Target, d: Digest): Promise<BlobAnswer> {
    const answer = await this.downloads.fetch(t, d);
    if (answer !== 'stored') return answer;
    const found = await this.find(t, d);
    return 'early' in found ? found.early : found;
  }

  /** Size and whether it is stored, without downloading (HEAD). */
  async stat(t: Target, d: Digest): Promise<{ size: number | null; cache: CacheResult }> {
    const dl = this.local.inFlight(d);
    if (dl) {
      await this.access.authorizeJoin(t, d, dl.repoKey);
      await dl.ready;
      return { size: dl.size, cache: 'miss' };
    }
    const info = await this.store.blobs.statPresent(d);
    if (info) {
      await this.access.authorizeStored(t, d);
      return { size: info.size, cache: 'hit' };
    }
    const { size } = await t.client.headBlob(t.name, d.value);
    return { size, cache: 'miss' };
  }

  /**
   * A blob as a peer asks for it (node mode): stored here, or being downloaded here, whatever the
   * repository (peers trust digests, and check names themselves); never fetched for the peer.
   * Null when neither.
   */
  async forPeer(d: Digest): Promise<BlobAnswer | null> {
    const dl = this.local.inFlight(d);
    if (dl && !dl.writer.withhold) {
      try {
        return await this.local.follow(dl);
      } catch {
        return null;
      }
    }
    const stored = await this.store.blobs.open(d);
    if (!stored) return null;
    return storedAnswer(stored);
  }
}
