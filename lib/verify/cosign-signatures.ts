/**
 * The legacy cosign signature's manifest (cosign's specs/SIGNATURE_SPEC.md): its media type,
 * annotations and signed layers, read without sigstore's libraries (loaded only when a policy
 * checks one: check-simple-signing.ts).
 */
export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const CERTIFICATE_ANNOTATION = 'dev.sigstore.cosign/certificate';
export const CHAIN_ANNOTATION = 'dev.sigstore.cosign/chain';
export const REKOR_BUNDLE_ANNOTATION = 'dev.sigstore.cosign/bundle';

/** One signed layer of a `.sig` manifest: its payload's descriptor and the signature. */
export interface SimpleSignature {
  payloadDigest: string;
  size: number;
  signature: string;
  /** Keyless: the certificate (PEM) and the Rekor bundle (JSON) annotations; null: signed with a key. */
  keyless: { certificate: string; rekorBundle: string | null } | null;
}

/** The signed layers of a `.sig` manifest (the others are ignored). */
export function simpleSignatures(manifest: unknown): SimpleSignature[] {
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  if (!Array.isArray(layers)) return [];
  const out: SimpleSignature[] = [];
  for (const l of layers as Array<Record<string, unknown> | null>) {
    if (!l || l.mediaType !== SIMPLE_SIGNING || typeof l.digest !== 'string' || typeof l.size !== 'number') continue;
    const ann = (l.annotations ?? {}) as Record<string, unknown>;
    const signature = ann[SIGNATURE_ANNOTATION];
    if (typeof signature !== 'string') continue;
    const certificate = ann[CERTIFICATE_ANNOTATION];
    const rekorBundle = ann[REKOR_BUNDLE_ANNOTATION];
    out.push({
      payloadDigest: l.digest,
      size: l.size,
      signature,
      keyless: typeof certificate === 'string' ? { certificate, rekorBundle: typeof rekorBundle === 'string' ? rekorBundle : null } : null,
    });
  }
  return out;
}
