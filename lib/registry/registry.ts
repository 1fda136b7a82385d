/**
 * Hosted repositories: the push side of the OCI distribution spec and the local reads of what was
 * pushed. Works on a repository of the store (`{ upstream, name }`): `_hosted` for hosted names, or
 * an upstream's namespace when a push seeds the mirror. Knows nothing of upstreams: whether a
 * repository may be pushed to, and who reads seeded content, is decided above.
 *
 *   uploads    POST → session; PATCH chunks in order; PUT ?digest= verifies and commits (pinned)
 *   mounts     a blob this registry has in `from` is linked into the target: no byte is copied
 *   manifests  PUT validates (parseable, known type, Content-Type agrees, size, number of
 *              references, every blob and child manifest present in the repository, or, for a
 *              seeded namespace, at most `pushUpstreamChecks` of them confirmed by the upstream,
 *              a few at a time) then stores the exact bytes, pinned
 *   deletes    links and tags go; content no repository links any more is unpinned, so the
 *              LRU bound or `stevedore gc` reclaims it (other repositories may share the bytes)
 *
 * Every check happens before anything is written: a refused request changes nothing on disk.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { INDEX_MEDIA_TYPES, MediaType, normalizeContentType, parseManifest, type ParsedManifest } from '../oci/media-types.js';
import { isValidTag, type Reference } from '../oci/name.js';
import { referrerDescriptor, type ReferrerDescriptor } from '../oci/referrers.js';
import { HOSTED_NAMESPACE } from '../storage/paths.js';
import type { Store } from '../storage/store.js';
import type { RepoRef } from '../storage/repo-store.js';
import type { StoredBody } from '../storage/backend.js';
import { ANONYMOUS_OWNER, UploadStore, type SessionLocks, type UploadLimits } from '../storage/upload-store.js';
import { mapLimit } from '../util/map-limit.js';
import { CACHE_DEFAULTS, REGISTRY_DEFAULTS } from '../config/schema.js';

/** Manifest media types a push may use. Schema 1 is long deprecated and refused. */
export const PUSHABLE_MANIFEST_TYPES: ReadonlySet<string> = new Set([
  MediaType.OciManifest,
  MediaType.OciIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
]);

/** Store operations (link checks, pin files) a manifest PUT runs at once: never thousands (EMFILE). */
const STORE_CONCURRENCY = 8;
/** Upstream checks a manifest PUT into a seeded namespace runs at once. */
const UPSTREAM_CHECK_CONCURRENCY = 4;

export interface RegistryOptions {
  /** Manifests larger than this are refused with 413. */
  manifestMaxSize: number;
  /** Blobs and child manifests a pushed manifest may name (cache.manifestMaxReferences). Default 10,000. */
  manifestMaxReferences?: number;
  /** At most this many upstream checks (`isKnown`) per manifest PUT (registry.pushUpstreamChecks). Default 64. */
  pushUpstreamChecks?: number;
  /** Upload sessions idle this long are swept. */
  uploadMaxAge: number;
  /** What uploads may hold (sizes, sessions, per-user quota). */
  uploadLimits?: Partial<UploadLimits>;
  log: Logger;
  now?: () => number;
  /** Cluster mode: upload sessions locked across replicas. */
  sessionLocks?: SessionLocks | null;
}

export interface StoredManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

export interface UploadState {
  uuid: string;
  /** Bytes received so far. */
  size: number;
}

/** A chunk's `Content-Range: <start>-<end>` (inclusive), parsed. */
export interface ChunkRange {
  start: number;
  end: number;
}

const CONTENT_RANGE_RE = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})$/;

/** Parses a chunk's Content-Range (the spec's `^[0-9]+-[0-9]+$`; `bytes ` tolerated). */
export function parseChunkRange(value: string): ChunkRange {
  const m = CONTENT_RANGE_RE.exec(value.trim());
  const start = m ? Number(m[1]) : NaN;
  const end = m ? Number(m[2]) : NaN;
  if (!m || end < start) {
    throw new OciError('BLOB_UPLOAD_INVALID', `invalid Content-Range ${JSON.stringify(value.slice(0, 100))}: expected <start>-<end>`);
  }
  return { start, end };
}

export function hostedRepo(name: string): RepoRef {
  return { upstream: HOSTED_NAMESPACE, name };
}

export class Registry {
  readonly uploads: UploadStore;
  readonly store: Store;
  private readonly opts: RegistryOptions;
  private sweeper: NodeJS.Timeout | null = null;

