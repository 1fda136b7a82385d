/**
 * Deterministic, incompressible benchmark content, generated fast: the AES-128-CTR keystream
 * (AES-NI) keyed by a seed. The same seed and size always give the same bytes, so a blob can be
 * hashed in one pass and streamed to the registry in a second without holding it in memory.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { MANIFEST_ACCEPT, MediaType } from '../../test/fixtures/images.js';

const CHUNK = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

export interface BlobSpec {
  seed: string;
  size: number;
  digest: string;
  mediaType: string;
}

/** The bytes of `seed`, `size` long, in chunks of at most 4 MiB. */
export function* contentChunks(seed: string, size: number): Generator<Buffer> {
  const key = createHash('sha256').update(`stevedore-bench\0${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  let left = size;
  while (left > 0) {
    const n = Math.min(CHUNK, left);
    yield cipher.update(n === CHUNK ? ZEROS : ZEROS.subarray(0, n));
    left -= n;
  }
}

export function contentBytes(seed: string, size: number): Buffer {
  return Buffer.concat([...contentChunks(seed, size)]);
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function contentBlob(seed: string, size: number, mediaType = 'application/octet-stream'): BlobSpec {
  const h = createHash('sha256');
  for (const c of contentChunks(seed, size)) h.update(c);
  return { seed, size, digest: `sha256:${h.digest('hex')}`, mediaType };
}

/** The media types and the Accept header of every manifest type a pull accepts (distribution rewrites to schema 1 without them): the test fixture's. */
export { MANIFEST_ACCEPT, MediaType };

export interface ImageSpec {
  /** Exact manifest JSON bytes. */
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  configDigest: string;
  layers: BlobSpec[];
  /** Manifest + config + layers, bytes: what one complete pull transfers. */
  totalBytes: number;
}

/**
 * A Docker schema 2 image whose layers are `layerSizes` bytes of keystream. The layers are not real
 * tar+gzip archives: registries and this benchmark's clients never look inside them.
 */
export function buildImage(seed: string, layerSizes: number[]): ImageSpec {
  const layers = layerSizes.map((size, i) => contentBlob(`${seed}/layer/${i}`, size, MediaType.dockerLayer));
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config: { Cmd: ['/bin/sh'], Labels: { 'org.stevedore.bench.seed': seed } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha256Hex(l.digest)}`) },
    }),
  );
  const configDigest = `sha256:${sha256Hex(config)}`;
  const manifest = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: MediaType.dockerManifest,
        config: { mediaType: MediaType.dockerConfig, size: config.length, digest: configDigest },
        layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
      },
      null,
      3,
    ),
  );
  const totalBytes = manifest.length + config.length + layers.reduce((a, l) => a + l.size, 0);
  return { manifest, manifestDigest: `sha256:${sha256Hex(manifest)}`, config, configDigest, layers, totalBytes };
}
