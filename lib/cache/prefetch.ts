/**
 * Prefetch: resolve an image against its upstream and fetch every manifest and blob into the store
 * through the same path a pull uses (coalesced, verified). Content already stored is skipped, so an
 * interrupted prefetch resumes where it stopped. Optionally pins what it fetched (never evicted).
 *
 * Each manifest's referrers (signatures, SBOMs, attestations: manifests whose `subject` is it) and
 * its cosign tags (`sha256-<hex>.sig`, `.att`) are carried too (planReferrers), so that an export
 * takes them across an air gap and the lab verifies with no network. Referrers of referrers are not
 * followed.
 */
import { parseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { INDEX_MEDIA_TYPES, parseManifest, type Descriptor } from '../oci/media-types.js';
import { cosignTags } from '../oci/referrers.js';
import { UpstreamError } from '../upstream/errors.js';
import { countingSink } from '../util/counting-sink.js';
import type { PullThrough, Target } from './pull-through.js';
import type { ProxiedReferrers } from './referrers.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PrefetchPlan {
  /** The manifest the reference names (an index, or an image manifest). */
  top: { digest: string; bytes: Buffer };
  /** Every manifest digest (top, and the chosen children). */
  manifests: string[];
  /** Every blob (config and layers) of the chosen images, deduplicated. */
  blobs: Descriptor[];
  totalBytes: number;
}

export interface PrefetchEvents {
  /** Bytes of blobs now stored (already there, or just fetched). */
  onBytes?(n: number): void;
  onBlob?(digest: string, fetched: boolean): void;
}

