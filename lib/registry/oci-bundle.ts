/**
 * Bundles: OCI image layout archives (image-spec `image-layout.md`) written from the store and
 * read into it, for carrying a cache into an air-gapped lab.
 *
 *   oci-layout                       {"imageLayoutVersion":"1.0.0"}
 *   index.json                       one descriptor per image, annotated with its full reference
 *                                    (org.opencontainers.image.ref.name = docker.io/library/alpine:3.19),
 *                                    then one per referrer of its manifests (a manifest whose `subject`
 *                                    is one of them: ghcr.io/org/app@sha256:…) and per cosign tag
 *                                    (ghcr.io/org/app:sha256-<hex>.sig, .att) stored for them
 *   blobs/sha256/<hex>               every manifest, config and layer
 *   stevedore/trust/verify.json      the trust material of the exporter's signature policies that
 *   stevedore/trust/policy-<i>/...   cover the exported repositories (see TRUST_DIR); never used by import
 *
 * Import is all or nothing: every entry is verified against its digest into a staging directory,
 * every image must be complete, the caller's check (signature policies) must pass, and only then is
 * anything moved into the store (pinned). Referrers are registered as the lab's cached referrers
 * list of their subject (what the referrers API and the signature check read offline). A bundle
 * that cannot fit is refused from the entry headers, before that entry's bytes are written: more
 * entries than `maxEntries`, blobs beyond the free disk space under the staging directory, or
 * new blobs that would take the pinned content past storage.maxSize (imported content is pinned:
 * eviction does not make room for it).
 */
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import tar from 'tar-stream';
import { parseDigest, tryParseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { INDEX_MEDIA_TYPES, MediaType, parseManifest, type Descriptor } from '../oci/media-types.js';
import { cosignTags, isCosignTag, referrerDescriptor, sanitizeDescriptors, type ReferrerDescriptor } from '../oci/referrers.js';
import { formatBytes } from '../config/units.js';
import { BlobWriter } from '../storage/blob-writer.js';
import type { RepoRef } from '../storage/repo-store.js';
import type { Store } from '../storage/store.js';
import { DIR_MODE } from '../storage/modes.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';
const MAX_INDEX_JSON = 4 * 1024 * 1024;
/** Entries a bundle may have unless told otherwise (`stevedore import --max-entries`). */
export const DEFAULT_MAX_BUNDLE_ENTRIES = 100_000;
/** Disk space an import leaves free at least: 5% of the filesystem, at most this. */
const DISK_RESERVE_MAX = 64 * 1024 * 1024;
/**
 * Where a bundle carries trust material: `verify.json` (the exporter's policies for the exported
 * repositories, shaped like the config's `verify` section, file names relative to this directory)
 * and `policy-<i>/key-<k>.pem`, `policy-<i>/trusted_root.json`.
 */
export const TRUST_DIR = 'stevedore/trust';
const TRUST_ENTRY = /^stevedore\/trust\/(?:verify\.json|policy-\d{1,4}\/(?:key-\d{1,4}\.pem|trusted_root\.json))$/;
/** A trust file larger than this is refused (sigstore's public trusted_root.json is a few KiB). */
const TRUST_FILE_MAX = 1024 * 1024;

export interface ImportLimits {
  /** Entries (files and directories) a bundle may have. */
  maxEntries: number;
  /** storage.maxSize: what is pinned plus the bundle's new blobs may not exceed it; null: unbounded. */
  maxSize: number | null;
}

export interface BundleImage {
  ref: ImageRef;
  digest: string;
  mediaType: string;
  size: number;
}

/** A file of the archive outside the OCI layout (trust material). */
export interface BundleFile {
  name: string;
  data: Buffer;
}

/**
 * A bundle as import has staged it: every blob verified against its digest, every entry complete,
 * nothing stored yet. What a check (the signature policies) reads before the import is decided.
 */
export interface StagedBundle {
  /** Every index.json entry, in order (images, then referrers and cosign tags). */
  entries: readonly BundleImage[];
  /** Trust material carried (name → bytes): untrusted input like the rest. */
  trust: ReadonlyMap<string, Buffer>;
  /** Bytes of a manifest or blob of the bundle (or already in the store); null when neither has it or it is larger than `max`. */
  read(digest: string, max: number): Promise<Buffer | null>;
  /** Descriptors of the bundle's manifests in `repo` whose `subject` is `subject`. */
  referrers(repo: RepoRef, subject: string): ReferrerDescriptor[];
  /** The manifest digest the bundle tags `tag` with in `repo`; null: none. */
  tagged(repo: RepoRef, tag: string): string | null;
}

export interface ImportOptions {
  /**
   * Runs once everything is staged, verified and complete, before anything is stored: throwing
   * refuses the bundle (nothing stored).
   */
  check?: (bundle: StagedBundle) => Promise<void>;
}

/** Everything an image needs, from the store: its manifests (index + children present) and blobs. */
async function closure(store: Store, top: Digest): Promise<{ manifests: Map<string, Buffer>; blobs: Set<string>; missing: string[] }> {
  const manifests = new Map<string, Buffer>();
  const blobs = new Set<string>();
  const missing: string[] = [];
  const visit = async (d: Digest): Promise<void> => {
    const bytes = await store.blobs.readSmall(d);
    if (!bytes) {
      missing.push(d.value);
      return;
    }
    manifests.set(d.value, bytes);
    const parsed = parseManifest(bytes);
    if (INDEX_MEDIA_TYPES.has(parsed.mediaType)) {
      for (const child of parsed.manifests) {
        // A platform never pulled is left out of the bundle (the index still names it).
        if (store.blobs.has(parseDigest(child.digest))) await visit(parseDigest(child.digest));
      }
      return;
    }
    for (const b of parsed.blobs) {
      if (store.blobs.has(parseDigest(b.digest))) blobs.add(b.digest);
      else missing.push(b.digest);
    }
  };
  await visit(top);
  return { manifests, blobs, missing };
}

/** Finds what a reference points at in the store: a tag link, or a stored digest. */
export async function resolveStored(store: Store, ref: ImageRef): Promise<BundleImage> {
  const repo = { upstream: ref.registry, name: ref.name };
  let digest = ref.digest;
  if (!digest) {
    const link = await store.repos.getTag(repo, ref.tag ?? 'latest');
    if (!link) throw new OciError('MANIFEST_UNKNOWN', `${formatImageRef(ref)} is not in the store (prefetch or pull it first)`);
    digest = link.digest;
  }
  const bytes = await store.blobs.readSmall(parseDigest(digest));
  if (!bytes) throw new OciError('MANIFEST_UNKNOWN', `${formatImageRef(ref)}: manifest ${digest} is not in the store`);
  return { ref, digest, mediaType: parseManifest(bytes).mediaType, size: bytes.length };
}

type Closure = Awaited<ReturnType<typeof closure>>;

/**
 * What the store holds about an image's manifests: their referrers (the upstream's cached list and
 * the ones pushed here, each a manifest linked in the repository naming that subject, with all its
 * content stored) and their cosign tags. `skipped` gets a line for each listed referrer left out.
 */
async function storedReferrers(store: Store, ref: ImageRef, subjects: Iterable<string>, skipped: string[]): Promise<Array<{ image: BundleImage; closure: Closure }>> {
  const repo = { upstream: ref.registry, name: ref.name };
  const out: Array<{ image: BundleImage; closure: Closure }> = [];
  const add = async (digest: string, tag: string | null, subject: string | null): Promise<void> => {
    const what = `${formatImageRef({ ...ref, tag: null, digest: null })}: ${tag ?? `referrer ${digest} of ${subject}`}`;
    const d = tryParseDigest(digest);
    const bytes = d && (await store.repos.hasLink(repo, d)) ? await store.blobs.readSmall(d) : null;
    if (!d || !bytes) {
      skipped.push(`${what} is not stored (prefetch carries referrers); left out`);
      return;
    }
    let mediaType: string;
    try {
      const parsed = parseManifest(bytes);
      if (subject !== null && parsed.subject?.digest !== subject) {
        skipped.push(`${what} names another subject; left out`);
        return;
      }
      mediaType = parsed.mediaType;
    } catch {
      skipped.push(`${what} is not a manifest; left out`);
      return;
    }
    const c = await closure(store, d);
    if (c.missing.length) {
      skipped.push(`${what} is not fully stored (missing ${c.missing[0]}); left out`);
      return;
    }
    out.push({ image: { ref: { ...ref, tag, digest: tag === null ? d.value : null }, digest: d.value, mediaType, size: bytes.length }, closure: c });
  };
  for (const subject of subjects) {
    const s = parseDigest(subject);
    const cached = sanitizeDescriptors((await store.repos.getCachedReferrers(repo, s))?.manifests).map((r) => r.digest);
    for (const digest of new Set([...cached, ...(await store.repos.listReferrers(repo, s))])) await add(digest, null, subject);
    for (const tag of cosignTags(s)) {
      const link = await store.repos.getTag(repo, tag);
      if (link) await add(link.digest, tag, null);
    }
  }
  return out;
}

/**
 * Writes an OCI layout archive of these images to `out`, with the referrers and cosign tags stored
 * for their manifests, and `files` (trust material, under TRUST_DIR) after index.json.
 */
export async function exportBundle(
  store: Store,
  images: BundleImage[],
  out: Writable,
  opts: { files?: readonly BundleFile[] } = {},
): Promise<{ blobs: number; bytes: number; referrers: BundleImage[]; skipped: string[] }> {
  const pack = tar.pack();
  const done = pipeline(pack, out);
  const entry = (name: string, data: Buffer): Promise<void> =>
    new Promise((resolve, reject) => pack.entry({ name, size: data.length, mtime: new Date(0), mode: 0o644 }, data, (err) => (err ? reject(err) : resolve())));
  const all = new Map<string, number>();
  const manifestBytes = new Map<string, Buffer>();
  const take = (c: Closure): void => {
    for (const [d, bytes] of c.manifests) manifestBytes.set(d, bytes);
    for (const d of c.blobs) all.set(d, store.blobs.sizeOf(d) ?? 0);
  };
  const closures: Closure[] = [];
  for (const img of images) {
    const c = await closure(store, parseDigest(img.digest));
    if (c.missing.length) {
      throw new OciError('BLOB_UNKNOWN', `${formatImageRef(img.ref)} is not fully stored (missing ${c.missing.slice(0, 3).join(', ')}${c.missing.length > 3 ? ', ...' : ''}); prefetch it first`);
    }
    take(c);
    closures.push(c);
  }
  // Each image's referrers and cosign tags, once each (two tags of one image share them).
  const named = new Set(images.map((img) => formatImageRef(img.ref)));
  const referrers: BundleImage[] = [];
  const skipped: string[] = [];
  for (const [i, img] of images.entries()) {
    for (const r of await storedReferrers(store, img.ref, closures[i]!.manifests.keys(), skipped)) {
      const name = formatImageRef(r.image.ref);
      if (named.has(name)) continue;
      named.add(name);
      referrers.push(r.image);
      take(r.closure);
    }
  }
  await entry('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [...images, ...referrers].map((img) => ({
      mediaType: img.mediaType,
      digest: img.digest,
      size: img.size,
      annotations: { [REF_NAME]: formatImageRef(img.ref), 'io.containerd.image.name': formatImageRef(img.ref) },
    })),
  };
  await entry('index.json', Buffer.from(JSON.stringify(index, null, 2)));
  for (const f of opts.files ?? []) {
    if (!TRUST_ENTRY.test(f.name)) throw new Error(`not a bundle trust file name: ${f.name}`);
    await entry(f.name, f.data);
  }
  let bytes = 0;
  for (const [d, data] of manifestBytes) {
    const { algorithm, hex } = parseDigest(d);
    await entry(`blobs/${algorithm}/${hex}`, data);
    bytes += data.length;
  }
  for (const [d, size] of all) {
    if (manifestBytes.has(d)) continue;
    const digest = parseDigest(d);
    const { algorithm, hex } = digest;
    const stream = pack.entry({ name: `blobs/${algorithm}/${hex}`, size, mtime: new Date(0), mode: 0o644 });
    const stored = await store.blobs.open(digest);
    if (!stored) throw new Error(`${d} vanished from the store while it was exported`);
    await pipeline(stored.open(), stream);
    bytes += size;
  }
  pack.finalize();
  await done;
  return { blobs: manifestBytes.size + all.size, bytes, referrers, skipped };
}

