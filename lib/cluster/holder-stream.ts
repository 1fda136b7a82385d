/**
 * Cluster mode on the S3 backend: replicas share a bucket, not a disk, so a download in progress
 * is not a file the others can follow. The replica holding a digest's lease publishes its URL
 * (cluster.advertise) in the lease record; every other replica's clients stream the blob from it,
 * on the peer endpoint (PEER_BLOB_PATH), while it downloads. Once the object exists, everyone
 * reads it from the bucket.
 *
 * The URL comes from Redis, which is not trusted (docs/ARCHITECTURE.md, rule 10):
 *   - it is asked only inside `cluster.allowedNetworks` (peer-networks.ts);
 *   - requests are signed per request (peer-auth.ts): `cluster.token` never goes on the wire;
 *   - the bytes it sends are hashed by the follower from byte 0, and a client's last byte waits
 *     until that hash matches the digest (cache/verified-window.ts, VerifiedWindow); a holder
 *     whose bytes do not verify is marked bad and not asked again for a while.
 */
import type { Readable } from 'node:stream';
import { LazyAgent, request } from '../util/lazy-undici.js';
import { activeTracer, tracedRequest } from '../util/tracing.js';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import { PEER_BLOB_PATH, type PeerEndpoint } from './peer-endpoint.js';
import type { PeerRequestAuth } from './peer-auth.js';
import type { PeerNetworks } from './peer-networks.js';

/** How long a holder whose bytes did not verify (or that failed) is not asked. */
const BAD_FOR_MS = 60_000;

/**
 * The cluster's client of lease holders (S3 cluster mode): streams a download in progress from the
 * replica holding its lease, and answers the other replicas' requests on this one's peer endpoint.
 */
export class LeaseHolderClient implements PeerEndpoint {
  private readonly agent: LazyAgent;
  private readonly bad = new Map<string, number>();
  /** Blob answers sent to other replicas, and streams taken from them (metrics). */
  servedCount = 0;
  streamed = 0;

  constructor(
    private readonly auth: PeerRequestAuth,
    private readonly networks: PeerNetworks,
    opts: { connectTimeoutMs: number; idleTimeoutMs: number },
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.agent = new LazyAgent({
      connect: { timeout: opts.connectTimeoutMs, lookup: networks.lookup },
      bodyTimeout: opts.idleTimeoutMs,
      headersTimeout: opts.idleTimeoutMs,
    });
  }

  /** This replica's URL as the others reach it. */
  get self(): string {
    return this.auth.origin;
  }

  refusal(method: string, path: string, authorization: string | undefined): string | null {
    return this.auth.check(method, path, authorization);
  }

  served(): void {
    this.servedCount++;
  }

  /** Whether `url` may be asked for a download now: inside the allowed networks, not marked bad. */
  usable(url: string): boolean {
    const until = this.bad.get(url);
    if (until !== undefined) {
      if (until > this.now()) return false;
      this.bad.delete(url);
    }
    return this.networks.allowsUrl(url);
  }

  markBad(url: string, why: string): void {
    const wasBad = (this.bad.get(url) ?? 0) > this.now();
    if (this.bad.size > 10_000) this.bad.clear();
    this.bad.set(url, this.now() + BAD_FOR_MS);
    if (!wasBad) this.log.warn({ holder: url.slice(0, 200), reason: why, badForSec: BAD_FOR_MS / 1000 }, 'a replica holding a download failed or sent bytes that do not verify; not asked again for a while');
  }

  /**
   * The blob the replica at `url` is downloading, from byte `start` to its end. Rejects when that
   * replica may not be asked or does not answer with exactly those bytes.
   */
  async open(url: string, d: Digest, start: number): Promise<Readable> {
    if (!this.usable(url)) throw new Error(`the replica address ${url.slice(0, 200)} is not asked (outside ${this.networks.setting}, or failed lately)`);
    const target = `${url}${PEER_BLOB_PATH}${d.value}`;
    const headers: Record<string, string> = { authorization: this.auth.sign('GET', target), 'user-agent': 'stevedore-replica', ...(start > 0 ? { range: `bytes=${start}-` } : {}) };
    const dispatcher = await this.agent.get();
    const send = (): ReturnType<typeof request> => request(target, { dispatcher, headers });
    const tracer = activeTracer();
    const res = tracer ? await tracedRequest(tracer, 'GET', new URL(target), { 'stevedore.replica': url }, headers, send) : await send();
    const range = /^bytes (\d+)-\d+\/\d+$/.exec(String(res.headers['content-range'] ?? ''));
    if (start === 0 ? res.statusCode !== 200 : res.statusCode !== 206 || Number(range?.[1]) !== start) {
      res.body.destroy();
      throw new Error(`the replica downloading ${d.value} (${url}) answered ${res.statusCode}${start > 0 ? ` to a Range from ${start}` : ''}`);
    }
    this.streamed++;
    return res.body as Readable;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
