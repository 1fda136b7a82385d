/**
 * Repository names and references, after the OCI distribution spec ("Pulling manifests"):
 *
 *   name      := component ("/" component)*            at most 255 characters in all
 *   component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag       := [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
 *   reference := tag | digest
 *
 * A path segment such as "..", "%2e%2e" or an empty segment can never match `component`, so a
 * validated name is safe to use as a path below the store's root.
 */
import { OciError } from './errors.js';
import { tryParseDigest, type Digest } from './digest.js';

const COMPONENT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

export function isValidNameComponent(component: string): boolean {
  return COMPONENT_RE.test(component);
}

export function isValidName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  return name.split('/').every(isValidNameComponent);
}

export function parseName(name: string): string {
  if (!isValidName(name)) {
    throw new OciError('NAME_INVALID', `invalid repository name ${JSON.stringify(name.slice(0, 300))}`);
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** Parses a manifest reference: a tag or a digest. Throws MANIFEST_INVALID-free errors by kind. */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) {
    const digest = tryParseDigest(ref);
    if (!digest) throw new OciError('DIGEST_INVALID', `invalid digest ${JSON.stringify(ref.slice(0, 200))}`);
    return { kind: 'digest', digest };
  }
  if (!isValidTag(ref)) {
    throw new OciError('MANIFEST_INVALID', `invalid tag ${JSON.stringify(ref.slice(0, 200))}`, { status: 400 });
  }
  return { kind: 'tag', tag: ref };
}

/**
 * A reference that is only read (GET, HEAD, DELETE): a tag that cannot exist is unknown (404
 * MANIFEST_UNKNOWN, as the distribution spec's conformance suite expects), not malformed; a PUT
 * keeps parseReference's 400.
 */
export function parseReadReference(ref: string): Reference {
  if (!ref.includes(':') && !isValidTag(ref)) {
    throw new OciError('MANIFEST_UNKNOWN', `manifest unknown: ${JSON.stringify(ref.slice(0, 200))} is not a valid tag`);
  }
  return parseReference(ref);
}

export function referenceString(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest.value;
}
