/**
 * Per-repository records: tag → digest links, which digests a repository has, and the last
 * complete tags list (layout: paths.ts). Each is written whole (records.ts: a temp file and a
 * rename, or one PUT of an object), so a crash never leaves half a record.
 */
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import { readJsonRecord, type Records } from './records.js';
import { recordKeys as k } from './paths.js';

export interface TagLink {
  digest: string;
  mediaType: string;
  size: number;
}

export interface RepoRef {
  upstream: string;
  name: string;
}

/**
 * A cached tag its upstream no longer has (it answered 404 / NAME_UNKNOWN / MANIFEST_UNKNOWN),
 * kept and served from the store (lib/cache/gone-tags.ts).
 */
export interface GoneRecord {
  /** The digest the tag named when the upstream lost it. */
  digest: string;
  /** When the upstream was first seen not to have it (ms since epoch). */
  since: number;
  /** What the upstream answered, as logged. */
  reason: string;
  /** Every stored digest the image is made of (manifest, child manifests, config, layers). */
  held: string[];
  /** Those of `held` this record pinned (they were not pinned before): unpinned when it goes. */
  pinned: string[];
}

/** At most this many digests in one record's lists (a manifest names at most cache.manifestMaxReferences). */
const GONE_MAX_DIGESTS = 100_000;

function digestList(v: unknown): string[] | null {
  if (!Array.isArray(v) || v.length > GONE_MAX_DIGESTS) return null;
  const out: string[] = [];
  for (const x of v) {
    const d = typeof x === 'string' ? tryParseDigest(x) : null;
    if (!d) return null;
    out.push(d.value);
  }
  return out;
}

/**
 * A gone record as read back from the store (shared by replicas, written by other processes):
 * trusted for nothing but what it says about this tag, and only if every field parses. Null otherwise.
 */
export function parseGoneRecord(raw: unknown): GoneRecord | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const r = raw as Record<string, unknown>;
  const digest = typeof r.digest === 'string' ? tryParseDigest(r.digest) : null;
  if (!digest || typeof r.since !== 'number' || !Number.isFinite(r.since) || r.since < 0) return null;
  const held = digestList(r.held);
  const pinned = digestList(r.pinned);
  if (!held || !pinned) return null;
  const reason = typeof r.reason === 'string' ? r.reason.slice(0, 300) : '';
  return { digest: digest.value, since: r.since, reason, held, pinned };
}

export class RepoStore {
  /** Links known to exist: a hit on the hot path costs no syscall. unlink() forgets them. */
  private readonly knownLinks = new LRUCache<string, true>(upTo(200_000));

  constructor(private readonly records: Records) {}

  async getTag(repo: RepoRef, tag: string): Promise<TagLink | null> {
    const link = await readJsonRecord<TagLink>(this.records, k.tag(repo, tag));
    if (!link || typeof link.digest !== 'string' || typeof link.mediaType !== 'string' || typeof link.size !== 'number') {
      return null;
    }
    return link;
  }

  async setTag(repo: RepoRef, tag: string, link: TagLink): Promise<void> {
    await this.records.write(k.tag(repo, tag), JSON.stringify(link));
  }

  /** Whether the link is known to exist without a look at the store (hasLink found or wrote it, and no unlink since). */
  knownLink(repo: RepoRef, d: Digest): boolean {
    return this.knownLinks.get(`${repo.upstream}/${repo.name}@${d.value}`) === true;
  }

