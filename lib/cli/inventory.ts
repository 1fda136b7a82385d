/** `stevedore ls`, `du` and `gc`: what the store holds, and reclaiming what nothing references. */
import type { Config } from '../config/config.js';
import { parseDigest, tryParseDigest } from '../oci/digest.js';
import { INDEX_MEDIA_TYPES, parseManifest } from '../oci/media-types.js';
import { openStoreForCommand as openStore } from '../storage/open-store.js';
import type { Store } from '../storage/store.js';
import { UploadStore } from '../storage/upload-store.js';
import { formatBytes, parseDuration } from '../config/units.js';

export interface RepoRow {
  repository: string;
  tag: string;
  digest: string;
  /** Bytes of the manifest(s) and every stored blob under the tag. */
  size: number;
  /** When the tag's manifest was last served (file mtime, refreshed hourly on hits). */
  lastPulled: Date | null;
}

async function sizeUnder(store: Store, digest: string, seen = new Set<string>()): Promise<number> {
  if (seen.has(digest)) return 0;
  seen.add(digest);
  const d = parseDigest(digest);
  const bytes = await store.blobs.readSmall(d);
  if (!bytes) return 0;
  let total = bytes.length;
  let parsed;
  try {
    parsed = parseManifest(bytes);
  } catch {
    return total;
  }
  if (INDEX_MEDIA_TYPES.has(parsed.mediaType)) {
    for (const c of parsed.manifests) total += await sizeUnder(store, c.digest, seen);
  } else {
    for (const b of parsed.blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      total += store.blobs.sizeOf(b.digest) ?? 0;
    }
  }
  return total;
}

export async function listImages(store: Store): Promise<RepoRow[]> {
  const rows: RepoRow[] = [];
  for (const repo of await store.repos.listRepositories()) {
    const display = repo.upstream.startsWith('_') ? repo.name : `${repo.upstream}/${repo.name}`;
    for (const tag of (await store.repos.listStoredTags(repo)).sort()) {
      const link = await store.repos.getTag(repo, tag);
      if (!link) continue;
      const lastPulled = await store.blobs.lastUsed(parseDigest(link.digest));
      rows.push({ repository: display, tag, digest: link.digest, size: await sizeUnder(store, link.digest), lastPulled });
    }
  }
  return rows.sort((a, b) => a.repository.localeCompare(b.repository) || a.tag.localeCompare(b.tag));
}

/** One tag its upstream deleted, kept in the store (lib/cache/gone-tags.ts): `ls --gone`. */
export interface GoneRow {
  repository: string;
  tag: string;
  digest: string;
  /** When the upstream was first seen not to have it. */
  goneSince: Date;
  /** What the upstream answered. */
  reason: string;
  /** Bytes of the manifest(s) and every stored blob under the tag. */
  size: number;
}

export async function listGone(store: Store): Promise<GoneRow[]> {
  const rows: GoneRow[] = [];
  for (const { repo, tag, record } of await store.repos.listGone()) {
    rows.push({ repository: `${repo.upstream}/${repo.name}`, tag, digest: record.digest, goneSince: new Date(record.since), reason: record.reason, size: await sizeUnder(store, record.digest) });
  }
  return rows.sort((a, b) => a.goneSince.getTime() - b.goneSince.getTime() || a.repository.localeCompare(b.repository) || a.tag.localeCompare(b.tag));
}

