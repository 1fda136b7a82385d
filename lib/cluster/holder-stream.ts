/**
 * Cluster mode on the S3 backend: replicas share a bucket, not a disk, so a download in progress
 * is not a file the others can follow. The replica holding a digest's lease publishes its URL
 * (cluster.advertise) in the lease record; every other replica's clients stream the blob from it,
 * on the peer endpoint (PEER_BLOB_PATH) with the replicas' shared token (cluster.token), while it
 * downloads. The holder sends what its own clients get: the bytes as they arrive, the last one only
 * once the blob verified (rule 2 of DESIGN.md). Once the object exists,
 * everyone reads it from the bucket.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import type { Digest } from '../oci/digest.js';
import { PEER_BLOB_PATH } from './peers.js';
import { relay } from '../util/pump.js';

/** Who may fetch from this process's peer endpoint, and what it counts. */
export interface PeerEndpoint {
  authorized(header: string | undefined): boolean;
  served(): void;
  /** The setting holding the token (for the 401's message). */
  readonly tokenSetting: string;
}

/** Whether an Authorization header carries `Bearer <token>` (compared in constant time). */
export function bearerMatches(header: string | undefined, token: Buffer): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const given = Buffer.from(m[1]!);
  return given.length === token.length && timingSafeEqual(given, token);
}

export class ClusterPeers implements PeerEndpoint {
  readonly tokenSetting = 'cluster.token';
  private readonly token: Buffer;
  private readonly agent: Agent;
  /** Blob answers sent to other replicas, and streams taken from them (metrics). */
  servedCount = 0;
  streamed = 0;

  constructor(
    token: string,
    /** This replica's URL as the others reach it. */
    readonly self: string,
    opts: { connectTimeoutMs: number; idleTimeoutMs: number },
  ) {
    this.token = Buffer.from(token);
    this.agent = new Agent({ connect: { timeout: opts.connectTimeoutMs }, bodyTimeout: opts.idleTimeoutMs, headersTimeout: opts.idleTimeoutMs });
  }

  authorized(header: string | undefined): boolean {
    return bearerMatches(header, this.token);
  }

  served(): void {
    this.servedCount++;
  }

  /**
   * Writes bytes [start, end] (inclusive; Infinity: to the end) of the blob the replica at `url`
   * is downloading into `dest`, without ending it; `onBytes` counts them. Rejects if that replica
   * does not answer with them, or stops (then `dest` is left as it is, for the caller to go on).
   */
  async streamFrom(url: string, d: Digest, dest: Writable, start: number, end: number, onBytes: (n: number) => void): Promise<void> {
    const whole = start === 0 && end === Infinity;
    const res = await request(`${url}${PEER_BLOB_PATH}${d.value}`, {
      dispatcher: this.agent,
      headers: { authorization: `Bearer ${this.token.toString()}`, ...(whole ? {} : { range: `bytes=${start}-${end === Infinity ? '' : end}` }) },
    });
    if (res.statusCode !== (whole ? 200 : 206)) {
      res.body.destroy();
      throw new Error(`the replica downloading ${d.value} (${url}) answered ${res.statusCode}`);
    }
    this.streamed++;
    await relay(res.body as Readable, dest, onBytes);
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }
}
