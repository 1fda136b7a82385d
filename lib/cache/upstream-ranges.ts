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
 *   - On a cold blob (neither stored nor being downloaded here) a client's `bytes=S-E` or
 *     `bytes=S-` past the margin, or suffix `bytes=-N` (a footer), is asked of the upstream at
 *     once, alongside the whole-blob download's first request (early()), not after it answered:
 *     the first range costs one upstream round trip, not two. A suffix's 206 must be exactly the
 *     last N bytes of the size it says, `S-` must run to the last byte (the upstream client refuses
 *     any other). If the answer turns out to be stored, or the range is not the one sent (clamped to
 *     the blob's size), or no body is sent at all (416), or the client left first, the early GET
 *     is cancelled (its place in the bound freed).
 *   - When the early 206 decides the answer (its size is announced to the client before the
 *     whole-blob GET answered), the range's last byte waits for the whole-blob GET's answer: a size
 *     that disagrees cuts the client's answer (bad_range), never completes it.
 *   - Each ranged GET's outcome is counted (`outcomes`: stevedore_upstream_range_requests_total).
 */
import { PassThrough, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import { resolveRange, type ByteRange, type SentRange } from '../storage/backend.js';
import { BAD_CONTENT_RANGE, UpstreamError } from '../upstream/errors.js';
import type { BlobAnswer, Target } from './pull-types.js';

/** A range starting within this many bytes past what a download wrote follows the download. */
export const RANGE_FOLLOW_MARGIN = 1024 * 1024;
/** Ranged upstream GETs at a time for one digest. */
export const RANGES_PER_BLOB = 8;
/** Ranged upstream GETs at a time, all digests together. */
export const RANGES_IN_ALL = 64;

/**
 * How a client's Range past the download ended (stevedore_upstream_range_requests_total):
 * `served` from the upstream; else the range followed the download: `over_bound` (no ranged GET
 * was sent: RANGES_PER_BLOB / RANGES_IN_ALL), `ignored` (the upstream answered 200),
 * `bad_range` (a 206 for another range or another blob, or with another length, or for a size
 * the whole-blob GET contradicts: the client's answer was cut), `error` (the ranged GET failed, its body did, or the client left mid-range).
 */
export const RANGE_OUTCOMES = ['served', 'over_bound', 'ignored', 'bad_range', 'error'] as const;
export type RangeOutcome = (typeof RANGE_OUTCOMES)[number];

type RangeAnswer = { size: number | null; start: number; end: number; body: Readable } | null;

/**
 * A ranged GET sent before the answer was decided (UpstreamRanges.early): taken by the client's
 * sendTo when it asks for that very range, else cancelled. It holds its place in the bound until then.
 */
export interface EarlyRange {
  /** Whether a client's range `r` of a blob of `size` bytes is the one this GET asked for. */
  matches(r: ByteRange, size: number | null): boolean;
  /** The upstream's answer; throws as getBlobRange does. Only once. */
  take(): { asked: Promise<RangeAnswer>; stop: AbortController } | null;
  /** Stops it and frees its place, unless taken. */
  cancel(): void;
  /** The blob's size once the upstream answered the range with a 206 that says it; null otherwise. Never rejects. */
  size(): Promise<number | null>;
}

/** More or fewer bytes than the range the upstream's 206 said it carries. */
class WrongLength extends Error {}

/**
 * Passes exactly `length` bytes: more, or fewer at the end, is an error (the answer is cut). The
 * last byte is held until `before` resolves (its rejection cuts the answer too).
 */
function exactly(length: number, what: string, before?: () => Promise<void>): Transform {
  let held: Buffer | null = null;
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > length) return cb(new WrongLength(`${what}: the upstream sent more than the ${length} bytes of the range`));
      if (!before || seen < length) return cb(null, chunk);
      // The range's last byte waits for `before`.
      held = chunk.subarray(chunk.length - 1);
      cb(null, chunk.length > 1 ? chunk.subarray(0, chunk.length - 1) : undefined);
    },
    flush(cb) {
      if (seen !== length) return cb(new WrongLength(`${what}: the upstream sent ${seen} of the ${length} bytes of the range`));
      if (!before) return cb();
      before().then(
        () => cb(null, held ?? undefined),
        (err: unknown) => cb(err as Error),
      );
    },
  });
}