/**
 * Reads an OCI layout archive into the store: all verified, all complete, all passing the check,
 * or nothing. Returns the images it brought (each tagged in its registry's namespace, pinned), the
 * referrers and cosign tags that came with them, and the trust material it carried (not used here).
 */
export async function importBundle(
  store: Store,
  input: Readable,
  limits: ImportLimits = { maxEntries: DEFAULT_MAX_BUNDLE_ENTRIES, maxSize: null },
  opts: ImportOptions = {},
): Promise<{ images: BundleImage[]; referrers: BundleImage[]; trust: ReadonlyMap<string, Buffer>; blobs: number; bytes: number }> {
  const staging = path.join(store.blobs.tmpDir, `import-${randomBytes(8).toString('hex')}`);
  await fsp.mkdir(staging, { recursive: true, mode: DIR_MODE });
  try {
    // What the bundle may take: the disk under the staging directory (every blob is staged there
    // first), and storage.maxSize for what is new to the store (pinned, so never evicted).
    const fs = await fsp.statfs(staging);
    const free = fs.bavail * fs.bsize;
    const reserve = Math.min(DISK_RESERVE_MAX, Math.floor(fs.blocks * fs.bsize * 0.05));
    const pinned = store.blobs.stats().pinnedBytes;
    let entries = 0;
    let stagedBytes = 0;
    let newBytes = 0;
    /** Why the entry about to be written cannot be, or null. */
    const overLimit = (digest: Digest | null, size: number): string | null => {
      if (++entries > limits.maxEntries) return `the bundle has more than ${limits.maxEntries} entries (--max-entries); nothing was imported`;
      if (!digest) return null;
      stagedBytes += size;
      if (stagedBytes > free - reserve) {
        return `the bundle does not fit in the free disk space: its blobs need more than ${formatBytes(stagedBytes)}, and ${store.blobs.tmpDir} has ${formatBytes(free)} free (${formatBytes(reserve)} of it kept in reserve); nothing was imported`;
      }
      if (!store.blobs.has(digest)) newBytes += size;
      if (limits.maxSize !== null && pinned + newBytes > limits.maxSize) {
        return `the bundle does not fit in storage.maxSize (${formatBytes(limits.maxSize)}): ${formatBytes(pinned)} is pinned already and its new blobs bring more than ${formatBytes(newBytes)}; imported content is pinned, so eviction makes no room for it; nothing was imported`;
      }
      return null;
    };
    const staged = new Map<string, { file: string; size: number }>();
    let indexJson: Buffer | null = null;
    let layout: Buffer | null = null;
    const trust = new Map<string, Buffer>();
    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      const fail = (err: Error): void => {
        // The entry's stream is destroyed with the extractor: its error is this one, already handled.
        stream.on('error', () => undefined);
        stream.resume();
        extract.destroy(err);
      };
      const name = header.name.replace(/^\.\//, '');
      const blobName = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
      const over = overLimit(header.type === 'file' && blobName ? tryParseDigest(`${blobName[1]}:${blobName[2]}`) : null, header.size ?? 0);
      if (over) return fail(new OciError('SIZE_INVALID', over));
      if (header.type === 'directory') {
        stream.resume();
        stream.once('end', next);
        return;
      }
      if (header.type !== 'file') return fail(new OciError('BLOB_UPLOAD_INVALID', `bundle entry ${JSON.stringify(name)} is not a regular file`));
      const small = name === 'index.json' || name === 'oci-layout' ? MAX_INDEX_JSON : TRUST_ENTRY.test(name) ? TRUST_FILE_MAX : 0;
      if (small > 0) {
        if ((header.size ?? 0) > small) return fail(new OciError('SIZE_INVALID', `bundle entry ${name} is larger than ${small} bytes`));
        const chunks: Buffer[] = [];
        let n = 0;
        stream.on('data', (data: unknown) => {
          const c = data as Buffer;
          n += c.length;
          if (n > small) fail(new OciError('MANIFEST_INVALID', `${name} is larger than ${small} bytes`));
          else chunks.push(c);
        });
        stream.once('end', () => {
          if (name === 'index.json') indexJson = Buffer.concat(chunks);
          else if (name === 'oci-layout') layout = Buffer.concat(chunks);
          else trust.set(name, Buffer.concat(chunks));
          next();
        });
        return;
      }
      const digest = blobName ? tryParseDigest(`${blobName[1]}:${blobName[2]}`) : null;
      if (!digest) return fail(new OciError('BLOB_UPLOAD_INVALID', `unexpected bundle entry ${JSON.stringify(name.slice(0, 200))}`));
      const file = path.join(staging, `${digest.algorithm}-${digest.hex}`);
      const writer = new BlobWriter({ tmpPath: `${file}.part`, expected: digest, resolveFinal: () => file });
      pipeline(stream, writer)
        .then(() => writer.commit(header.size ?? undefined))
        .then(
          (r) => {
            staged.set(digest.value, { file, size: r.size });
            next();
          },
          (err: unknown) => {
            void writer.abort(err instanceof Error ? err : new Error(String(err)));
            extract.destroy(new OciError('DIGEST_INVALID', `bundle entry ${name} does not match its digest: ${(err as Error).message}`));
          },
        );
    });
    await pipeline(input, extract);

    const layoutDoc = layout ? safeJson(layout) : null;
    if (!layoutDoc || (layoutDoc as { imageLayoutVersion?: unknown }).imageLayoutVersion !== '1.0.0') {
      throw new OciError('MANIFEST_INVALID', 'not an OCI image layout: oci-layout is missing or not version 1.0.0');
    }
    const index = indexJson ? (safeJson(indexJson) as { manifests?: unknown } | null) : null;
    if (!index || !Array.isArray(index.manifests)) throw new OciError('MANIFEST_INVALID', 'index.json is missing or invalid');

    const has = (d: string): boolean => staged.has(d) || store.blobs.has(parseDigest(d));
    const read = async (d: string): Promise<Buffer | null> => {
      const s = staged.get(d);
      return s ? fsp.readFile(s.file) : store.blobs.readSmall(parseDigest(d));
    };
    const listed: BundleImage[] = [];
    const isReferrer = new Set<BundleImage>();
    const needed = new Map<string, Set<string>>(); // repo key → digests to link
    const manifestsOf = new Map<string, Set<string>>(); // repo key → its manifests and the subjects its referrers name: the lists the lab learns
    const referrersOf = new Map<string, ReferrerDescriptor[]>(); // repo key + subject → referrers
    const tagsOf = new Map<string, string>(); // repo key + tag → digest
    const repoKey = (repo: RepoRef): string => `${repo.upstream}\u0000${repo.name}`;
    for (const raw of index.manifests as Array<Record<string, unknown>>) {
      const annotations = (raw.annotations ?? {}) as Record<string, unknown>;
      const refText = annotations[REF_NAME] ?? annotations['io.containerd.image.name'];
      if (typeof refText !== 'string') throw new OciError('MANIFEST_INVALID', `index.json entry ${String(raw.digest)} has no ${REF_NAME} with a full reference`);
      const ref = parseImageRef(refText);
      const digest = typeof raw.digest === 'string' ? parseDigest(raw.digest).value : '';
      const links = new Set<string>();
      const manifests = new Set<string>();
      const walk = async (d: string): Promise<{ mediaType: string; size: number; subject: string | null; bytes: Buffer }> => {
        const bytes = await read(d);
        if (!bytes) throw new OciError('MANIFEST_BLOB_UNKNOWN', `${refText}: manifest ${d} is not in the bundle`);
        links.add(d);
        manifests.add(d);
        const parsed = parseManifest(bytes);
        const children: Descriptor[] = INDEX_MEDIA_TYPES.has(parsed.mediaType) ? parsed.manifests.filter((c) => has(c.digest)) : [];
        for (const c of children) await walk(c.digest);
        for (const b of parsed.blobs) {
          if (!has(b.digest)) throw new OciError('MANIFEST_BLOB_UNKNOWN', `${refText}: blob ${b.digest} is not in the bundle`);
          links.add(b.digest);
        }
        return { mediaType: parsed.mediaType, size: bytes.length, subject: parsed.subject?.digest ?? null, bytes };
      };
      const top = await walk(digest);
      const entry = { ref, digest, mediaType: top.mediaType, size: top.size };
      listed.push(entry);
      const key = repoKey({ upstream: ref.registry, name: ref.name });
      needed.set(key, new Set([...(needed.get(key) ?? []), ...links]));
      manifestsOf.set(key, new Set([...(manifestsOf.get(key) ?? []), ...manifests]));
      if (top.subject !== null) {
        manifestsOf.get(key)!.add(top.subject);
        const list = referrersOf.get(`${key}\u0000${top.subject}`) ?? [];
        if (!list.some((r) => r.digest === digest)) list.push(referrerDescriptor(top.bytes, digest, top.mediaType));
        referrersOf.set(`${key}\u0000${top.subject}`, list);
      }
      if (ref.tag !== null) tagsOf.set(`${key}\u0000${ref.tag}`, digest);
      if (top.subject !== null || (ref.tag !== null && isCosignTag(ref.tag))) isReferrer.add(entry);
    }

    // Everything verified and complete: the caller's check (signature policies), before anything is stored.
    if (opts.check) {
      await opts.check({
        entries: listed,
        trust,
        async read(d, max) {
          const s = staged.get(d);
          if (s) return s.size > max ? null : fsp.readFile(s.file);
          const digest = tryParseDigest(d);
          if (!digest || (store.blobs.sizeOf(d) ?? 0) > max) return null;
          const bytes = await store.blobs.readSmall(digest);
          return bytes && bytes.length <= max ? bytes : null;
        },
        referrers: (repo, subject) => [...(referrersOf.get(`${repoKey(repo)}\u0000${subject}`) ?? [])],
        tagged: (repo, tag) => tagsOf.get(`${repoKey(repo)}\u0000${tag}`) ?? null,
      });
    }

    // Everything verified, complete and accepted: move it into the store, pinned, then link and tag.
    let bytes = 0;
    for (const [d, s] of staged) {
      await store.blobs.commitVerifiedFile(s.file, parseDigest(d), s.size);
      bytes += s.size;
    }
    for (const [key, digests] of needed) {
      const [upstream, name] = key.split('\u0000') as [string, string];
      for (const d of digests) {
        await store.repos.link({ upstream, name }, parseDigest(d));
        await store.blobs.pin(parseDigest(d));
      }
    }
    for (const img of listed) {
      if (img.ref.tag) await store.repos.setTag({ upstream: img.ref.registry, name: img.ref.name }, img.ref.tag, { digest: img.digest, mediaType: img.mediaType, size: img.size });
    }
    // The lab's referrers of each manifest: the ones it knew, and the bundle's (what the referrers
    // API and the signature check read when the upstream cannot be asked).
    const now = Date.now();
    for (const [key, subjects] of manifestsOf) {
      const [upstream, name] = key.split('\u0000') as [string, string];
      for (const subject of subjects) {
        const known = sanitizeDescriptors((await store.repos.getCachedReferrers({ upstream, name }, parseDigest(subject)))?.manifests);
        const carried = (referrersOf.get(`${key}\u0000${subject}`) ?? []).filter((r) => !known.some((k) => k.digest === r.digest));
        await store.repos.setCachedReferrers({ upstream, name }, parseDigest(subject), [...known, ...carried], now);
      }
    }
    const images = listed.filter((e) => !isReferrer.has(e));
    const referrers = listed.filter((e) => isReferrer.has(e));
    return { images, referrers, trust, blobs: staged.size, bytes };
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}

function safeJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString('utf8'));
  } catch {
    return null;
  }
}
