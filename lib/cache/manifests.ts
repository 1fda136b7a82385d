/**
 * Manifests of proxied repositories, by digest: from memory or the store (a hit, once this
 * repository may read it: repository-access.ts), else fetched from the upstream, verified against
 * the digest asked for and the one the upstream claimed, and stored with everything it references
 * linked to the repository. Manifests by tag come through tag-resolver.ts, which stores what it
 * fetches here too (save).
 */
import { LRUCache } from 'lru-cache';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { parseManifest } from '../oci/media-types.js';
import type { Store } from '../storage/store.js';
import { mapLimit } from '../util/map-limit.js';
import type { DescriptorSizes } from './descriptor-sizes.js';
import type { Downloads } from './downloads.js';
import { repoOf, type ManifestAnswer, type PullLimits, type Target } from './pull-types.js';
import type { RepositoryAccess } from './repository-access.js';

const MANIFEST_MEMO_BYTES = 64 * 1024 * 1024;
/** Files touched at once when a manifest's references are linked: never thousands together (EMFILE). */
const LINK_CONCURRENCY = 8;

/**
 * `bytes` in memory of their own. A small Buffer is often a view of a larger one (Node's 8 KiB pool
 * that Buffer.concat uses, a network read): kept in the memo, the view keeps all of it, and the
 * memo's byte budget (which counts the view) would bound nothing (up to ~12× its 64 MiB for
 * manifests of ~700 bytes). Found looking into memory outside the heap growing in the soak
 * (bench/scenarios/s13-soak.ts), which pulls a new image every few seconds.
 */
function own(bytes: Buffer): Buffer {
  if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) return bytes;
  const copy = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(copy);
  return copy;
}

export class Manifests {
  /** Manifest bytes and media type by digest: the hot path serves them without touching the disk. */
  private readonly memo = new LRUCache<string, { bytes: Buffer; mediaType: string }>({
    maxSize: MANIFEST_MEMO_BYTES,
    sizeCalculation: (v) => v.bytes.length + 64,
  });
  private readonly store: Store;
  private readonly access: RepositoryAccess;
  private readonly turns: Pick<Downloads, 'turn'>;
  private readonly sizes: DescriptorSizes;
  private readonly limits: Pick<PullLimits, 'manifestMaxReferences'>;
  /** The largest manifest fetched from an upstream (cache.manifestMaxSize). */
  readonly maxSize: number;

  constructor(deps: {
    store: Store;
    access: RepositoryAccess;
    turns: Pick<Downloads, 'turn'>;
    sizes: DescriptorSizes;
    limits: Pick<PullLimits, 'manifestMaxReferences'>;
    manifestMaxSize: number;
  }) {
    this.store = deps.store;
    this.access = deps.access;
    this.turns = deps.turns;
    this.sizes = deps.sizes;
    this.limits = deps.limits;
    this.maxSize = deps.manifestMaxSize;
  }

  async getByDigest(t: Target, d: Digest, waited = false): Promise<ManifestAnswer> {
    // The warm path, without an await: in memory, and this repository is known to link it.
    const memo = this.memo.get(d.value);
    if (memo && this.access.knownToLink(t, d)) {
      this.store.blobs.served(d.value);
      return { digest: d.value, mediaType: memo.mediaType, size: memo.bytes.length, bytes: memo.bytes, cache: 'hit' };
    }
    const stored = await this.readStored(d);
    if (stored) {
      await this.access.authorizeStored(t, d);
      return { digest: d.value, mediaType: stored.mediaType, size: stored.bytes.length, bytes: stored.bytes, cache: 'hit' };
    }
    if (!waited) {
      // Cluster mode: one replica fetches it; the others then read what it stored.
      const turn = await this.turns.turn(`manifest:${d.value}`);
      if (turn === 'waited') return this.getByDigest(t, d, true);
      if (turn) {
        try {
          return await this.getByDigest(t, d, true);
        } finally {
          await turn.release();
        }
      }
    }
    const fetched = await t.client.getManifest(t.name, d.value, this.maxSize);
    const saved = await this.save(t, fetched.bytes, fetched.mediaType, d, fetched.digest);
    return { digest: saved.digest, mediaType: saved.mediaType, size: fetched.bytes.length, bytes: fetched.bytes, cache: 'miss' };
  }

  /**
   * A manifest's bytes and media type when they are in memory (read or saved before); else null.
   * Taken from memory counts as served for the store's recency (BlobStore.served): the manifests
   * served most never touch the store, and eviction, least recently served first, took exactly
   * those (the soak's warm manifest, answered 429 once it was gone and the upstream limited).
   */
  inMemory(digest: string): { bytes: Buffer; mediaType: string } | null {
    const memo = this.memo.get(digest);
    if (memo) this.store.blobs.served(digest);
    return memo ?? null;
  }

  /** A stored manifest's bytes and media type; null when not stored, or stored content that is no manifest. */
  async readStored(d: Digest): Promise<{ bytes: Buffer; mediaType: string } | null> {
    const memo = this.inMemory(d.value);
    if (memo) return memo;
    const bytes = await this.store.blobs.readSmall(d);
    if (!bytes) return null;
    let mediaType: string;
    try {
      mediaType = parseManifest(bytes).mediaType;
    } catch {
      return null; // stored content that is not a manifest (a layer asked for as a manifest)
    }
    const entry = { bytes: own(bytes), mediaType };
    this.memo.set(d.value, entry);
    return entry;
  }

  /**
   * Verifies manifest bytes from the upstream and stores them: the digest must match the one asked
   * for and the one the upstream claimed. Links the manifest and everything it references to the
   * repository, so the blobs it names are served from the store without asking again.
   */
  async save(t: Target, bytes: Buffer, declaredType: string, expected: Digest | null, claimed: string | null): Promise<{ digest: string; mediaType: string }> {
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
    const repo = repoOf(t);
    const refs = [...new Set([actual.value, ...descriptors.map((x) => x.digest)])];
    await mapLimit(refs, LINK_CONCURRENCY, (x) => this.store.repos.link(repo, parseDigest(x)));
    for (const b of parsed.blobs) if (b.size >= 0) this.sizes.note(repo, b.digest, b.size);
    this.memo.set(actual.value, { bytes: own(bytes), mediaType: parsed.mediaType });
    return { digest: actual.value, mediaType: parsed.mediaType };
  }
}