export class UpstreamRanges {
  private readonly perDigest = new Map<string, number>();
  private total = 0;
  private readonly log: Logger;
  private readonly bounds: { perBlob: number; inAll: number };
  /** Ranges answered from each upstream or not, by outcome (metrics). */
  private readonly counts = new Map<string, Record<RangeOutcome, number>>();

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
  wrap(t: Target, d: Digest, answer: BlobAnswer, early: EarlyRange | null = null): BlobAnswer {
    const available = answer.available;
    if (answer.cache !== 'miss' || !available || !t.client.getBlobRange) {
      early?.cancel();
      return answer;
    }
    const follow = answer.sendTo;
    return {
      ...answer,
      release: async (): Promise<void> => {
        early?.cancel();
        await answer.release();
      },
      sendTo: async (dest: Writable, r?: ByteRange): Promise<void> => {
        const sent = early && r && early.matches(r, answer.size) ? early.take() : null;
        early?.cancel();
        if (!sent) {
          if (!r || r.start <= available() + RANGE_FOLLOW_MARGIN) return follow(dest, r);
          if (!this.acquire(d.value)) {
            this.count(t.client.name, 'over_bound');
            return follow(dest, r);
          }
        }
        let served: boolean;
        try {
          served = await this.fromUpstream(t, d, answer.size, r!, dest, sent ?? this.ask(t, d, r!));
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

  /**
   * A cold blob's client Range (as sent: `bytes=S-E`, `S-`, `-N`) asked of the upstream now,
   * before the whole-blob download answered: null when it would follow the download anyway (a
   * start within the margin) or past the bound. Cancelled when `gone` aborts (the client left).
   */
  early(t: Target, d: Digest, r: SentRange, gone?: AbortSignal): EarlyRange | null {
    // A suffix's start is unknown until the size is: it is a footer, past the margin but on a small blob.
    const start = 'suffix' in r ? (r.suffix > 0 ? Infinity : 0) : r.start;
    // Past the bound: the range is decided (and counted) when it is sent, as any other.
    if (!t.client.getBlobRange || gone?.aborted || start <= RANGE_FOLLOW_MARGIN || !this.acquire(d.value)) return null;
    const sent = this.ask(t, d, r);
    let done = false;
    const cancel = (): void => {
      if (done) return;
      done = true;
      gone?.removeEventListener('abort', cancel);
      sent.stop.abort(new Error('the early ranged GET was not needed'));
      sent.asked.then((a) => a?.body.destroy(), () => undefined);
      this.release(d.value);
    };
    gone?.addEventListener('abort', cancel, { once: true });
    return {
      matches: (want, size) => {
        if (!('suffix' in r) && r.end !== null) return want.start === r.start && want.end === r.end;
        const meant = size === null ? null : resolveRange(r, size);
        return meant !== null && want.start === meant.start && want.end === meant.end;
      },
      size: () => sent.asked.then((a) => a?.size ?? null, () => null),
      take: () => {
        if (done) return null;
        done = true;
        gone?.removeEventListener('abort', cancel);
        return sent;
      },
      cancel,
    };
  }

  /**
   * The answer for a cold blob's client whose range was sent early, alongside the download
   * (`fetched`): whichever decides first. When the upstream's 206 comes before the download's
   * first bytes, its Content-Range gives the size and the range is sent at once; any other range
   * (or a range sent early that the upstream would not answer) waits for the download as before.
   */
  async first(t: Target, d: Digest, early: EarlyRange, fetched: Promise<BlobAnswer>): Promise<BlobAnswer> {
    fetched.catch(() => undefined);
    const size = await Promise.race([fetched.then(() => null, () => null), early.size()]);
    if (size === null) {
      let answer: BlobAnswer;
      try {
        answer = await fetched;
      } catch (err) {
        early.cancel();
        throw err;
      }
      return this.wrap(t, d, answer, early);
    }
    const releaseDownload = async (): Promise<void> => {
      const answer = await fetched.catch(() => null);
      await answer?.release();
    };
    // The size the client was told came from the ranged GET: the whole-blob GET must say the same
    // before the range's answer is complete (its last byte waits for that answer).
    const sameSize = async (): Promise<void> => {
      const answer = await fetched.catch(() => null);
      if (answer && answer.size !== null && answer.size !== size) {
        throw new WrongLength(`${t.client.name}/${t.name}@${d.value}: the ranged GET said ${size} bytes, the whole-blob GET ${answer.size}`);
      }
    };
    const sendTo = async (dest: Writable, r?: ByteRange): Promise<void> => {
      const sent = r && early.matches(r, size) ? early.take() : null;
      early.cancel();
      if (sent) {
        let served: boolean;
        try {
          served = await this.fromUpstream(t, d, size, r!, dest, sent, sameSize);
        } catch (err) {
          await releaseDownload();
          throw err;
        } finally {
          this.release(d.value);
        }
        if (served || dest.destroyed) return releaseDownload();
      }
      // Another range (or none): the download's, which must be of the size already announced.
      const answer = await fetched;
      if (answer.size !== null && answer.size !== size) {
        await answer.release();
        throw new UpstreamError('bad_response', t.client.name, `${t.client.name}/${t.name}@${d.value}: the download announced ${answer.size} bytes, the ranged GET ${size}`);
      }
      // A range asked of the upstream already follows the download; any other may be asked.
      return sent ? answer.sendTo(dest, r) : this.wrap(t, d, answer).sendTo(dest, r);
    };
    return {
      cache: 'miss',
      size,
      sendTo,
      open: (r?: ByteRange): Readable => {
        const out = new PassThrough();
        sendTo(out, r).catch((err: unknown) => out.destroy(err as Error));
        return out;
      },
      release: async (): Promise<void> => {
        early.cancel();
        await releaseDownload();
      },
    };
  }

  private ask(t: Target, d: Digest, r: SentRange): { asked: Promise<RangeAnswer>; stop: AbortController } {
    const stop = new AbortController();
    const asked = t.client.getBlobRange!(t.name, d.value, r, stop.signal);
    // Observed here; what it says is read by whoever takes it.
    asked.catch(() => undefined);
    return { asked, stop };
  }

  /** How many ranges of the upstream's blobs ended with `outcome` (stevedore_upstream_range_requests_total). */
  outcomes(upstream: string): Readonly<Record<RangeOutcome, number>> {
    return this.counts.get(upstream) ?? { served: 0, over_bound: 0, ignored: 0, bad_range: 0, error: 0 };
  }

  private count(upstream: string, outcome: RangeOutcome): void {
    let c = this.counts.get(upstream);
    if (!c) this.counts.set(upstream, (c = { served: 0, over_bound: 0, ignored: 0, bad_range: 0, error: 0 }));
    c[outcome]++;
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
   * Sends the range from the upstream (the ranged GET `sent`). False when it could not be asked
   * (the upstream ignored the Range, or failed before answering): the caller follows the download
   * instead. Throws (the client's answer is cut) when the upstream's answer is not this range of
   * this blob, or its body fails, or `before` (awaited once the range's bytes passed, before its
   * end is sent) throws.
   */
  private async fromUpstream(
    t: Target,
    d: Digest,
    size: number | null,
    r: ByteRange,
    dest: Writable,
    sent: { asked: Promise<RangeAnswer>; stop: AbortController },
    before?: () => Promise<void>,
  ): Promise<boolean> {
    const what = `range ${r.start}-${r.end} of ${t.client.name}/${t.name}@${d.value}`;
    const onClose = (): void => sent.stop.abort(new Error('the client went away'));
    if (dest.destroyed) onClose();
    else dest.once('close', onClose);
    try {
      let answer: RangeAnswer;
      try {
        answer = await sent.asked;
      } catch (err) {
        // An answer that is not the range asked for: never passed on as one.
        if (err instanceof UpstreamError && err.kind === 'bad_response') {
          this.count(t.client.name, err.failure === BAD_CONTENT_RANGE ? 'bad_range' : 'error');
          throw err;
        }
        this.count(t.client.name, 'error');
        if (dest.destroyed) return false;
        this.log.info({ digest: d.value, range: `${r.start}-${r.end}`, reason: (err as Error).message }, 'ranged upstream GET failed; following the download');
        return false;
      }
      if (answer === null) {
        this.count(t.client.name, 'ignored');
        this.log.info({ digest: d.value, range: `${r.start}-${r.end}` }, 'the upstream ignored Range; following the download');
        return false;
      }
      if (size !== null && answer.size !== null && answer.size !== size) {
        answer.body.on('error', () => undefined);
        answer.body.destroy();
        this.count(t.client.name, 'bad_range');
        throw new UpstreamError('bad_response', t.client.name, `${what}: the upstream answered for a blob of ${answer.size} bytes, not ${size}`);
      }
      if (answer.start !== r.start || answer.end !== r.end) {
        answer.body.on('error', () => undefined);
        answer.body.destroy();
        this.count(t.client.name, 'bad_range');
        throw new UpstreamError('bad_response', t.client.name, `${what}: the upstream answered bytes ${answer.start}-${answer.end}`);
      }
      this.log.debug({ digest: d.value, range: `${r.start}-${r.end}` }, 'range answered from the upstream');
      try {
        await pipeline(answer.body, exactly(r.end - r.start + 1, what, before), dest);
      } catch (err) {
        this.count(t.client.name, err instanceof WrongLength ? 'bad_range' : 'error');
        throw err;
      }
      this.count(t.client.name, 'served');
      return true;
    } finally {
      dest.off('close', onClose);
    }
  }
}
