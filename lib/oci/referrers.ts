/**
 * The referrers API's answer (distribution-spec "Listing Referrers"): an OCI image index whose
 * `manifests` describe every manifest whose `subject` is a given digest. Pure: bytes in, JSON out.
 */
import { tryParseDigest } from './digest.js';
import { MediaType } from './media-types.js';

export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The descriptor of a referrer manifest: `artifactType` is its own, else (image manifests only) its
 * config's media type; every annotation is copied.
 */
export function referrerDescriptor(bytes: Buffer, digest: string, mediaType: string): ReferrerDescriptor {
  const d: ReferrerDescriptor = { mediaType, digest, size: bytes.length };
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return d;
  }
  if (!isRecord(doc)) return d;
  if (typeof doc.artifactType === 'string' && doc.artifactType !== '') d.artifactType = doc.artifactType;
  else if (!Array.isArray(doc.manifests) && isRecord(doc.config) && typeof doc.config.mediaType === 'string') {
    d.artifactType = doc.config.mediaType;
  }
  if (isRecord(doc.annotations)) {
    const ann: Record<string, string> = {};
    for (const [k, v] of Object.entries(doc.annotations)) if (typeof v === 'string') ann[k] = v;
    d.annotations = ann;
  }
  return d;
}

/** Keeps the well-formed descriptors of an upstream's answer: a digest we can fetch by, a whole size, string annotations. */
export function sanitizeDescriptors(list: unknown): ReferrerDescriptor[] {
  if (!Array.isArray(list)) return [];
  const out: ReferrerDescriptor[] = [];
  for (const v of list) {
    if (!isRecord(v) || typeof v.digest !== 'string' || !tryParseDigest(v.digest) || typeof v.mediaType !== 'string') continue;
    if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) continue;
    const d: ReferrerDescriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
    if (typeof v.artifactType === 'string') d.artifactType = v.artifactType;
    if (isRecord(v.annotations)) d.annotations = Object.fromEntries(Object.entries(v.annotations).filter((e): e is [string, string] => typeof e[1] === 'string'));
    out.push(d);
  }
  return out;
}

/** The referrers index, filtered by `artifactType` when given; sorted by digest for stable answers. */
export function referrersIndex(descriptors: ReferrerDescriptor[], artifactType: string | null): {
  schemaVersion: 2;
  mediaType: string;
  manifests: ReferrerDescriptor[];
} {
  const seen = new Set<string>();
  const manifests = descriptors
    .filter((d) => (artifactType === null || d.artifactType === artifactType) && !seen.has(d.digest) && seen.add(d.digest))
    .sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
}

/** The referrers tag schema's tag for a digest: `sha256-<hex>` (for registries without the API). */
export function referrersTag(digest: { algorithm: string; hex: string }): string {
  return `${digest.algorithm}-${digest.hex}`.slice(0, 128);
}

/** The cosign tag suffixes carried with an image: signatures and attestations (cosign's specs/SIGNATURE_SPEC.md, ATTESTATION_SPEC.md). */
export const COSIGN_TAG_SUFFIXES = ['sig', 'att'] as const;

/** The cosign tags of a manifest digest: `sha256-<hex>.sig`, `sha256-<hex>.att` (none for another algorithm). */
export function cosignTags(digest: { algorithm: string; hex: string }): string[] {
  return digest.algorithm === 'sha256' ? COSIGN_TAG_SUFFIXES.map((s) => `sha256-${digest.hex}.${s}`) : [];
}

/** Whether a tag is one of cosign's (`sha256-<hex>.sig` / `.att`). */
export function isCosignTag(tag: string): boolean {
  return /^sha256-[a-f0-9]{64}\.(?:sig|att)$/.test(tag);
}
