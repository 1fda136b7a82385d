/**
 * Digests: `algorithm ":" encoded` (OCI image-spec descriptor.md). We accept the registered
 * algorithms sha256 and sha512 with lowercase hex of the exact length; anything else is invalid.
 */
import { createHash, type Hash } from 'node:crypto';
import { OciError } from './errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  /** The canonical string form, `sha256:abc...`. */
  readonly value: string;
}

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_RE = /^(sha256|sha512):([a-f0-9]+)$/;

export function tryParseDigest(input: string): Digest | null {
  const m = DIGEST_RE.exec(input);
  if (!m) return null;
  const algorithm = m[1] as DigestAlgorithm;
  const hex = m[2]!;
  if (hex.length !== HEX_LENGTH[algorithm]) return null;
  return { algorithm, hex, value: input };
}

export function parseDigest(input: string): Digest {
  const d = tryParseDigest(input);
  if (!d) throw new OciError('DIGEST_INVALID', `invalid digest ${JSON.stringify(input.slice(0, 200))}`);
  return d;
}

export function isDigestString(input: string): boolean {
  return tryParseDigest(input) !== null;
}

export function createDigester(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Buffer | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(data).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}
