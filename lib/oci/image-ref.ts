/**
 * Full image references as users type them (`alpine`, `alpine:3.19`, `ghcr.io/org/app@sha256:…`,
 * `localhost:5000/x:1`), normalized the way Docker does (distribution `reference/normalize.go`):
 * no registry → docker.io; on docker.io a single-segment name → `library/<name>`; no tag and no
 * digest → `latest`.
 */
import { OciError } from './errors.js';
import { tryParseDigest } from './digest.js';
import { isValidName, isValidTag } from './name.js';

export interface ImageRef {
  /** Registry host as clients name it: `docker.io`, `ghcr.io`, `localhost:5000`. */
  registry: string;
  /** Repository name on that registry, e.g. `library/alpine`. */
  name: string;
  tag: string | null;
  digest: string | null;
}

const REGISTRY_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d{1,5})?$/;

export function parseImageRef(input: string): ImageRef {
  const text = input.trim();
  const bad = (why: string): OciError => new OciError('NAME_INVALID', `invalid image reference ${JSON.stringify(text.slice(0, 300))}: ${why}`);
  if (!text) throw bad('empty');
  let rest = text;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    if (!tryParseDigest(digest)) throw bad('invalid digest');
    rest = rest.slice(0, at);
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    if (!isValidTag(tag)) throw bad('invalid tag');
    rest = rest.slice(0, colon);
  }
  let registry = 'docker.io';
  const firstSlash = rest.indexOf('/');
  if (firstSlash !== -1) {
    const first = rest.slice(0, firstSlash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      if (!REGISTRY_RE.test(first)) throw bad('invalid registry host');
      registry = first.toLowerCase();
      rest = rest.slice(firstSlash + 1);
    }
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = 'docker.io';
  let name = rest;
  if (registry === 'docker.io' && !name.includes('/')) name = `library/${name}`;
  if (!isValidName(name)) throw bad('invalid repository name');
  if (tag === null && digest === null) tag = 'latest';
  return { registry, name, tag, digest };
}

/** `docker.io/library/alpine:3.19`, `ghcr.io/org/app@sha256:…` (tag and digest both when both given). */
export function formatImageRef(ref: ImageRef): string {
  return `${ref.registry}/${ref.name}${ref.tag !== null ? `:${ref.tag}` : ''}${ref.digest !== null ? `@${ref.digest}` : ''}`;
}
