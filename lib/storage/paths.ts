/**
 * The on-disk layout, owned by lib/storage. Every name below has been validated against the OCI
 * grammar before it gets here, so no component can be "..", empty, or contain a "%".
 *
 *   <root>/
 *     blobs/
 *       sha256/
 *         ab/
 *           abcdef0123...          verified content: blobs and manifests alike, named by digest
 *     pins/
 *       sha256/<hex>               empty: this content is pinned (hosted or seeded), never evicted
 *     tmp/
 *       <random>.part             downloads and uploads in progress; swept at start-up
 *     repositories/
 *       <upstream>/                e.g. docker.io, ghcr.io
 *         <name...>/               e.g. library/alpine
 *           _tags/
 *             <tag>                JSON {digest, mediaType, size}: what the tag pointed at
 *           _links/
 *             sha256/<hex>         empty: this repository has this digest (blob or manifest)
 *           _tagslist.json         the last complete tags list fetched from the upstream
 *
 * `_tags`, `_links` and `_tagslist.json` cannot collide with a name component: those start with
 * [a-z0-9].
 */
import path from 'node:path';
import type { Digest } from '../oci/digest.js';

export class StorePaths {
  readonly root: string;
  readonly blobs: string;
  readonly tmp: string;
  readonly repositories: string;
  readonly pins: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.blobs = path.join(this.root, 'blobs');
    this.tmp = path.join(this.root, 'tmp');
    this.repositories = path.join(this.root, 'repositories');
    this.pins = path.join(this.root, 'pins');
  }

  pin(d: Digest): string {
    return path.join(this.pins, d.algorithm, d.hex);
  }

  blob(d: Digest): string {
    return path.join(this.blobs, d.algorithm, d.hex.slice(0, 2), d.hex);
  }

  repo(upstream: string, name: string): string {
    return path.join(this.repositories, upstream, ...name.split('/'));
  }

  tag(upstream: string, name: string, tag: string): string {
    return path.join(this.repo(upstream, name), '_tags', tag);
  }

  link(upstream: string, name: string, d: Digest): string {
    return path.join(this.repo(upstream, name), '_links', d.algorithm, d.hex);
  }

  tagsList(upstream: string, name: string): string {
    return path.join(this.repo(upstream, name), '_tagslist.json');
  }
}