  constructor(store: Store, opts: RegistryOptions) {
    this.store = store;
    this.opts = opts;
    this.uploads = new UploadStore(store.blobs, {
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.uploadLimits ? { limits: opts.uploadLimits } : {}),
      locks: opts.sessionLocks ?? null,
    });
  }

  /** Creates the upload space, sweeps abandoned sessions, and keeps sweeping periodically. */
  async start(): Promise<void> {
    await this.uploads.init();
    await this.sweep();
    const every = Math.max(1_000, Math.min(this.opts.uploadMaxAge / 4, 3_600_000));
    this.sweeper = setInterval(() => void this.sweep(), every);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  async sweep(): Promise<number> {
    try {
      const n = await this.uploads.sweep(this.opts.uploadMaxAge);
      if (n) this.opts.log.info({ removed: n, maxAgeMs: this.opts.uploadMaxAge }, 'removed abandoned upload sessions');
      return n;
    } catch (err) {
      this.opts.log.warn({ err }, 'sweeping upload sessions failed');
      return 0;
    }
  }

  // ---- uploads ---------------------------------------------------------------------------

  /** A new upload session of `owner` (the user pushing; `anonymous` without credentials). */
  async startUpload(repo: RepoRef, owner: string = ANONYMOUS_OWNER): Promise<UploadState> {
    const info = await this.uploads.create(repo, owner);
    return { uuid: info.uuid, size: 0 };
  }

  /** Monolithic upload (POST ?digest=): the body is the whole blob. */
  async uploadWhole(repo: RepoRef, digest: Digest, body: Readable, length: number | null, owner: string = ANONYMOUS_OWNER): Promise<void> {
    const { uuid } = await this.uploads.create(repo, owner);
    try {
      await this.uploads.exclusive(uuid, async () => {
        const size = await this.uploads.append(uuid, 0, body, length);
        await this.uploads.finish(uuid, size, digest);
      });
    } finally {
      await this.uploads.delete(uuid);
    }
    await this.store.repos.link(repo, digest);
  }

  /**
   * Links a blob this registry holds in `from` into `repo` (no byte copied). False when it cannot
   * be mounted: the caller opens a normal session instead.
   */
  async mount(repo: RepoRef, digest: Digest, from: RepoRef): Promise<boolean> {
    if (!(await this.store.repos.hasLink(from, digest))) return false;
    // Pinned at once if it is stored: from here on no eviction can take it.
    if (!(await this.store.blobs.present(digest))) return false;
    await this.store.blobs.pin(digest);
    await this.store.repos.link(repo, digest);
    return true;
  }

  async uploadStatus(repo: RepoRef, uuid: string): Promise<UploadState> {
    const { size } = await this.uploads.get(uuid, repo);
    return { uuid, size };
  }

  /**
   * Appends a chunk. With a range its start must be the session's size (else 416, with the size
   * in the error so the answer can carry `Range`); without one the body is appended as it streams.
   */
  async appendChunk(repo: RepoRef, uuid: string, body: Readable, range: ChunkRange | null, length: number | null): Promise<UploadState> {
    await this.uploads.get(uuid, repo); // unknown session: refused before taking the lock
    return this.uploads.exclusive(uuid, async () => {
      const { size } = await this.uploads.get(uuid, repo);
      const expected = this.checkRange(uuid, size, range, length);
      const newSize = await this.uploads.append(uuid, size, body, expected);
      return { uuid, size: newSize };
    });
  }

  /** Closes a session: appends the optional last chunk, verifies `digest`, stores the blob. */
  async finishUpload(
    repo: RepoRef,
    uuid: string,
    digest: Digest,
    body: Readable | null,
    range: ChunkRange | null,
    length: number | null,
  ): Promise<void> {
    await this.uploads.get(uuid, repo);
    await this.uploads.exclusive(uuid, async () => {
      let { size } = await this.uploads.get(uuid, repo);
      if (body) {
        const expected = this.checkRange(uuid, size, range, length);
        size = await this.uploads.append(uuid, size, body, expected);
      }
      await this.uploads.finish(uuid, size, digest);
    });
    await this.store.repos.link(repo, digest);
  }

  async cancelUpload(repo: RepoRef, uuid: string): Promise<void> {
    await this.uploads.get(uuid, repo);
    await this.uploads.exclusive(uuid, () => this.uploads.delete(uuid));
  }

  /** The declared length of a chunk, after checking its range against the session's size. */
  private checkRange(uuid: string, size: number, range: ChunkRange | null, length: number | null): number | null {
    if (!range) return length;
    if (range.start !== size) {
      throw new OciError('RANGE_INVALID', `chunk starts at ${range.start}, the upload ${uuid} has ${size} bytes: chunks must be sent in order`, {
        detail: { size },
      });
    }
    const rangeLength = range.end - range.start + 1;
    if (length !== null && length !== rangeLength) {
      throw new OciError('SIZE_INVALID', `Content-Length ${length} does not match Content-Range ${range.start}-${range.end}`);
    }
    return rangeLength;
  }

  // ---- manifests -------------------------------------------------------------------------

  /**
   * Validates and stores a pushed manifest (exact bytes, pinned), links it to the repository,
   * points the tag at it, and records its subject. Returns its digest and its subject's.
   */
  async putManifest(
    repo: RepoRef,
    ref: Reference,
    bytes: Buffer,
    contentType: string | undefined,
    opts: { isKnown?: (d: Digest, isManifest: boolean) => Promise<boolean> } = {},
  ): Promise<{ digest: string; subject: string | null; mediaType: string; fromElsewhere: Array<{ digest: Digest; isManifest: boolean }>; previousDigest: string | null }> {
    if (bytes.length > this.opts.manifestMaxSize) {
      throw manifestTooLarge(bytes.length, this.opts.manifestMaxSize);
    }
    const digest = digestOf(bytes, ref.kind === 'digest' ? ref.digest.algorithm : 'sha256');
    if (ref.kind === 'digest' && digest.value !== ref.digest.value) {
      throw new OciError('DIGEST_INVALID', `manifest content is ${digest.value}, not ${ref.digest.value}`);
    }
    const parsed = validateManifest(bytes, contentType);
    const maxRefs = this.opts.manifestMaxReferences ?? CACHE_DEFAULTS.manifestMaxReferences;
    const named = parsed.manifests.length + parsed.blobs.length;
    if (named > maxRefs) {
      throw new OciError('MANIFEST_INVALID', `manifest names ${named} blobs and manifests, above the limit of ${maxRefs} (cache.manifestMaxReferences)`);
    }
    const missing: string[] = [];
    const fromElsewhere: Array<{ digest: Digest; isManifest: boolean }> = [];
    // Each digest once, whatever the manifest repeats.
    const refs = new Map<string, { digest: Digest; isManifest: boolean }>();
    for (const d of parsed.manifests) if (!refs.has(d.digest)) refs.set(d.digest, { digest: parseDigest(d.digest), isManifest: true });
    for (const d of parsed.blobs) if (!refs.has(d.digest)) refs.set(d.digest, { digest: parseDigest(d.digest), isManifest: false });
    const all = [...refs.values()];
    const here = await mapLimit(all, STORE_CONCURRENCY, async ({ digest }) => (await this.store.repos.hasLink(repo, digest)) && (await this.store.blobs.present(digest)));
    const present = all.filter((_, i) => here[i]).map((r) => r.digest);
    const absent = all.filter((_, i) => !here[i]);
    if (absent.length && opts.isKnown) {
      // Content the client skipped because the upstream has it (a seeded namespace): asked of the
      // upstream, but a bounded number of times per push, a few at a time.
      const allowed = this.opts.pushUpstreamChecks ?? REGISTRY_DEFAULTS.pushUpstreamChecks;
      if (absent.length > allowed) {
        throw new OciError(
          'MANIFEST_BLOB_UNKNOWN',
          `manifest references ${absent.length} blob(s) or manifest(s) not pushed to ${repo.name}, more than the ${allowed} the upstream is asked about per push (registry.pushUpstreamChecks): push them first`,
          { detail: { unknown: absent.length, missing: absent.slice(0, 100).map((r) => r.digest.value) } },
        );
      }
      const isKnown = opts.isKnown;
      const known = await mapLimit(absent, UPSTREAM_CHECK_CONCURRENCY, (r) => isKnown(r.digest, r.isManifest));
      absent.forEach((r, i) => (known[i] ? fromElsewhere.push(r) : missing.push(r.digest.value)));
    } else {
      missing.push(...absent.map((r) => r.digest.value));
    }
    // Everything a pushed manifest names is pinned with it (content pulled into a seeded namespace
    // too), once the manifest is valid. Checked again and pinned in the index in one synchronous
    // step: no eviction can come in between. The pin files are then written a few at a time.
    for (const dd of present) if (!(await this.store.blobs.present(dd))) missing.push(dd.value);
    if (missing.length) {
      throw new OciError('MANIFEST_BLOB_UNKNOWN', `manifest references ${missing.length} blob(s) or manifest(s) not pushed to ${repo.name}: ${missing.slice(0, 5).join(', ')}`, {
        detail: { missing: missing.slice(0, 100) },
      });
    }
    for (const dd of present) this.store.blobs.pinIndexed(dd.value);
    await mapLimit(present, STORE_CONCURRENCY, (dd) => this.store.blobs.pin(dd));
    await this.store.blobs.putSmall(bytes, digest, { pinned: true });
    for (const x of fromElsewhere) await this.store.repos.link(repo, x.digest);
    await this.store.repos.link(repo, digest);
    const subject = parsed.subject ? parseDigest(parsed.subject.digest) : null;
    if (subject) await this.store.repos.addReferrer(repo, subject, digest);
    // The digest the tag named before (the audit log and push events say what a push replaced).
    let previousDigest: string | null = null;
    if (ref.kind === 'tag') {
      previousDigest = (await this.store.repos.getTag(repo, ref.tag))?.digest ?? null;
      await this.store.repos.setTag(repo, ref.tag, { digest: digest.value, mediaType: parsed.mediaType, size: bytes.length });
    }
    return { digest: digest.value, subject: subject?.value ?? null, mediaType: parsed.mediaType, fromElsewhere, previousDigest };
  }

  async getManifest(repo: RepoRef, ref: Reference): Promise<StoredManifest> {
    let d: Digest;
    if (ref.kind === 'tag') {
      const link = await this.store.repos.getTag(repo, ref.tag);
      if (!link) throw new OciError('MANIFEST_UNKNOWN', `manifest ${repo.name}:${ref.tag} unknown`);
      d = parseDigest(link.digest);
    } else {
      d = ref.digest;
      if (!(await this.store.repos.hasLink(repo, d))) throw new OciError('MANIFEST_UNKNOWN', `manifest ${repo.name}@${d.value} unknown`);
    }
    const bytes = await this.store.blobs.readSmall(d);
    if (!bytes) throw new OciError('MANIFEST_UNKNOWN', `manifest ${repo.name}@${d.value} unknown`);
    let mediaType: string;
    try {
      mediaType = parseManifest(bytes).mediaType;
    } catch {
      throw new OciError('MANIFEST_UNKNOWN', `${d.value} in ${repo.name} is not a manifest`);
    }
    return { digest: d.value, mediaType, bytes };
  }

  /**
   * Deletes a manifest by digest (its link, the tags pointing at it, its referrer record) or a tag.
   * Resolves with the tags removed.
   */
  async deleteManifest(repo: RepoRef, ref: Reference): Promise<string[]> {
    if (ref.kind === 'tag') {
      if (!(await this.store.repos.deleteTag(repo, ref.tag))) throw new OciError('MANIFEST_UNKNOWN', `tag ${repo.name}:${ref.tag} unknown`);
      return [ref.tag];
    }
    const tags: string[] = [];
    const d = ref.digest;
    if (!(await this.store.repos.hasLink(repo, d))) throw new OciError('MANIFEST_UNKNOWN', `manifest ${repo.name}@${d.value} unknown`);
    const bytes = await this.store.blobs.readSmall(d);
    let parsed: ParsedManifest | null = null;
    try {
      parsed = bytes ? parseManifest(bytes) : null;
    } catch {
      throw new OciError('MANIFEST_UNKNOWN', `${d.value} in ${repo.name} is not a manifest`);
    }
    for (const tag of await this.store.repos.listStoredTags(repo)) {
      if (!isValidTag(tag)) continue;
      const link = await this.store.repos.getTag(repo, tag);
      if (link?.digest === d.value && (await this.store.repos.deleteTag(repo, tag))) tags.push(tag);
    }
    if (parsed?.subject) await this.store.repos.removeReferrer(repo, parseDigest(parsed.subject.digest), d);
    await this.store.repos.unlink(repo, d);
    await this.releaseIfUnreferenced(d);
    return tags;
  }

  /** Content no repository names any more is no longer pinned: eviction or gc may reclaim it. */
  private async releaseIfUnreferenced(d: Digest): Promise<void> {
    if (!(await this.store.repos.linkedAnywhere(d))) await this.store.blobs.unpin(d);
  }

  // ---- blobs -----------------------------------------------------------------------------

  async openBlob(repo: RepoRef, d: Digest): Promise<StoredBody> {
    if (await this.store.repos.hasLink(repo, d)) {
      const blob = await this.store.blobs.open(d);
      if (blob) return blob;
    }
    throw new OciError('BLOB_UNKNOWN', `blob ${repo.name}@${d.value} unknown`);
  }

  async statBlob(repo: RepoRef, d: Digest): Promise<{ size: number }> {
    const st = (await this.store.repos.hasLink(repo, d)) ? await this.store.blobs.statPresent(d) : null;
    if (!st) throw new OciError('BLOB_UNKNOWN', `blob ${repo.name}@${d.value} unknown`);
    return st;
  }

  /** Whether this repository has the blob (pushed, mounted, or pulled into it). */
  async hasBlob(repo: RepoRef, d: Digest): Promise<{ size: number } | null> {
    if (!(await this.store.repos.hasLink(repo, d))) return null;
    const size = this.store.blobs.sizeOf(d.value);
    return size === null ? null : { size };
  }

  async deleteBlob(repo: RepoRef, d: Digest): Promise<void> {
    if (!(await this.store.repos.unlink(repo, d))) throw new OciError('BLOB_UNKNOWN', `blob ${repo.name}@${d.value} unknown`);
    await this.releaseIfUnreferenced(d);
  }

  // ---- discovery -------------------------------------------------------------------------

  /** Tags of a repository, sorted; NAME_UNKNOWN when nothing was ever pushed to it. */
  async listTags(repo: RepoRef): Promise<string[]> {
    if (!(await this.store.repos.exists(repo))) throw new OciError('NAME_UNKNOWN', `repository ${repo.name} unknown`);
    return (await this.store.repos.listStoredTags(repo)).filter(isValidTag).sort();
  }

  /** Descriptors of the manifests pushed to this repository whose subject is `subject`. */
  async referrers(repo: RepoRef, subject: Digest): Promise<ReferrerDescriptor[]> {
    const out: ReferrerDescriptor[] = [];
    for (const digest of await this.store.repos.listReferrers(repo, subject)) {
      const d = parseDigest(digest);
      if (!(await this.store.repos.hasLink(repo, d))) continue;
      const bytes = await this.store.blobs.readSmall(d);
      if (!bytes) continue;
      let mediaType: string;
      try {
        mediaType = parseManifest(bytes).mediaType;
      } catch {
        continue;
      }
      out.push(referrerDescriptor(bytes, digest, mediaType));
    }
    return out;
  }

  /** Every repository name a client can pull: hosted ones as they are, cached/seeded ones as `<upstream>/<name>`. */
  async catalog(): Promise<string[]> {
    const names = (await this.store.repos.listRepositories()).map((r) => (r.upstream === HOSTED_NAMESPACE ? r.name : `${r.upstream}/${r.name}`));
    return [...new Set(names)].sort();
  }
}