  async hasLink(repo: RepoRef, d: Digest): Promise<boolean> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return true;
    if (!(await this.records.exists(k.link(repo, d)))) return false;
    this.knownLinks.set(key, true);
    return true;
  }

  async link(repo: RepoRef, d: Digest): Promise<void> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return;
    await this.records.write(k.link(repo, d), '');
    this.knownLinks.set(key, true);
  }

  async getTagsList(repo: RepoRef): Promise<{ tags: string[]; fetchedAt: number } | null> {
    const rec = await readJsonRecord<{ tags: string[]; fetchedAt: number }>(this.records, k.tagsList(repo));
    if (!rec || !Array.isArray(rec.tags)) return null;
    return rec;
  }

  async setTagsList(repo: RepoRef, tags: string[], fetchedAt: number): Promise<void> {
    await this.records.write(k.tagsList(repo), JSON.stringify({ tags, fetchedAt }));
  }

  // ---- tags deleted upstream, kept here (lib/cache/gone-tags.ts) -----------------------------

  async getGone(repo: RepoRef, tag: string): Promise<GoneRecord | null> {
    return parseGoneRecord(await readJsonRecord<unknown>(this.records, k.goneTag(repo, tag)));
  }

  async setGone(repo: RepoRef, tag: string, rec: GoneRecord): Promise<void> {
    await this.records.write(k.goneTag(repo, tag), JSON.stringify(rec));
  }

  /** Removes the record; whether there was one. */
  async deleteGone(repo: RepoRef, tag: string): Promise<boolean> {
    return this.records.remove(k.goneTag(repo, tag));
  }

  /** Whether a gone record exists for the tag (one stat: the revalidation path asks it). */
  async hasGone(repo: RepoRef, tag: string): Promise<boolean> {
    return this.records.exists(k.goneTag(repo, tag));
  }

  /** Every gone record (a walk of gone/, which holds nothing else), unsorted; unreadable records are left out. */
  async listGone(): Promise<Array<{ repo: RepoRef; tag: string; record: GoneRecord }>> {
    const out: Array<{ repo: RepoRef; tag: string; record: GoneRecord }> = [];
    const walk = async (upstream: string, parts: string[]): Promise<void> => {
      const entries = await this.records.list([k.gone, upstream, ...parts].join('/'));
      if (parts.length > 0 && entries.includes('_tags')) {
        const repo = { upstream, name: parts.join('/') };
        for (const tag of await this.records.list(`${k.gone}/${upstream}/${repo.name}/_tags`)) {
          const record = await this.getGone(repo, tag);
          if (record) out.push({ repo, tag, record });
        }
      }
      for (const e of entries) if (!e.startsWith('_')) await walk(upstream, [...parts, e]);
    };
    for (const upstream of await this.records.list(k.gone)) await walk(upstream, []);
    return out;
  }

  // ---- hosted and seeded repositories (pushes) ---------------------------------------------

  /** Tags stored for a repository (pushed, or cached from pulls), unsorted. */
  async listStoredTags(repo: RepoRef): Promise<string[]> {
    return this.records.list(`${k.repo(repo)}/_tags`);
  }

  async deleteTag(repo: RepoRef, tag: string): Promise<boolean> {
    return this.records.remove(k.tag(repo, tag));
  }

  /** Forgets that the repository has this digest (the bytes stay: other repositories may share them). */
  async unlink(repo: RepoRef, d: Digest): Promise<boolean> {
    this.knownLinks.delete(`${repo.upstream}/${repo.name}@${d.value}`);
    return this.records.remove(k.link(repo, d));
  }

  /** Every digest this repository links (blobs and manifests). */
  async listLinks(repo: RepoRef): Promise<string[]> {
    const dir = `${k.repo(repo)}/_links`;
    const out: string[] = [];
    for (const alg of await this.records.list(dir)) for (const hex of await this.records.list(`${dir}/${alg}`)) out.push(`${alg}:${hex}`);
    return out;
  }

  /** Whether any repository (hosted, cached or seeded) still links this digest. */
  async linkedAnywhere(d: Digest): Promise<boolean> {
    for (const repo of await this.listRepositories()) if (await this.hasLink(repo, d)) return true;
    return false;
  }

  /** Whether anything was ever stored for this repository (a tag or a link). */
  async exists(repo: RepoRef): Promise<boolean> {
    return (await this.records.list(k.repo(repo))).some((e) => e === '_tags' || e === '_links');
  }

  /** Records that manifest `referrer` names `subject` as its subject. */
  async addReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    await this.records.write(`${k.referrers(repo, subject)}/${referrer.algorithm}/${referrer.hex}`, '');
  }

  async removeReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    await this.records.remove(`${k.referrers(repo, subject)}/${referrer.algorithm}/${referrer.hex}`);
  }

  /** Digests of the manifests pushed into this repository with `subject` as their subject. */
  async listReferrers(repo: RepoRef, subject: Digest): Promise<string[]> {
    const dir = k.referrers(repo, subject);
    const out: string[] = [];
    for (const alg of await this.records.list(dir)) {
      for (const hex of await this.records.list(`${dir}/${alg}`)) out.push(`${alg}:${hex}`);
    }
    return out;
  }

  /** The upstream's last referrers answer for `subject`: the descriptors of its index. */
  async getCachedReferrers(repo: RepoRef, subject: Digest): Promise<{ manifests: unknown[]; fetchedAt: number } | null> {
    const rec = await readJsonRecord<{ manifests: unknown[]; fetchedAt: number }>(this.records, k.referrersCache(repo, subject));
    if (!rec || !Array.isArray(rec.manifests)) return null;
    return rec;
  }

  async setCachedReferrers(repo: RepoRef, subject: Digest, manifests: unknown[], fetchedAt: number): Promise<void> {
    await this.records.write(k.referrersCache(repo, subject), JSON.stringify({ manifests, fetchedAt }));
  }

  /**
   * Every repository with a tag or a link, as `{ upstream, name }` (upstream `_hosted` for hosted
   * ones). Walks repositories/ and stops at the first `_` directory of each repository.
   */
  async listRepositories(): Promise<RepoRef[]> {
    const out: RepoRef[] = [];
    const walk = async (upstream: string, parts: string[]): Promise<void> => {
      const entries = await this.records.list([k.repositories, upstream, ...parts].join('/'));
      if (parts.length > 0 && entries.some((e) => e === '_tags' || e === '_links')) out.push({ upstream, name: parts.join('/') });
      for (const e of entries) if (!e.startsWith('_')) await walk(upstream, [...parts, e]);
    };
    for (const upstream of await this.records.list(k.repositories)) await walk(upstream, []);
    return out;
  }
}