/** `linux/amd64`, `linux/arm/v7` → Platform. */
export function parsePlatform(text: string): Platform {
  const [os, architecture, variant] = text.split('/');
  if (!os || !architecture || text.split('/').length > 3) throw new Error(`not a platform: ${text} (use os/arch[/variant])`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}

function matches(d: Descriptor, platforms: Platform[] | null): boolean {
  const p = d.platform;
  // buildx attestation manifests carry unknown/unknown: not a runnable platform.
  if (!platforms) return true;
  if (!p) return false;
  return platforms.some((want) => want.os === p.os && want.architecture === p.architecture && (!want.variant || want.variant === p.variant));
}

/** Resolves the image and the manifests under it, fetching those manifests into the store. */
export async function planPrefetch(pull: PullThrough, t: Target, ref: { tag: string | null; digest: string | null }, platforms: Platform[] | null): Promise<PrefetchPlan> {
  const top = ref.digest ? await pull.getManifestByDigest(t, parseDigest(ref.digest)) : await pull.getManifestByTag(t, ref.tag ?? 'latest');
  const manifests: string[] = [top.digest];
  const blobs = new Map<string, Descriptor>();
  const visit = async (bytes: Buffer, mediaType: string, depth: number): Promise<void> => {
    const parsed = parseManifest(bytes, mediaType);
    if (INDEX_MEDIA_TYPES.has(parsed.mediaType)) {
      if (depth > 4) throw new Error('manifest indexes nested too deep');
      const chosen = parsed.manifests.filter((m) => matches(m, platforms));
      if (chosen.length === 0) throw new Error(`no manifest for ${platforms?.map((p) => `${p.os}/${p.architecture}`).join(', ')} in ${top.digest}`);
      for (const child of chosen) {
        const m = await pull.getManifestByDigest(t, parseDigest(child.digest));
        manifests.push(m.digest);
        await visit(m.bytes, m.mediaType, depth + 1);
      }
      return;
    }
    for (const b of parsed.blobs) blobs.set(b.digest, b);
  };
  await visit(top.bytes, top.mediaType, 0);
  const list = [...blobs.values()];
  return { top: { digest: top.digest, bytes: top.bytes }, manifests, blobs: list, totalBytes: list.reduce((n, b) => n + Math.max(0, b.size), 0) };
}

/** Referrers carried per manifest at most (the first ones the upstream lists). */
export const MAX_REFERRERS_PER_MANIFEST = 64;

export interface ReferrersPlan {
  /** The referrer and cosign-tag manifests fetched (stored and linked), and the children of those that are indexes. */
  manifests: string[];
  /** The cosign tags found (tag → manifest digest), stored as tags of the repository. */
  tags: Map<string, string>;
  /** Their blobs (deduplicated), to fetch with fetchPlan. */
  blobs: Descriptor[];
  totalBytes: number;
  /** What could not be read, one line each (the image itself is not failed for it). */
  problems: string[];
}

function notFound(err: unknown): boolean {
  return (err instanceof UpstreamError && err.kind === 'not_found') || (err instanceof OciError && err.code === 'MANIFEST_UNKNOWN');
}

/**
 * Fetches, through the pull path (verified by digest, stored, linked), each manifest's referrers as
 * the upstream lists them (the referrers API, else the referrers tag schema: ProxiedReferrers,
 * which keeps the list per subject) and its cosign tags when the upstream has them; returns them
 * and their blobs. A referrer whose manifest names another subject is left out.
 */
export async function planReferrers(pull: PullThrough, referrers: ProxiedReferrers, t: Target, subjects: readonly string[]): Promise<ReferrersPlan> {
  const manifests: string[] = [];
  const seen = new Set<string>();
  const blobs = new Map<string, Descriptor>();
  const tags = new Map<string, string>();
  const problems: string[] = [];
  const collect = async (digest: string, bytes: Buffer, mediaType: string, depth: number): Promise<void> => {
    if (seen.has(digest)) return;
    seen.add(digest);
    manifests.push(digest);
    const parsed = parseManifest(bytes, mediaType);
    if (INDEX_MEDIA_TYPES.has(parsed.mediaType)) {
      if (depth > 2) throw new Error(`manifest indexes nested too deep under ${digest}`);
      for (const child of parsed.manifests) {
        const m = await pull.getManifestByDigest(t, parseDigest(child.digest));
        await collect(m.digest, m.bytes, m.mediaType, depth + 1);
      }
      return;
    }
    for (const b of parsed.blobs) blobs.set(b.digest, b);
  };
  for (const subject of subjects) {
    const d = parseDigest(subject);
    try {
      const answer = await referrers.get(t, d, []);
      if (answer.staleReason) problems.push(`referrers of ${subject}: the upstream failed (${answer.staleReason}); the ones stored earlier are carried`);
      if (answer.descriptors.length > MAX_REFERRERS_PER_MANIFEST) problems.push(`referrers of ${subject}: ${answer.descriptors.length}, only the first ${MAX_REFERRERS_PER_MANIFEST} are carried`);
      for (const r of answer.descriptors.slice(0, MAX_REFERRERS_PER_MANIFEST)) {
        try {
          const m = await pull.getManifestByDigest(t, parseDigest(r.digest));
          if (parseManifest(m.bytes, m.mediaType).subject?.digest !== subject) {
            problems.push(`referrer ${r.digest} of ${subject}: its manifest names another subject; left out`);
            continue;
          }
          await collect(m.digest, m.bytes, m.mediaType, 0);
        } catch (err) {
          problems.push(`referrer ${r.digest} of ${subject}: ${(err as Error).message}`);
        }
      }
    } catch (err) {
      problems.push(`referrers of ${subject}: ${(err as Error).message}`);
    }
    for (const tag of cosignTags(d)) {
      try {
        const m = await pull.getManifestByTag(t, tag);
        tags.set(tag, m.digest);
        await collect(m.digest, m.bytes, m.mediaType, 0);
      } catch (err) {
        if (!notFound(err)) problems.push(`cosign tag ${tag}: ${(err as Error).message}`);
      }
    }
  }
  const list = [...blobs.values()];
  return { manifests, tags, blobs: list, totalBytes: list.reduce((n, b) => n + Math.max(0, b.size), 0), problems };
}

/** Fetches every blob of the plan (4 at a time); returns the bytes that came from the upstream. */
export async function fetchPlan(pull: PullThrough, t: Target, plan: Pick<PrefetchPlan, 'blobs'>, events: PrefetchEvents = {}): Promise<{ fetchedBytes: number }> {
  let fetchedBytes = 0;
  const queue = [...plan.blobs];
  const worker = async (): Promise<void> => {
    for (let b = queue.shift(); b; b = queue.shift()) {
      const answer = await pull.getBlob(t, parseDigest(b.digest));
      if (answer.cache === 'hit') {
        await answer.release();
        events.onBytes?.(Math.max(0, b.size));
        events.onBlob?.(b.digest, false);
        continue;
      }
      // Through sendTo, the send pool's buffers: util/counting-sink.ts.
      await answer.sendTo(
        countingSink((n) => {
          fetchedBytes += n;
          events.onBytes?.(n);
        }),
      );
      events.onBlob?.(b.digest, true);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { fetchedBytes };
}
