/**
 * The on-disk layout, owned by lib/storage. Every name below has been validated against the OCI
 * grammar before it gets here, so no component can be "..", empty, or contain a "%".
 *
 *   <root>/
 *     blobs/
 *       sha256/
 *         ab/
 *           abcdef0123...          verified content: blobs and manifests alike, named by digest
 *     index.snapshot               digest, size and recency of every stored file, written at shutdown
 *                                  and every few minutes: start-up reads it instead of stat-ing each
 *                                  file (directory listings stay the truth about what exists)
 *     pins/
 *       sha256/<hex>               empty: this content is pinned (hosted, seeded, or kept because its
 *                                  upstream deleted it: gone/), never evicted
 *     warm/
 *       <mark id>                  JSON {expires, digests}: what a warm mark (node tier pre-heat,
 *                                  lib/cache/preheat.ts) pinned here; unpinned and removed once it expires
 *     gone/
 *       <upstream>/<name...>/
 *         _tags/<tag>              JSON {digest, since, reason, held, pinned}: a cached tag the
 *                                  upstream no longer has (404), kept and served from the store
 *                                  (lib/cache/gone-tags.ts); removed when the upstream has it again
 *     tmp/
 *       <random>.part             downloads and small writes in progress; swept at start-up
 *                                  (in cluster mode only those untouched for an hour: the others
 *                                  may be another replica's)
 *       shared/<alg>-<hex>.part    cluster mode: the download of one digest, followed by every
 *                                  replica's clients and resumed by whichever replica takes over
 *     uploads/
 *       <uuid>/                    one push upload session (survives restarts; swept after
 *         info.json                  registry.uploadMaxAge without activity)
 *                                  JSON {namespace, name, startedAt}: the repository it belongs to
 *         data                     the bytes received so far; renamed into blobs/ only once the
 *                                  digest given on the closing PUT matches
 *     repositories/
 *       <upstream>/                e.g. docker.io, ghcr.io (cached, and seeded by pushes)
 *       _hosted/                   hosted repositories (registry.hosted); "_" cannot start an
 *                                  upstream name (a host name), so the two never collide
 *         <name...>/               e.g. library/alpine
 *           _tags/
 *             <tag>                JSON {digest, mediaType, size}: what the tag pointed at
 *           _links/
 *             sha256/<hex>         empty: this repository has this digest (blob or manifest)
 *           _tagslist.json         the last complete tags list fetched from the upstream
 *           _referrers/
 *             sha256/<hex>/        referrers of manifest <hex> pushed here (their `subject`)
 *               sha256/<hex>       empty: this manifest refers to it
 *             sha256/<hex>.json    the upstream's last referrers answer for <hex> (proxied)
 *
 * `_tags`, `_links`, `_referrers` and `_tagslist.json` cannot collide with a name component:
 * those start with [a-z0-9].
 */
import path from 'node:path';
import type { Digest } from '../oci/digest.js';

/** The repositories/ namespace of hosted repositories: never a host name, so never an upstream's. */
export const HOSTED_NAMESPACE = '_hosted';

export class StorePaths {
  readonly root: string;
  readonly blobs: string;
  readonly tmp: string;
  readonly repositories: string;
  readonly pins: string;
  /** Sizes and recency of every stored file, for a fast start (a hint: directory listings are the truth). */
  readonly indexSnapshot: string;
  readonly uploads: string;
  /** Shared downloads of a cluster (sharedPart). */
  readonly sharedParts: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.blobs = path.join(this.root, 'blobs');
    this.tmp = path.join(this.root, 'tmp');
    this.repositories = path.join(this.root, 'repositories');
    this.pins = path.join(this.root, 'pins');
    this.indexSnapshot = path.join(this.root, 'index.snapshot');
    this.uploads = path.join(this.root, 'uploads');
    this.sharedParts = path.join(this.tmp, 'shared');
  }

  /**
   * The temp file of a download shared by the replicas of a cluster: one name per digest, so that
   * a replica taking over a dead one's download finds (and resumes) its bytes.
   */
  sharedPart(d: Digest): string {
    return path.join(this.sharedParts, `${d.algorithm}-${d.hex}.part`);
  }

  /** An upload session's directory; `uuid` must have been validated (UPLOAD_ID_RE). */
  upload(uuid: string): string {
    return path.join(this.uploads, uuid);
  }

  pin(d: Digest): string {
    return path.join(this.pins, d.algorithm, d.hex);
  }

  blob(d: Digest): string {
    return path.join(this.blobs, d.algorithm, d.hex.slice(0, 2), d.hex);
  }
}

/**
 * The same layout as keys relative to the store's root (or the bucket's prefix): what records.ts
 * reads and writes, on either backend.
 */
export const recordKeys = {
  repositories: 'repositories',
  repo(r: { upstream: string; name: string }): string {
    return `repositories/${r.upstream}/${r.name}`;
  },
  tag(r: { upstream: string; name: string }, tag: string): string {
    return `${recordKeys.repo(r)}/_tags/${tag}`;
  },
  link(r: { upstream: string; name: string }, d: Digest): string {
    return `${recordKeys.repo(r)}/_links/${d.algorithm}/${d.hex}`;
  },
  tagsList(r: { upstream: string; name: string }): string {
    return `${recordKeys.repo(r)}/_tagslist.json`;
  },
  referrers(r: { upstream: string; name: string }, subject: Digest): string {
    return `${recordKeys.repo(r)}/_referrers/${subject.algorithm}/${subject.hex}`;
  },
  referrersCache(r: { upstream: string; name: string }, subject: Digest): string {
    return `${recordKeys.referrers(r, subject)}.json`;
  },
  gone: 'gone',
  /** A tag deleted upstream and kept here (lib/cache/gone-tags.ts). */
  goneTag(r: { upstream: string; name: string }, tag: string): string {
    return `gone/${r.upstream}/${r.name}/_tags/${tag}`;
  },
  pins: 'pins',
  /** What a warm mark pinned on a node instance (lib/cache/preheat.ts); `id` is the mark's hex id. */
  warm: 'warm',
  warmMark(id: string): string {
    return `warm/${id}`;
  },
  pin(d: Digest): string {
    return `pins/${d.algorithm}/${d.hex}`;
  },
  /**
   * The S3 backend's blob objects, named as the files are: the bucket's layout is the directory's,
   * so a filesystem store copied into a bucket (`aws s3 sync`, leaving out tmp/ and uploads/) is
   * an S3 store.
   */
  blob(d: Digest): string {
    return `blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`;
  },
};
