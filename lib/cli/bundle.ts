/** `stevedore export` / `stevedore import`: carry images across an air gap as OCI layout archives. */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import type { Config } from '../config/config.js';
import { formatImageRef, type ImageRef } from '../oci/image-ref.js';
import { openStoreForCommand as openStore } from '../storage/open-store.js';
import { DEFAULT_MAX_BUNDLE_ENTRIES, exportBundle, importBundle, resolveStored } from '../registry/oci-bundle.js';
import { formatBytes } from '../config/units.js';

export async function runExport(config: Config, images: ImageRef[], output: string, out: NodeJS.WritableStream = process.stderr): Promise<void> {
  const store = await openStore(config);
  const resolved = [];
  for (const img of images) resolved.push(await resolveStored(store, img));
  const tmp = `${output}.part`;
  try {
    const r = await exportBundle(store, resolved, output === '-' ? process.stdout : createWriteStream(tmp));
    if (output !== '-') await fsp.rename(tmp, output);
    out.write(`exported ${resolved.map((i) => formatImageRef(i.ref)).join(', ')}: ${r.blobs} blobs, ${formatBytes(r.bytes)}${output === '-' ? '' : ` → ${output}`}\n`);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

export async function runImport(config: Config, input: string, out: NodeJS.WritableStream = process.stderr, opts: { maxEntries?: number } = {}): Promise<void> {
  const store = await openStore(config);
  const r = await importBundle(store, input === '-' ? process.stdin : createReadStream(input), {
    maxEntries: opts.maxEntries ?? DEFAULT_MAX_BUNDLE_ENTRIES,
    maxSize: config.storage.maxSize,
  });
  for (const img of r.images) {
    const configured = config.upstreams.has(img.ref.registry);
    out.write(`imported ${formatImageRef(img.ref)} (${img.digest})${configured ? '' : ` — note: upstream ${img.ref.registry} is not configured, so nothing will pull it`}\n`);
  }
  out.write(`imported ${r.images.length} images: ${r.blobs} blobs, ${formatBytes(r.bytes)}, pinned\n`);
}
