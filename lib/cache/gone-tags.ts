/**
 * Cached tags their upstream deleted (issue 30): a publisher removing images (Bitnami's catalogue,
 * September 2025) leaves a cache as the last copy. When the upstream answers a revalidation of a
 * stored tag with 404 (NAME_UNKNOWN / MANIFEST_UNKNOWN), the first of `cache.gonePolicies` whose
 * repository matches decides (no match: keep):
 *
 *   keep    the stored tag goes on being served, marked (`Warning: 110`, a log line); a record
 *           (store: gone/<upstream>/<name>/_tags/<tag>, paths.ts) says when it went, and what is
 *           stored of the image (manifest, child manifests, config, layers) is pinned while it is
 *           gone: the store's bound (storage.maxSize) never evicts it, so it cannot vanish silently
 *   forget  the stored tag is dropped: the pull fails as the upstream's answer did (MANIFEST_UNKNOWN)
 *
 * A tag that moved upstream is followed (the old digest is not kept under the tag: it stays readable
 * by digest while cached, as before). A tag deleted and later re-created upstream is followed again:
 * its record is removed and what it pinned is returned to the evictable cache (unless another
 * gone tag holds it too: then that record takes the pin over).
 *
 * The records live in the store, beside the tags they describe: they survive restarts, and replicas
 * sharing a store (cluster mode) share them as they share tags. A record read back is parsed whole
 * (repo-store.ts parseGoneRecord): it is trusted only to say that this tag is gone and since when;
 * what is served is still the stored tag's digest-verified content.
 */
import type { Logger } from 'pino';
import type { GonePolicy, UpstreamConfig } from '../config/config.js';
import { parseDigest, tryParseDigest } from '../oci/digest.js';
import { parseManifest } from '../oci/media-types.js';
import { compilePattern } from '../oci/repository-pattern.js';
import type { Store } from '../storage/store.js';
import type { GoneRecord, RepoRef, TagLink } from '../storage/repo-store.js';
import type { Manifests } from './manifests.js';
import type { Clock } from './pull-types.js';

export type GoneAction = GonePolicy['action'];

const compiled = new WeakMap<readonly GonePolicy[], Array<{ repository: RegExp; action: GoneAction }>>();

/** What is done with `name` (as the upstream knows it) of `upstream` when the upstream deleted a cached tag: the first matching policy's action, else keep. */
export function goneActionFor(upstream: Pick<UpstreamConfig, 'name' | 'gonePolicies'>, name: string): GoneAction {
  let list = compiled.get(upstream.gonePolicies);
  if (!list) {
    list = upstream.gonePolicies.map((p) => ({ repository: compilePattern(p.repository), action: p.action }));
    compiled.set(upstream.gonePolicies, list);
  }
  const repository = `${upstream.name}/${name}`;
  return list.find((p) => p.repository.test(repository))?.action ?? 'keep';
}

/** One gone tag, as `ls --gone`, the dashboard and doctor show it. */
export interface GoneTag {
  /** `<upstream>/<name>`. */
  repository: string;
  tag: string;
  digest: string;
  since: number;
  reason: string;
  /** Digests of the image kept in the store, and their bytes (as far as this process's index knows). */
  blobs: number;
  bytes: number;
}

/** The gone list is re-read from the store at most this often (metrics, dashboard). */
const LIST_FOR_MS = 10_000;
/** Child manifests of an index followed when finding what an image is made of. */
const MAX_DEPTH = 2;

export class GoneTags {
  private readonly store: Store;
  private readonly manifests: Manifests;
  private readonly log: Logger;
  private readonly clock: Clock;
  private listed: { at: number; value: Promise<GoneTag[]> } | null = null;

  constructor(deps: { store: Store; manifests: Manifests; log: Logger; clock: Clock }) {
    this.store = deps.store;
    this.manifests = deps.manifests;
    this.log = deps.log;
    this.clock = deps.clock;
  }

  get(repo: RepoRef, tag: string): Promise<GoneRecord | null> {
    return this.store.repos.getGone(repo, tag);
  }

