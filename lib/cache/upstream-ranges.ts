/**
 * Lazy pulling (issue 30): a client's Range on a blob being downloaded that the download cannot
 * answer yet (its first byte lies beyond what is written plus RANGE_FOLLOW_MARGIN) is asked of the
 * upstream at once, with a ranged GET through the same upstream client (auth, tokens, redirects,
 * timeouts), while the whole-blob download goes on for the cache. Snapshotters that read a layer's
 * footer first (eStargz, SOCI, Nydus) get it at upstream speed, not after the whole layer.
 *
 *   - The upstream's 206 must carry the Content-Range asked for (the upstream client refuses any
 *     other) and exactly that many bytes, for a blob of the size the download announced: else the
 *     client's answer is cut, never completed with other bytes.
 *   - An upstream that ignores Range (200) is not streamed as a range: the client follows the
 *     download as before. So does one that fails before answering.
 *   - A range alone cannot be verified against the digest: it is served as the registry serves it
 *     and never stored. The cache stores only the whole blob, verified (SECURITY.md).
 *   - Bounded: RANGES_PER_BLOB ranged GETs at a time per digest, RANGES_IN_ALL in all; past the
 *     bound a Range follows the download.
 */
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../storage/backend.js';
import { UpstreamError } from '../upstream/errors.js';
import type { BlobAnswer, Target } from './pull-types.js';

/** A range starting within this many bytes past what a download wrote follows the download. */
export const RANGE_FOLLOW_MARGIN = 1024 * 1024;
/** Ranged upstream GETs at a time for one digest. */
export const RANGES_PER_BLOB = 8;
/** Ranged upstream GETs at a time, all digests together. */
export const RANGES_IN_ALL = 64;

/** Passes exactly `length` bytes: more, or fewer at the end, is an error (the answer is cut). */
function exactly(length: number, what: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > length) cb(new Error(`${what}: the upstream sent more than the ${length} bytes of the range`));
      else cb(null, chunk);
    },
    flush(cb) {
      cb(seen === length ? null : new Error(`${what}: the upstream sent ${seen} of the ${length} bytes of the range`));
    },
  });
}

export class UpstreamRanges {
  private readonly perDigest = new Map<string, number>();
  private total = 0;
  private readonly log: Logger;
  private readonly bounds: { perBlob: number; inAll: number };

  constructor(log: Logger, bounds: { perBlob?: number; inAll?: number } = {}) {
    this.log = log;
    this.bounds = { perBlob: bounds.perBlob ?? RANGES_PER_BLOB, inAll: bounds.inAll ?? RANGES_IN_ALL };
  }

  /** Ranged upstream GETs running now (metrics, tests). */
  get running(): number {
    return this.total;
  }

  /**
   * The answer of a client following a download, with ranges past what it wrote asked of the
   * upstream. Other answers (stored, or an upstream client without ranged GETs) are returned as they are.
   */
  wrap(t: Target, d: Digest, answer: BlobAnswer): BlobAnswer {
    const available = answer.available;
    if (answer.cache !== 'miss' || !available || !t.client.getBlobRange) return answer;
    const follow = answer.sendTo;
    return {
      ...answer,
      sendTo: async (dest: Writable, r?: ByteRange): Promise<void> => {
        if (!r || r.start <= available() + RANGE_FOLLOW_MARGIN || !this.acquire(d.value)) return follow(dest, r);
        let served: boolean;
        try {
          served = await this.fromUpstream(t, d, answer.size, r, dest);
        } finally {
          this.release(d.value);
        }
        if (served) {
          await answer.release();
          return;
        }
        if (dest.destroyed) {
          await answer.release();
          return;
        }
        return follow(dest, r);
      },
    };
  }

  private acquire(digest: string): boolean {
    const n = this.perDigest.get(digest) ?? 0;
    if (n >= this.bounds.perBlob || this.total >= this.bounds.inAll) return false;
    this.perDigest.set(digest, n + 1);
    this.total++;
    return true;
  }

  private release(digest: string): void {
    const n = (this.perDigest.get(digest) ?? 1) - 1;
    if (n <= 0) this.perDigest.delete(digest);
    else this.perDigest.set(digest, n);
    this.total--;
  }

  /**
   * Sends the range from the upstream. False when it could not be asked (the upstream ignored the
   * Range, or failed before answering): the caller follows the download instead. Throws (the
   * client's answer is cut) when the upstream's answer is not this range of this blob.
   */
  private async fromUpstream(t: Target, d: Digest, size: number | null, r: ByteRange, dest: Writable): Promise<boolean> {
    const what = `range ${r.start}-${r.end} of ${t.client.name}/${t.name}@${d.value}`;
    const stop = new AbortController();
    const onClose = (): void => stop.abort(new Error('the client went away'));
    dest.once('close', onClose);
    try {
      let answer: Awaited<ReturnType<NonNullable<typeof t.client.getBlobRange>>>;
      try {
        answer = await t.client.getBlobRange!(t.name, d.value, r, stop.signal);
      } catch (err) {
        // An answer that is not the range asked for: never passed on as one.
        if (err instanceof UpstreamError && err.kind === 'bad_response') throw err;
        if (dest.destroyed) return false;
        this.log.info({ digest: d.value, range: `${r.start}-${r.end}`, reason: (err as Error).message }, 'ranged upstream GET failed; following the download');
        return false;
      }
      if (answer === null) {
        this.log.info({ digest: d.value, range: `${r.start}-${r.end}` }, 'the upstream ignored Range; following the download');
        return false;
      }
      if (size !== null && answer.size !== null && answer.size !== size) {
        answer.body.on('error', () => undefined);
        answer.body.destroy();
        throw new UpstreamError('bad_response', t.client.name, `${what}: the upstream answered for a blob of ${answer.size} bytes, not ${size}`);
      }
      this.log.debug({ digest: d.value, range: `${r.start}-${r.end}` }, 'range answered from the upstream');
      await pipeline(answer.body, exactly(r.end - r.start + 1, what), dest);
      return true;
    } finally {
      dest.off('close', onClose);
    }
  }
}
