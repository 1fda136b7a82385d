/**
 * Manifests by tag: which digest a tag of a proxied repository names now, and its manifest.
 *
 *   fresh link → hit; stale link → HEAD upstream: same digest → revalidated, changed → GET (miss);
 *   upstream failing → stored answer, marked stale; upstream no longer having it (404) → the stored
 *   answer, marked and recorded as gone, or forgotten (gone-tags.ts, cache.gonePolicies); a gone
 *   tag the upstream has again → followed, record removed. Fresh for the tag's tier (tag-policy.ts); a
 *   `forever` tier never goes stale. A hot tag is revalidated in the background before its TTL ends
 *   (refresh-ahead.ts), so its clients never wait on that HEAD.
 *
 * Each answer is memoized (lru-cache fetch: concurrent requests for one tag share one resolution)
 * for as long as it is fresh. In cluster mode one replica at a time asks the upstream about a tag
 * (Downloads.turn); the others then find its answer in the shared state.
 */
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import type { Logger } from 'pino';
import { parseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { Metadata } from '../metadata/metadata.js';
import type { UpstreamHealth } from '../metadata/upstream-health.js';
import type { Store } from '../storage/store.js';
import type { TagLink } from '../storage/repo-store.js';
import { isTransient, offlineMessage, UpstreamError } from '../upstream/errors.js';
import type { Downloads } from './downloads.js';
import { goneActionFor, type GoneTags } from './gone-tags.js';
import type { Manifests } from './manifests.js';
import { repoOf, type CacheResult, type Clock, type ManifestAnswer, type Target, type UpstreamEvents } from './pull-types.js';
import { RefreshAhead, type RefreshAheadOptions } from './refresh-ahead.js';
import { tagTTLFor } from './tag-policy.js';

interface TagAnswer {
  link: TagLink;
  how: CacheResult;
  staleReason?: string;
  /** The upstream deleted the tag; kept since then (ms since epoch). */
  goneSince?: number;
}

/** An upstream answer saying it does not have the tag, or the repository (404, NAME_UNKNOWN, MANIFEST_UNKNOWN). */
function isGoneAnswer(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError && (err.kind === 'not_found' || err.upstreamCode === 'NAME_UNKNOWN' || err.upstreamCode === 'MANIFEST_UNKNOWN');
}

/** After the upstream failed, a stale tag answer is reused this long before asking again. */
const STALE_RETRY_MS = 10_000;
/** Resolutions of one request restarted because its tag was forgotten meanwhile (see fetchTag). */
const MAX_RESTARTS = 3;

export class TagResolver {
  private readonly store: Store;
  private readonly metadata: Metadata;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly health: UpstreamHealth | null;
  private readonly quotaTTLMultiplier: number;
  private readonly manifests: Manifests;
  private readonly turns: Pick<Downloads, 'turn'>;
  private readonly gone: GoneTags;
  private readonly tags: LRUCache<string, TagAnswer, { target: Target; tag: string }>;
  /**
   * The reasons lru-cache aborted resolutions with (the tag was deleted, or evicted, while being
   * resolved): a rejection with one of these is that abort, whatever its message.
   */
  private readonly aborts = new WeakSet<object>();
  /** Hot tags revalidated before their TTL ends (cache.refreshAhead); null: off. */
  readonly refreshAhead: RefreshAhead | null;
  /** Background revalidations in flight, by tag key: a request finding the answer expired waits for it instead of asking again. */
  private readonly refreshing = new Map<string, Promise<void>>();
  /** Upstream facts for lib/events (pull-types.ts); null: nobody listens. */
  private readonly events: UpstreamEvents | null;

  constructor(deps: {
    store: Store;
    metadata: Metadata;
    log: Logger;
    clock: Clock;
    health: UpstreamHealth | null;
    /** Tag TTLs are multiplied by this while an upstream's quota is low. */
    quotaTTLMultiplier: number;
    manifests: Manifests;
    turns: Pick<Downloads, 'turn'>;
    gone: GoneTags;
    refreshAhead: RefreshAheadOptions | null;
    events?: UpstreamEvents | null;
  }) {
    this.store = deps.store;
    this.metadata = deps.metadata;
    this.log = deps.log;
    this.clock = deps.clock;
    this.health = deps.health;
    this.quotaTTLMultiplier = deps.quotaTTLMultiplier;
    this.manifests = deps.manifests;
    this.turns = deps.turns;
    this.gone = deps.gone;
    this.refreshAhead = deps.refreshAhead?.enabled ? new RefreshAhead(deps.refreshAhead) : null;
    this.events = deps.events ?? null;
    this.tags = new LRUCache({
      ...upTo(10_000),
      perf: this.clock,
      fetchMethod: async (key, _stale, { options, context, signal }) => {
        signal.addEventListener('abort', () => {
          if (typeof signal.reason === 'object' && signal.reason !== null) this.aborts.add(signal.reason as object);
        }, { once: true });
        // A background revalidation of this tag still running: its outcome is this answer's.
        const pending = this.refreshing.get(key);
        if (pending) await pending;
        const { answer, ttl } = await this.resolveTag(context.target, context.tag);
        options.ttl = Math.max(1, ttl);
        return answer;
      },
    });
  }

  async getManifest(t: Target, tag: string): Promise<ManifestAnswer> {
    const key = `${t.client.name}/${t.name}:${tag}`;
    // The warm path: a fresh memoized answer whose manifest is in memory, answered without an await.
    const warm = this.fromMemory(key, t, tag);
    if (warm) return warm;
    const status: LRUCache.Status<string, TagAnswer> = {};
    const answer = await this.fetchTag(key, t, tag, status);
    if (!answer) throw new OciError('MANIFEST_UNKNOWN', `manifest ${t.name}:${tag} unknown`);
    // A memoized stale answer stays stale; otherwise a memory hit is a hit.
    const how = answer.how === 'stale' ? 'stale' : status.fetch === 'hit' ? 'hit' : answer.how;
    if (how === 'hit' && status.fetch === 'hit') this.noteHit(key, t, tag, status);
    const stored = await this.manifests.readStored(parseDigest(answer.link.digest));
    if (!stored) {
      // The bytes went missing under a cached link (deleted by hand, or evicted): forget and retry once.
      this.tags.delete(key);
      const again = await this.fetchTag(key, t, tag);
      const bytes = again && (await this.manifests.readStored(parseDigest(again.link.digest)));
      if (!again || !bytes) throw new OciError('MANIFEST_UNKNOWN', `manifest ${t.name}:${tag} unknown`);
      const retried: ManifestAnswer = { digest: again.link.digest, mediaType: bytes.mediaType, size: bytes.bytes.length, bytes: bytes.bytes, cache: again.how };
      if (again.how === 'stale' && again.staleReason) retried.staleReason = again.staleReason;
      if (again.goneSince !== undefined) retried.goneSince = again.goneSince;
      return retried;
    }
    const result: ManifestAnswer = {
      digest: answer.link.digest,
      mediaType: stored.mediaType,
      size: stored.bytes.length,
      bytes: stored.bytes,
      cache: how,
    };
    if (answer.how === 'stale' && answer.staleReason) result.staleReason = answer.staleReason;
    if (answer.goneSince !== undefined) result.goneSince = answer.goneSince;
    return result;
  }

  /**
   * getManifest's answer when it needs no await: the tag's memoized answer is fresh (a hit, exactly
   * what `fetch` would return without calling the upstream or the store) and its manifest is in
   * the manifests' memory. Null otherwise: the full path then runs as it always did (a stale entry
   * is left in place for it, not deleted by this look).
   */
  private fromMemory(key: string, t: Target, tag: string): ManifestAnswer | null {
    const status: LRUCache.Status<string, TagAnswer> = {};
    const answer = this.tags.get(key, { status, noDeleteOnStaleGet: true });
    if (answer === undefined || status.get !== 'hit') return null;
    const stored = this.manifests.inMemory(answer.link.digest);
    if (!stored) return null;
    const how = answer.how === 'stale' ? 'stale' : 'hit';
    if (how === 'hit') this.noteHit(key, t, tag, status);
    const result: ManifestAnswer = { digest: answer.link.digest, mediaType: stored.mediaType, size: stored.bytes.length, bytes: stored.bytes, cache: how };
    if (answer.how === 'stale' && answer.staleReason) result.staleReason = answer.staleReason;
    if (answer.goneSince !== undefined) result.goneSince = answer.goneSince;
    return result;
  }

  /** Refresh-ahead counts a request answered from memory (and may start a background revalidation). */
  private noteHit(key: string, t: Target, tag: string, status: LRUCache.Status<string, TagAnswer>): void {
    if (!this.refreshAhead || status.start === undefined || status.ttl === undefined || status.remainingTTL === undefined) return;
    if (this.refreshAhead.note(key, status.start, status.ttl, status.remainingTTL)) this.startRefresh(key, t, tag);
  }

  /** Forgets the memoized answer for a tag: a push into this upstream's namespace just moved it. */
  forget(upstream: string, name: string, tag: string): void {
    this.tags.delete(`${upstream}/${name}:${tag}`);
  }

  /**
   * The memoized answer for a tag. A tag forgotten while it is being resolved (a push moved it, here
   * or on another replica) aborts that resolution (lru-cache rejects it with its fetch signal's
   * reason): its answer may predate the move, so the tag is resolved again rather than failing the request.
   */
  private async fetchTag(key: string, t: Target, tag: string, status?: LRUCache.Status<string, TagAnswer>): Promise<TagAnswer | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.tags.fetch(key, { context: { target: t, tag }, ...(status ? { status } : {}) });
      } catch (err) {
        if (attempt >= MAX_RESTARTS || typeof err !== 'object' || err === null || !this.aborts.has(err)) throw err;
      }
    }
  }

  private async resolveTag(t: Target, tag: string, waited = false): Promise<{ answer: TagAnswer; ttl: number }> {
    const repo = repoOf(t);
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
    if (waited) return this.askUpstreamForTag(t, tag, link, haveBytes, memo);
    // Cluster mode: one replica at a time asks the upstream about a tag; the others wait for it
    // and then find its answer in the shared state (one HEAD or GET per tag for the cluster).
    const turn = await this.turns.turn(`tag:${repo.upstream}/${repo.name}:${tag}`);
    if (turn === 'waited') return this.resolveTag(t, tag, true);
    try {
      return await this.askUpstreamForTag(t, tag, link, haveBytes, memo);
    } finally {
      await turn?.release();
    }
  }

  /** The upstream part of resolveTag: revalidate a stored tag with HEAD, or fetch its manifest. */
  private async askUpstreamForTag(t: Target, tag: string, link: TagLink | null, haveBytes: boolean, memo: number): Promise<{ answer: TagAnswer; ttl: number }> {
    const repo = repoOf(t);
    if (link && haveBytes) {
      try {
        const head = await t.client.headManifest(t.name, tag);
        if (head.digest === link.digest) {
          // Confirmed only by a cache that could not confirm it itself (another stevedore serving
          // stale): stale here too, and asked again soon, as if the upstream had failed.
          if (head.stale) return this.staleTag(t, tag, link, head.stale, memo);
          // The upstream has it (again): a tag recorded as gone is followed again.
          await this.gone.clear(repo, tag, 'followed');
          await this.metadata.setTagChecked(repo.upstream, repo.name, tag, link.digest, this.clock.now());
          return { answer: { link, how: 'revalidated' }, ttl: memo };
        }
        // Changed upstream (or no digest in the HEAD answer): fetch the new manifest below.
      } catch (err) {
        if (isTransient(err)) return this.staleTag(t, tag, link, err.message, memo);
        if (isGoneAnswer(err)) return this.goneTag(t, tag, link, err, memo);
        throw err;
      }
    }
    let fetched;
    try {
      fetched = await t.client.getManifest(t.name, tag, this.manifests.maxSize);
    } catch (err) {
      if (link && haveBytes && isTransient(err)) return this.staleTag(t, tag, link, err.message, memo);
      throw err;
    }
    const stored = await this.manifests.save(t, fetched.bytes, fetched.mediaType, null, fetched.digest);
    const newLink: TagLink = { digest: stored.digest, mediaType: stored.mediaType, size: fetched.bytes.length };
    await this.store.repos.setTag(repo, tag, newLink);
    if (link && link.digest !== newLink.digest) this.events?.tagMoved?.(t.client.name, t.name, tag, link.digest, newLink.digest);
    // The answer of a cache serving stale: stored, passed on as stale, and asked for again soon.
    if (fetched.stale) return this.staleTag(t, tag, newLink, fetched.stale, memo);
    // Re-created upstream (or moved): followed; a record of it as gone is removed.
    if (link) await this.gone.clear(repo, tag, 'followed');
    await this.metadata.setTagChecked(repo.upstream, repo.name, tag, newLink.digest, this.clock.now());
    return { answer: { link: newLink, how: 'miss' }, ttl: memo };
  }

  /**
   * Refresh-ahead: revalidates a hot tag in the background (one HEAD; a GET when it moved), so that
   * when its memoized answer expires the tag's record is already fresh. Like any revalidation it
   * respects the upstream's state: nothing is asked during a cool-down (429), while the breaker is
   * open, or while the quota is low (then the TTL is stretched instead, see resolveTag); in cluster
   * mode only the replica that gets the tag's turn asks.
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
    const repo = repoOf(t);
    const tier = tagTTLFor(t.client.config, t.name, tag);
    if (tier === 'forever' || t.client.offline) return;
    if (this.health) {
      const [gate, quota] = await Promise.all([this.health.gate(repo.upstream), this.health.quotaState(repo.upstream)]);
      if (!gate.open || quota?.low) return;
    }
    const link = await this.store.repos.getTag(repo, tag);
    if (!link || !(await this.store.blobs.present(parseDigest(link.digest)))) return;
    const turn = await this.turns.turn(`tag:${repo.upstream}/${repo.name}:${tag}`);
    if (turn === 'waited') return;
    try {
      // Another replica (or a request on this one) checked it recently: not due yet, whatever this
      // replica's memoized answer says.
      const checked = await this.metadata.tagCheckedAt(repo.upstream, repo.name, tag);
      const window = Math.min(this.refreshAhead!.options.before, tier / 2);
      if (checked && checked.digest === link.digest && this.clock.now() - checked.at < tier - window) return;
      await this.askUpstreamForTag(t, tag, link, true, tier);
    } finally {
      await turn?.release();
    }
  }

  /**
   * The upstream does not have a stored tag (404 / NAME_UNKNOWN / MANIFEST_UNKNOWN): a tag pushed
   * here (seeded: pinned, no gone record) is ours to serve; otherwise cache.gonePolicies decides.
   * keep: the stored answer, marked stale with when it went, and asked again after the tag's TTL
   * (a re-created tag is followed then); forget: the tag is dropped and the upstream's answer stands.
   */
  private async goneTag(t: Target, tag: string, link: TagLink, err: UpstreamError, memo: number): Promise<{ answer: TagAnswer; ttl: number }> {
    const repo = repoOf(t);
    const existing = await this.gone.get(repo, tag);
    if (!existing && this.store.blobs.isPinned(link.digest) && !(await this.gone.holds(link.digest))) return { answer: { link, how: 'hit' }, ttl: memo };
    if (goneActionFor(t.client.config, t.name) === 'forget') {
      await this.gone.clear(repo, tag, 'forgotten');
      await this.store.repos.deleteTag(repo, tag);
      this.log.info({ upstream: t.client.name, repo: t.name, tag, digest: link.digest, reason: err.message }, 'tag deleted upstream: forgotten (cache.gonePolicies: forget)');
      this.events?.gone?.(t.client.name, t.name, { tag, digest: link.digest }, err.message);
      throw err;
    }
    const record = await this.gone.keep(repo, tag, link, err.message, existing);
    // Newly gone (not a record kept from an earlier answer): an event (lib/events).
    if (existing?.digest !== link.digest) this.events?.gone?.(t.client.name, t.name, { tag, digest: link.digest }, err.message);
    const since = new Date(record.since).toISOString();
    const reason = `deleted upstream since ${since}`;
    this.log.warn({ upstream: t.client.name, repo: t.name, tag, digest: link.digest, goneSince: since, reason: err.message }, 'tag deleted upstream; serving stored tag');
    return { answer: { link, how: 'stale', staleReason: reason, goneSince: record.since }, ttl: memo };
  }

  private staleTag(t: Target, tag: string, link: TagLink, reason: string, ttl: number): { answer: TagAnswer; ttl: number } {
    this.log.warn({ upstream: t.client.name, repo: t.name, tag, reason }, 'upstream failing; serving stored tag');
    return { answer: { link, how: 'stale', staleReason: reason }, ttl: Math.min(STALE_RETRY_MS, ttl) };
  }
}