export function manifestTooLarge(size: number | string, max: number): OciError {
  return new OciError('MANIFEST_INVALID', `manifest of ${size} bytes is above the limit of ${max} bytes (cache.manifestMaxSize)`, {
    status: 413,
    headers: { Connection: 'close' },
  });
}

/**
 * A pushed manifest must parse, be of a known type, and agree with its Content-Type: exactly its
 * `mediaType` when it has one; else the Content-Type must name a known type its shape fits.
 */
export function validateManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  const declared = contentType ? normalizeContentType(contentType) : undefined;
  const parsed = parseManifest(bytes, declared);
  if (!PUSHABLE_MANIFEST_TYPES.has(parsed.mediaType)) {
    throw new OciError('MANIFEST_INVALID', `manifest media type ${JSON.stringify(parsed.mediaType.slice(0, 100))} is not accepted (OCI or Docker schema 2 only)`);
  }
  if (declared !== parsed.mediaType) {
    throw new OciError('MANIFEST_INVALID', `Content-Type ${JSON.stringify((declared ?? '').slice(0, 100))} does not match the manifest's media type ${parsed.mediaType}`);
  }
  const doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  if (INDEX_MEDIA_TYPES.has(parsed.mediaType)) {
    if (!Array.isArray(doc.manifests)) throw new OciError('MANIFEST_INVALID', 'an index needs a manifests array');
  } else if (typeof doc.config !== 'object' || doc.config === null) {
    throw new OciError('MANIFEST_INVALID', 'an image manifest needs a config descriptor');
  }
  return parsed;
}
