/**
 * The vocabulary of the pull path, shared by its parts (tag-resolver.ts, manifests.ts,
 * blob-pulls.ts, repository-access.ts, tag-lists.ts, the downloads) and by their callers through
 * pull-through.ts: what is asked of an upstream, and the answers a route gets back.
 */
import type { UpstreamConfig } from '../config/config.js';
import { CACHE_DEFAULTS } from '../config/schema.js';
import type { RepoRef } from '../storage/repo-store.js';
import type { DownloadSource } from '../upstream/blob-source.js';
import type { FetchedManifest, ManifestHead, TagsListLimits } from '../upstream/source-client.js';
import type { BlobBody, SentRange } from '../storage/backend.js';
import type { Readable } from 'node:stream';

/**
 * What the pull path asks of one upstream (its sources in order: UpstreamSources implements it;
 * unit tests give a fake). Failures are thrown as UpstreamError; the HTTP edge maps them
 * (lib/cache/error-answers.ts, toOciError; the edge answers with it).
 */
export interface PullUpstream {
  /** The upstream's name (`docker.io`): the namespace its repositories are stored under. */
  readonly name: string;
  /** Its settings: tag TTLs and tiers, timeouts. */
  readonly config: UpstreamConfig;
  /** Offline by choice (offline: true): never asked. */
  readonly offline: boolean;
  headManifest(name: string, ref: string, signal?: AbortSignal): Promise<ManifestHead>;
  getManifest(name: string, ref: string, maxSize: number, signal?: AbortSignal): Promise<FetchedManifest>;
  headBlob(name: string, digest: string, signal?: AbortSignal): Promise<{ size: number | null }>;
  listTags(name: string, limits: TagsListLimits, signal?: AbortSignal): Promise<string[]>;
  getReferrers(name: string, digest: string, opts: { maxBytes: number; signal?: AbortSignal }): Promise<unknown[] | null>;
  /**
   * One range of a blob, straight from the upstream (a client's Range a download cannot answer yet:
   * upstream-ranges.ts). Null when the upstream ignored the Range. Optional: fakes may lack it.
   */
  getBlobRange?(name: string, digest: string, range: SentRange, signal?: AbortSignal): Promise<{ size: number | null; start: number; end: number; body: Readable } | null>;
  /** Where a download of the blob reads from (peers only when `peersAllowed`). */
  blobSource(name: string, digest: string, opts: { peersAllowed: () => Promise<boolean> }): DownloadSource;
}

/**
 * Facts about upstream content that other systems may want to hear of: lib/events turns each into
 * an act (webhooks). Each is called after the fact, synchronously, and must not throw or wait.
 */
export interface UpstreamEvents {
  /** A revalidation found that an upstream tag now names another digest (and stored the new one). */
  tagMoved?(upstream: string, name: string, tag: string, from: string, to: string): void;
  /**
   * The upstream answers 404 for a tag this cache holds (tag-resolver.ts, goneTag): once when the
   * tag is first recorded as gone (cache.gonePolicies keep) or forgotten (forget).
   */
  gone?(upstream: string, name: string, ref: { tag?: string; digest?: string }, reason: string): void;
  /** A blob download from the upstream did not match its digest (nothing was stored). */
  verificationFailed?(upstream: string, name: string, digest: string, reason: string): void;
}

export interface Target {
  client: PullUpstream;
  /** Repository name as the upstream knows it (after `library/` normalization). */
  name: string;
}

export type CacheResult = 'hit' | 'miss' | 'revalidated' | 'stale';

export interface Clock {
  now(): number;
}

export interface ManifestAnswer {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  cache: CacheResult;
  /** Set when the answer is stale: the reason, for `Warning: 110` and the log. */
  staleReason?: string;
  /** Set when the upstream deleted the tag and it is kept (cache.gonePolicies): since when (ms since epoch). */
  goneSince?: number;
}

export interface BlobAnswer extends BlobBody {
  /** Where the bytes come from: the store, or a download (ours or another replica's). */
  cache: CacheResult;
  /** A download being followed: the bytes written so far (a range past them may be asked of the upstream). */
  available?: () => number;
}

/** One download in flight, as the dashboard shows it. */
export interface DownloadState {
  digest: string;
  /** `<upstream>/<name>`: the repository it was started for. */
  repository: string;
  written: number;
  size: number | null;
  followers: number;
  attempts: number;
  startedAt: number;
}

/** What a manifest or a list from an upstream may cost. */
export interface PullLimits {
  /** Blobs and child manifests one manifest may name (cache.manifestMaxReferences). */
  manifestMaxReferences: number;
  /** No blob download goes past this (cache.blobMaxSize). */
  blobMaxSize: number;
  tagsListMaxTags: number;
  tagsListMaxBytes: number;
}

export const DEFAULT_PULL_LIMITS: PullLimits = {
  manifestMaxReferences: CACHE_DEFAULTS.manifestMaxReferences,
  blobMaxSize: CACHE_DEFAULTS.blobMaxSize,
  tagsListMaxTags: CACHE_DEFAULTS.tagsListMaxTags,
  tagsListMaxBytes: CACHE_DEFAULTS.tagsListMaxBytes,
};

/** The repository of a target, as the store keys it. */
export function repoOf(t: Target): RepoRef {
  return { upstream: t.client.name, name: t.name };
}

/** The repository a download was started for, as a map key (`<upstream>/<name>`). */
export function repoKey(t: Target): string {
  return `${t.client.name}/${t.name}`;
}
