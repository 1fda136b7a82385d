/** `stevedore ls`, `du` and `gc`: what the store holds, and reclaiming what nothing references. */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/config.js';
import { parseDigest, tryParseDigest } from '../oci/digest.js';
import { INDEX_MEDIA_TYPES, parseManifest } from '../oci/media-types.js';
import { Store } from '../storage/store.js';
import { UploadStore } from '../storage/upload-store.js';
import { formatBytes } from '../config/units.js';

async function openStore(config: Config): Promise<Store> {
  const store = new Store(config.storage.path, { maxSize: config.storage.maxSize });
  await store.init({ sweep: false });
  return store;
}

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
      total += store.blobs.index.peek(b.digest) ?? 0;
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
      let lastPulled: Date | null = null;
      try {
        lastPulled = (await fsp.stat(store.blobs.paths.blob(parseDigest(link.digest)))).mtime;
      } catch {
        // manifest evicted
      }
      rows.push({ repository: display, tag, digest: link.digest, size: await sizeUnder(store, link.digest), lastPulled });
    }
  }
  return rows.sort((a, b) => a.repository.localeCompare(b.repository) || a.tag.localeCompare(b.tag));
}

export async function runLs(config: Config, opts: { json?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
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
  const s = store.blobs.index.stats();
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

/** Content younger than this is never collected: a server may be about to link it. */
const GC_MIN_AGE_MS = 10 * 60_000;

/**
 * Content no repository links to (left by deleted manifests and tags, or by a crash between
 * storing and linking) and upload sessions older than `registry.uploadMaxAge`. Dry run unless
 * `apply`: prints what would be freed.
 */
export async function collectGarbage(store: Store, opts: { apply: boolean }): Promise<{ blobs: string[]; bytes: number }> {
  const linked = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name === '_links') {
        for (const alg of await fsp.readdir(p)) for (const hex of await fsp.readdir(path.join(p, alg))) linked.add(`${alg}:${hex}`);
      } else if (e.isDirectory() && !e.name.startsWith('_')) {
        await walk(p);
      }
    }
  };
  await walk(store.blobs.paths.repositories);
  const unreferenced: string[] = [];
  let bytes = 0;
  for (const alg of await fsp.readdir(store.blobs.paths.blobs).catch(() => [] as string[])) {
    for (const prefix of await fsp.readdir(path.join(store.blobs.paths.blobs, alg)).catch(() => [] as string[])) {
      for (const hex of await fsp.readdir(path.join(store.blobs.paths.blobs, alg, prefix)).catch(() => [] as string[])) {
        const digest = `${alg}:${hex}`;
        const d = tryParseDigest(digest);
        if (!d || linked.has(digest) || store.blobs.index.isPinned(digest)) continue;
        // Stored in the last minutes by a running server (or a replica): its repository link may
        // not be written yet. Left for the next gc.
        const st = await fsp.stat(path.join(store.blobs.paths.blobs, alg, prefix, hex)).catch(() => null);
        if (!st || st.mtimeMs > Date.now() - GC_MIN_AGE_MS) continue;
        unreferenced.push(digest);
        bytes += store.blobs.index.peek(digest) ?? 0;
        if (opts.apply) await store.blobs.delete(d);
      }
    }
  }
  return { blobs: unreferenced, bytes };
}

export async function runGc(config: Config, opts: { delete?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const store = await openStore(config);
  const apply = opts.delete === true;
  const r = await collectGarbage(store, { apply });
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
