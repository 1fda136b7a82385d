/**
 * Prefetch: resolve an image against its upstream and fetch every manifest and blob into the store
 * through the same path a pull uses (coalesced, verified). Content already stored is skipped, so an
 * interrupted prefetch resumes where it stopped. Optionally pins what it fetched (never evicted).
 */
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { parseDigest } from '../oci/digest.js';
import { INDEX_MEDIA_TYPES, parseManifest, type Descriptor } from '../oci/media-types.js';
import type { PullThrough, Target } from './pull-through.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PrefetchPlan {
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
  return { manifests, blobs: list, totalBytes: list.reduce((n, b) => n + Math.max(0, b.size), 0) };
}

async function drain(stream: Readable, onBytes: (n: number) => void): Promise<void> {
  stream.on('data', (chunk: Buffer) => onBytes(chunk.length));
  await once(stream, 'end');
}

/** Fetches every blob of the plan (4 at a time); returns the bytes that came from the upstream. */
export async function fetchPlan(pull: PullThrough, t: Target, plan: PrefetchPlan, events: PrefetchEvents = {}): Promise<{ fetchedBytes: number }> {
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
      await drain(answer.open(), (n) => {
        fetchedBytes += n;
        events.onBytes?.(n);
      });
      events.onBlob?.(b.digest, true);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return { fetchedBytes };
}