async function runLsGone(store: Store, opts: { json?: boolean }, out: NodeJS.WritableStream): Promise<void> {
  const rows = await listGone(store);
  if (opts.json) {
    out.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  const table = [['REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'GONE SINCE'], ...rows.map((r) => [r.repository, r.tag, r.digest.slice(0, 19), formatBytes(r.size), r.goneSince.toISOString().replace(/\.\d+Z$/, 'Z')])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table) out.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}

export async function runLs(config: Config, opts: { json?: boolean; gone?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  if (opts.gone) return runLsGone(await openStore(config), opts, out);
  const rows = await listImages(await openStore(config));
  if (opts.json) {
    out.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  const table = [['REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'LAST PULLED'], ...rows.map((r) => [r.repository, r.tag, r.digest.slice(0, 19), formatBytes(r.size), r.lastPulled?.toISOString().replace(/\.\d+Z$/, 'Z') ?? '-'])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table) out.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}

export async function runDu(config: Config, opts: { json?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const store = await openStore(config);
  const s = store.blobs.stats();
  const doc = { ...s, totalBytes: s.cachedBytes + s.pinnedBytes, maxSize: config.storage.maxSize };
  if (opts.json) {
    out.write(`${JSON.stringify(doc)}\n`);
    return;
  }
  out.write(
    `cached  ${formatBytes(s.cachedBytes).padStart(10)}  ${s.cachedCount} blobs${config.storage.maxSize !== null ? ` (maxSize ${formatBytes(config.storage.maxSize)})` : ''}\n` +
      `pinned  ${formatBytes(s.pinnedBytes).padStart(10)}  ${s.pinnedCount} blobs\n` +
      `total   ${formatBytes(doc.totalBytes).padStart(10)}  ${s.cachedCount + s.pinnedCount} blobs\n`,
  );
}

/** Content younger than this is never collected by default: a server may be about to link it. */
const GC_MIN_AGE_MS = 10 * 60_000;

/**
 * Content no repository links to (left by deleted manifests and tags, or by a crash between
 * storing and linking) and upload sessions older than `registry.uploadMaxAge`. Dry run unless
 * `apply`: prints what would be freed.
 */
export async function collectGarbage(store: Store, opts: { apply: boolean; minAgeMs?: number }): Promise<{ blobs: string[]; bytes: number }> {
  const minAge = opts.minAgeMs ?? GC_MIN_AGE_MS;
  const linked = new Set<string>();
  for (const repo of await store.repos.listRepositories()) for (const d of await store.repos.listLinks(repo)) linked.add(d);
  const unreferenced: string[] = [];
  let bytes = 0;
  for await (const o of store.blobs.listStored()) {
    const d = tryParseDigest(o.digest);
    if (!d || linked.has(o.digest) || o.pinned || store.blobs.isPinned(o.digest)) continue;
    // Stored in the last minutes by a running server (or a replica): its repository link may
    // not be written yet. Left for the next gc.
    if (o.mtime > Date.now() - minAge) continue;
    unreferenced.push(o.digest);
    bytes += o.size;
    if (opts.apply) await store.blobs.delete(d);
  }
  return { blobs: unreferenced, bytes };
}

export async function runGc(config: Config, opts: { delete?: boolean; minAge?: string }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const minAgeMs = opts.minAge === undefined ? GC_MIN_AGE_MS : parseDuration(opts.minAge);
  if (minAgeMs === null) throw new Error(`--min-age: not a duration: ${opts.minAge}`);
  const store = await openStore(config);
  const apply = opts.delete === true;
  const r = await collectGarbage(store, { apply, minAgeMs });
  for (const d of r.blobs) out.write(`${apply ? 'deleted' : 'would delete'} ${d}\n`);
  // Upload sessions idle past registry.uploadMaxAge (a running server sweeps them too).
  const uploads = new UploadStore(store.blobs);
  const expired = await uploads.listExpired(config.registry.uploadMaxAge);
  let uploadBytes = 0;
  for (const u of expired) {
    uploadBytes += u.bytes;
    if (apply) await uploads.delete(u.uuid);
    out.write(`${apply ? 'deleted' : 'would delete'} upload ${u.uuid} (${formatBytes(u.bytes)})\n`);
  }
  out.write(
    `${apply ? 'freed' : 'would free'} ${formatBytes(r.bytes + uploadBytes)}: ${r.blobs.length} unreferenced blobs, ${expired.length} expired uploads${apply ? '' : ' (dry run: --delete to apply)'}\n`,
  );
}