  /**
   * The upstream no longer has this stored tag and its policy is keep: records when it went (once:
   * an existing record for the same digest is returned as it is) and pins what is stored of it.
   */
  async keep(repo: RepoRef, tag: string, link: TagLink, reason: string, existing: GoneRecord | null): Promise<GoneRecord> {
    if (existing?.digest === link.digest) return existing;
    if (existing) await this.clear(repo, tag, 'moved');
    const held = await this.contentOf(link.digest);
    const pinned: string[] = [];
    for (const digest of held) {
      const d = parseDigest(digest);
      if (this.store.blobs.isPinned(digest) || (await this.store.blobs.pinnedOnDisk(d))) continue;
      await this.store.blobs.pin(d);
      pinned.push(digest);
    }
    const record: GoneRecord = { digest: link.digest, since: this.clock.now(), reason: reason.slice(0, 300), held, pinned };
    await this.store.repos.setGone(repo, tag, record);
    this.listed = null;
    this.log.warn(
      { upstream: repo.upstream, repo: repo.name, tag, digest: link.digest, reason, kept: held.length, pinned: pinned.length },
      'tag deleted upstream: kept, served from the store (cache.gonePolicies: keep)',
    );
    return record;
  }

  /**
   * Removes the tag's record, if any (the upstream has the tag again, it moved, or the policy is
   * forget), and returns what it pinned to the evictable cache, unless another gone tag holds it.
   * Whether there was a record.
   */
  async clear(repo: RepoRef, tag: string, why: 'followed' | 'moved' | 'forgotten'): Promise<boolean> {
    if (!(await this.store.repos.hasGone(repo, tag))) return false;
    const record = await this.store.repos.getGone(repo, tag);
    await this.store.repos.deleteGone(repo, tag);
    this.listed = null;
    if (record && record.pinned.length > 0) {
      // Another gone tag holding the same content (a shared base layer) takes its pin over.
      const others = await this.store.repos.listGone();
      for (const digest of record.pinned) {
        const other = others.find((o) => o.record.held.includes(digest));
        if (other) {
          if (!other.record.pinned.includes(digest)) {
            other.record.pinned.push(digest);
            await this.store.repos.setGone(other.repo, other.tag, other.record);
          }
          continue;
        }
        await this.store.blobs.unpin(parseDigest(digest));
      }
    }
    this.log.info(
      { upstream: repo.upstream, repo: repo.name, tag, digest: record?.digest, goneSince: record ? new Date(record.since).toISOString() : undefined, why },
      why === 'followed' ? 'tag deleted upstream is back: followed again' : why === 'moved' ? 'tag deleted upstream moved: its record is dropped' : 'tag deleted upstream forgotten (cache.gonePolicies: forget)',
    );
    return true;
  }

  /** Whether another gone tag holds this digest (its pin may be that record's, not a push's). */
  async holds(digest: string): Promise<boolean> {
    return (await this.store.repos.listGone()).some((g) => g.record.held.includes(digest));
  }

  /** Every gone tag, oldest first (the store's records, re-read at most every 10 s). */
  list(): Promise<GoneTag[]> {
    const now = Date.now();
    if (!this.listed || now - this.listed.at > LIST_FOR_MS) {
      const value = this.readList().catch((err: unknown) => {
        this.log.warn({ err }, 'could not list the tags deleted upstream');
        this.listed = null;
        return [];
      });
      this.listed = { at: now, value };
    }
    return this.listed.value;
  }

  /** How many tags are gone (metrics). */
  async count(): Promise<number> {
    return (await this.list()).length;
  }

  private async readList(): Promise<GoneTag[]> {
    const out: GoneTag[] = [];
    for (const { repo, tag, record } of await this.store.repos.listGone()) {
      let bytes = 0;
      for (const d of record.held) bytes += this.store.blobs.sizeOf(d) ?? 0;
      out.push({ repository: `${repo.upstream}/${repo.name}`, tag, digest: record.digest, since: record.since, reason: record.reason, blobs: record.held.length, bytes });
    }
    return out.sort((a, b) => a.since - b.since || a.repository.localeCompare(b.repository) || a.tag.localeCompare(b.tag));
  }

  /** The stored digests an image is made of: its manifest, child manifests (an index's), config and layers. */
  private async contentOf(digest: string): Promise<string[]> {
    const out = new Set<string>();
    const visit = async (value: string, depth: number): Promise<void> => {
      const d = tryParseDigest(value);
      if (!d || out.has(d.value) || !(await this.store.blobs.present(d))) return;
      out.add(d.value);
      if (depth > MAX_DEPTH) return;
      const stored = await this.manifests.readStored(d);
      if (!stored) return; // a blob
      let parsed;
      try {
        parsed = parseManifest(stored.bytes, stored.mediaType);
      } catch {
        return;
      }
      for (const m of parsed.manifests) await visit(m.digest, depth + 1);
      for (const b of parsed.blobs) {
        const bd = tryParseDigest(b.digest);
        if (bd && !out.has(bd.value) && (await this.store.blobs.present(bd))) out.add(bd.value);
      }
    };
    await visit(digest, 0);
    return [...out];
  }
}
