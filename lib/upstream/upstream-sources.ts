/**
 * An upstream as the cache sees it: one or more sources asked in order (upstreams.*.sources).
 * E.g. docker.io → [peers, the central stevedore, mirror.gcr.io, registry-1.docker.io].
 *
 *   - Each source by URL is a SourceClient with its own credentials, timeouts and health record
 *     (breaker, cool-down). A source with another behind it opens its breaker on its first failure:
 *     a dead source costs one fast failure, then is skipped until its breaker lets a request
 *     through again — never a timeout per blob.
 *   - A source that cannot answer (unreachable, 5xx, 429, breaker open) or does not have what is
 *     asked (404, 401/403: a mirror holds only part of the registry) hands over to the next; the
 *     last source's answer is the upstream's.
 *   - Peers (node mode) serve blobs only, and only blobs the repository links (a manifest fetched
 *     from a trusted source named them): a peer is trusted by digest only, so its bytes are
 *     verified before a client sees any of them (Download, `untrusted`). Tags and manifests always
 *     come from the sources by URL.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { discard } from '../util/http-body.js';
import type { UpstreamConfig } from '../config/config.js';
import type { UpstreamHealth } from '../metadata/upstream-health.js';
import type { DownloadSource, OpenedBody } from './blob-source.js';
import type { SentRange } from '../storage/backend.js';
import type { PeerSource } from '../cluster/peer-endpoint.js';
import { BAD_CONTENT_RANGE, UpstreamError } from './errors.js';
import { SourceClient, type FetchedManifest, type ManifestHead, type TagsListLimits } from './source-client.js';

// What a peer source offers (implemented by lib/cluster/peers.ts): defined beside the peer endpoint.
export type { PeerBody, PeerSource } from '../cluster/peer-endpoint.js';

/** Failures after which the next source is asked (the last source's failure is the answer). */
function handsOver(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError && err.kind !== 'offline';
}

export class UpstreamSources {
  readonly config: UpstreamConfig;
  readonly name: string;
  readonly offline: boolean;
  /** The sources by URL, in order. */
  readonly sources: readonly SourceClient[];
  /** Where the peers sit among the sources by URL (they come before sources[peersAt]); null: not asked. */
  private readonly peersAt: number | null;
  private peers: PeerSource | null = null;
  private readonly log: Logger;

  constructor(config: UpstreamConfig, log: Logger, health: UpstreamHealth | null = null) {
    this.config = config;
    this.name = config.name;
    this.offline = config.offline;
    this.log = log.child({ upstream: config.name });
    const urls = config.sources.filter((s): s is Extract<typeof s, { kind: 'url' }> => s.kind === 'url');
    const peersIndex = config.sources.findIndex((s) => s.kind === 'peers');
    this.peersAt = peersIndex < 0 ? null : config.sources.slice(0, peersIndex).filter((s) => s.kind === 'url').length;
    this.sources = urls.map((s, i) => {
      const last = i === urls.length - 1;
      const { kind: _kind, ...source } = s;
      return new SourceClient(
        {
          upstream: config.name,
          source,
          offline: config.offline,
          // The registry itself keeps the upstream's own record (quota, breaker): as with one source.
          healthKey: last ? config.name : `${config.name}@${s.name}`,
          fastFail: !last,
          label: urls.length === 1 ? `upstream ${config.name}` : `source ${s.name} of ${config.name}`,
        },
        log,
        health,
      );
    });
  }

  /** Node mode: blobs are asked of the peers first (where `peers` sits in the sources). */
  usePeers(peers: PeerSource): void {
    this.peers = peers;
  }

  /** Whether peers are among this upstream's sources and known. */
  get hasPeers(): boolean {
    return this.peers !== null && this.peersAt !== null;
  }

