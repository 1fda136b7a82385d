/**
 * Manifest media types and what a manifest references. Pure: takes bytes, returns descriptors.
 */
import { OciError } from './errors.js';
import { tryParseDigest } from './digest.js';

export const MediaType = {
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OctetStream: 'application/octet-stream',
} as const;

/** Sent upstream in `Accept` on every manifest request: a registry asked without it downgrades to schema 1. */
export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
  MediaType.DockerSchema1Signed,
  MediaType.DockerSchema1,
].join(', ');

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.OciIndex, MediaType.DockerManifestList]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  artifactType?: string;
}

export interface ParsedManifest {
  mediaType: string;
  /** Child manifests (indexes only). */
  manifests: Descriptor[];
  /** Config and layers (image manifests), or the fsLayers of schema 1. */
  blobs: Descriptor[];
  subject?: Descriptor;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!isRecord(v)) throw new OciError('MANIFEST_INVALID', `${where} is not a descriptor`);
  const { mediaType, digest, size } = v;
  if (typeof digest !== 'string' || !tryParseDigest(digest)) {
    throw new OciError('MANIFEST_INVALID', `${where} has an invalid digest`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new OciError('MANIFEST_INVALID', `${where} has an invalid size`);
  }
  const d: Descriptor = { mediaType: typeof mediaType === 'string' ? mediaType : MediaType.OctetStream, digest, size };
  if (isRecord(v.platform)) d.platform = v.platform as Descriptor['platform'];
  if (typeof v.artifactType === 'string') d.artifactType = v.artifactType;
  return d;
}

function descriptors(v: unknown, where: string): Descriptor[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new OciError('MANIFEST_INVALID', `${where} is not an array`);
  return v.map((item, i) => descriptor(item, `${where}[${i}]`));
}

/**
 * Parses manifest bytes. `declaredType` is the Content-Type the bytes came with, if any; the
 * manifest's own `mediaType` field wins when present, else the shape decides.
 */
export function parseManifest(bytes: Buffer, declaredType?: string): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new OciError('MANIFEST_INVALID', 'manifest is not valid JSON');
  }
  if (!isRecord(doc)) throw new OciError('MANIFEST_INVALID', 'manifest is not a JSON object');
  const mediaType = detectMediaType(doc, declaredType);
  if (doc.schemaVersion === 1) {
    const fsLayers = Array.isArray(doc.fsLayers) ? doc.fsLayers : [];
    const blobs: Descriptor[] = [];
    for (const l of fsLayers) {
      if (isRecord(l) && typeof l.blobSum === 'string' && tryParseDigest(l.blobSum)) {
        blobs.push({ mediaType: MediaType.OctetStream, digest: l.blobSum, size: -1 });
      }
    }
    return { mediaType, manifests: [], blobs };
  }
  if (doc.schemaVersion !== 2) throw new OciError('MANIFEST_INVALID', 'unsupported manifest schemaVersion');
  const parsed: ParsedManifest = { mediaType, manifests: [], blobs: [] };
  if (INDEX_MEDIA_TYPES.has(mediaType)) {
    parsed.manifests = descriptors(doc.manifests, 'manifests');
  } else {
    if (doc.config !== undefined) parsed.blobs.push(descriptor(doc.config, 'config'));
    parsed.blobs.push(...descriptors(doc.layers, 'layers'));
    if (doc.blobs !== undefined) parsed.blobs.push(...descriptors(doc.blobs, 'blobs'));
  }
  if (doc.subject !== undefined) parsed.subject = descriptor(doc.subject, 'subject');
  return parsed;
}

/**
 * The manifest's own `mediaType` field wins; without one (optional in OCI), the shape decides, and
 * a declared Content-Type is used only where it agrees with the shape.
 */
function detectMediaType(doc: Record<string, unknown>, declaredType?: string): string {
  if (typeof doc.mediaType === 'string' && doc.mediaType.length > 0) return doc.mediaType;
  if (doc.schemaVersion === 1) {
    return Array.isArray(doc.signatures) ? MediaType.DockerSchema1Signed : MediaType.DockerSchema1;
  }
  const declared = declaredType ? normalizeContentType(declaredType) : undefined;
  if (Array.isArray(doc.manifests)) {
    return declared && INDEX_MEDIA_TYPES.has(declared) ? declared : MediaType.OciIndex;
  }
  return declared === MediaType.DockerManifest ? declared : MediaType.OciManifest;
}

/** Strips parameters (`; charset=utf-8`) and case from a Content-Type. */
export function normalizeContentType(value: string): string {
  return value.split(';')[0]!.trim().toLowerCase();
}

/** The media type to serve stored manifest bytes with: the one their content declares. */
export function manifestMediaType(bytes: Buffer): string {
  return parseManifest(bytes).mediaType;
}