  /** Requests sent to its sources, by `METHOD STATUS` (metrics). */
  get requestCounts(): Map<string, number> {
    const all = new Map<string, number>();
    for (const s of this.sources) for (const [k, n] of s.requestCounts) all.set(k, (all.get(k) ?? 0) + n);
    return all;
  }

  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close()));
  }

  /** Asks each source in order until one answers; the last one's failure is thrown. */
  private async first<T>(op: (s: SourceClient) => Promise<T>): Promise<T> {
    for (let i = 0; ; i++) {
      const s = this.sources[i]!;
      try {
        return await op(s);
      } catch (err) {
        if (i === this.sources.length - 1 || !handsOver(err)) throw err;
        this.log.debug({ source: s.sourceName, reason: err.message }, 'source did not answer; asking the next one');
      }
    }
  }

  headManifest(name: string, ref: string, signal?: AbortSignal): Promise<ManifestHead> {
    return this.first((s) => s.headManifest(name, ref, signal));
  }

  getManifest(name: string, ref: string, maxSize: number, signal?: AbortSignal): Promise<FetchedManifest> {
    return this.first((s) => s.getManifest(name, ref, maxSize, signal));
  }

  headBlob(name: string, digest: string, signal?: AbortSignal): Promise<{ size: number | null }> {
    return this.first((s) => s.headBlob(name, digest, signal));
  }

  listTags(name: string, limits: TagsListLimits, signal?: AbortSignal): Promise<string[]> {
    return this.first((s) => s.listTags(name, limits, signal));
  }

  getReferrers(name: string, digest: string, opts: { maxBytes: number; signal?: AbortSignal }): Promise<unknown[] | null> {
    return this.first((s) => s.getReferrers(name, digest, opts));
  }

  /**
   * One range of a blob for a client (lib/cache/upstream-ranges.ts), asked of the sources in order
   * like any request (auth, tokens, redirects, timeouts). Null when the source ignored the Range
   * (answered the whole blob, 200: its body is dropped); a 206 for another range is refused. The
   * range as the client sent it: `bytes=S-E`, `S-` (to the last byte) or the suffix `-N`.
   */
  async getBlobRange(name: string, digest: string, range: SentRange, signal?: AbortSignal): Promise<{ size: number | null; start: number; end: number; body: Readable } | null> {
    const opts = 'suffix' in range ? { suffix: range.suffix } : { start: range.start, ...(range.end === null ? {} : { end: range.end }) };
    const answer = await this.first((s) => s.getBlob(name, digest, { ...opts, signal }));
    if (!answer.partial || answer.end === null) {
      discard(answer.body);
      return null;
    }
    // `bytes=S-` runs to the blob's last byte: a 206 that says it stops short is not that range.
    if (!('suffix' in range) && range.end === null && (answer.size === null || answer.end !== answer.size - 1)) {
      discard(answer.body);
      throw new UpstreamError('bad_response', this.name, `a range request for blob ${name}@${digest} was answered with an unusable Content-Range`, { failure: BAD_CONTENT_RANGE });
    }
    return { size: answer.size, start: answer.start, end: answer.end, body: answer.body };
  }

  /**
   * Where a blob download reads from: the peers first when `peersAllowed` (the repository links
   * the digest), then the sources by URL. A peer that fails mid-body is left for the next peer or
   * source, which continues with Range.
   */
  blobSource(name: string, digest: string, opts: { peersAllowed: () => Promise<boolean> }): DownloadSource {
    return new ChainedBlobSource(this.sources, name, digest, this.hasPeers ? { peers: this.peers!, at: this.peersAt!, allowed: opts.peersAllowed } : null, this.log);
  }
}

/** One download's walk along the sources (see UpstreamSources.blobSource). */
class ChainedBlobSource implements DownloadSource {
  /** Index of the source by URL asked next; the peers come before `peersAt`. */
  private at = 0;
  private readonly peersAt: number;
  /** The peers while they may still be asked for this blob; null once passed. */
  private peers: PeerSource | null;
  private readonly allPeers: PeerSource | null;
  private allowed: (() => Promise<boolean>) | null;
  /** Peers this download asked (each once), those whose bytes are in the file, and the one being read. */
  private readonly tried = new Set<string>();
  private readonly used = new Set<string>();
  private current: string | null = null;

  constructor(
    private readonly sources: readonly SourceClient[],
    private readonly name: string,
    private readonly digest: string,
    peers: { peers: PeerSource; at: number; allowed: () => Promise<boolean> } | null,
    private readonly log: Logger,
  ) {
    this.peers = peers?.peers ?? null;
    this.allPeers = this.peers;
    this.peersAt = peers?.at ?? 0;
    this.allowed = peers?.allowed ?? null;
  }

  async open(start: number, signal: AbortSignal): Promise<OpenedBody> {
    this.current = null;
    for (;;) {
      if (this.peers && this.at === this.peersAt) {
        // Asked once: may this repository's blob come from a peer at all (does it link the digest)?
        if (this.allowed) {
          const allowed = await this.allowed();
          this.allowed = null;
          if (!allowed) this.peers = null;
        }
        const got = this.peers ? await this.peers.open(this.digest, start, signal, this.tried) : null;
        if (got) {
          this.tried.add(got.peer);
          this.used.add(got.peer);
          this.current = got.peer;
          return { size: got.size, start: got.start, body: got.body, untrusted: true, stall: got.stall };
        }
        // No peer (left) holds it: the sources by URL from here on.
        this.peers = null;
      }
      const s = this.sources[this.at]!;
      const last = this.at === this.sources.length - 1;
      try {
        const res = await s.getBlob(this.name, this.digest, { start, signal });
        return { ...res, stall: { windowMs: s.config.timeouts.stall, minBytes: s.config.timeouts.minProgress } };
      } catch (err) {
        if (last || !handsOver(err)) throw err;
        this.log.debug({ source: s.sourceName, digest: this.digest, reason: err.message }, 'source did not answer for a blob; asking the next one');
        this.at++;
      }
    }
  }

  failed(err: unknown): boolean {
    const peer = this.current;
    this.current = null;
    if (peer === null || !this.allPeers) return false;
    this.allPeers.markBad(peer, err instanceof Error ? err.message : String(err));
    return true;
  }

  distrust(): void {
    for (const peer of this.used) this.allPeers?.markBad(peer, 'sent bytes that do not match the digest');
    this.peers = null;
    this.at = Math.max(this.at, this.peersAt);
  }
}
