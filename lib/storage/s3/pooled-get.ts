/**
 * Ranged GETs of an object from a plain-HTTP S3 endpoint, read straight into pooled memory: the
 * socket reads into slabs of a pool (`net.Socket`'s `onread`), and the body is handed on as views
 * of those slabs, each released by whoever wrote it once the destination is done with it (a
 * socket's write callback). No per-read allocation and no copy in the process.
 *
 * Why not the AWS SDK's client (node:http) or undici: their parsers copy every body chunk into a
 * new buffer, after the socket read allocated another; receiving from a gateway on loopback cost
 * 1.7–2.9 ms of CPU per MiB that way against 0.25–0.6 into reused memory (bench/RESULTS.md,
 * "S3 reads into pooled memory"), and the single-client S3 read is bound by that CPU.
 *
 * Only what the backend asks is spoken: `GET` with `Range` (and `If-Match`), `Connection: close`,
 * one request per connection (no keep-alive, so nothing of one answer can be taken for the next).
 * The answer must be 206 with `Content-Length` equal to the range asked and a `Content-Range` for
 * it (with `clip`, the range may end at the object's last byte, before the end asked); no
 * `Transfer-Encoding`; the head within MAX_HEAD bytes; not one byte more than announced.
 * Anything else is an S3GetError (the status, if there was one), and the caller's retry or the
 * read's failure follows as for the SDK's errors. The request is signed by a presigned URL
 * (s3-backend.ts): Range and If-Match are sent unsigned.
 */
import net from 'node:net';
import { buffersPassed } from '../../util/buffer-churn.js';
import { LowWaterPool } from '../../util/low-water-pool.js';

/** Bytes per slab of the pool while few GETs run (a single client's read gets these). */
export const SLAB = 512 * 1024;
/**
 * Slab sizes by load, under one budget for the pooled GETs of the process, as the send buffers'
 * (storage/send-buffers.ts): a GET running pins about two slabs (one being filled, one whose views
 * wait for their write's callback), so up to 16 GETs get 512 KiB slabs, 32 get 256 KiB, 64 get
 * 128 KiB, more 64 KiB each. With 512 KiB whatever the load, 64 clients on a large blob pinned
 * 60–70 MiB of them (scenario 11's hang-up round: peak 173–197 MiB; with this and the count of
 * dropped slabs below, 146–155: bench/RESULTS.md, "Issue 28, 2026-12-08").
 */
export const SLAB_BUDGET = 16 * 1024 * 1024;
const SLAB_SIZES = [64 * 1024, 128 * 1024, 256 * 1024, SLAB] as const;

/** The slab size for a GET's next slab while `running` GETs run (itself included). */
export function slabSizeFor(running: number): number {
  return SLAB_SIZES.findLast((s) => 2 * Math.max(1, running) * s <= SLAB_BUDGET) ?? SLAB_SIZES[0];
}
/** A slab with less room than this left is retired: reads land in a new one. */
const MIN_ROOM = 16 * 1024;
/** The most bytes the answer's status line and headers may take. */
const MAX_HEAD = 32 * 1024;
/**
 * Body bytes are handed on in views of at least this much (less only at the end of the body or of
 * a slab): socket reads on loopback return 16–64 KiB each, and every chunk handed on costs the
 * consumer's queue, a write to the client and its callback. Fewer, larger chunks: 256 KiB views in
 * 512 KiB slabs cost 0.55–0.68 ms of CPU per MiB served where 128 KiB in 256 KiB slabs cost
 * 0.75–0.85 (bench/RESULTS.md, 2026-12-07). In a smaller slab (many GETs at once), half of it.
 */
export const DELIVER_MIN = SLAB / 2;
/** Body bytes received before a consumer is set at most: then the socket waits for it. */
const EARLY_MAX = 256 * 1024;

let openSockets = 0;

/** Connections of pooled GETs not closed yet (tests: none is left behind). */
export function pooledGetSockets(): number {
  return openSockets;
}

/** Where a read would land after the end (none does: the socket is destroyed by then). */
const SCRATCH = Buffer.allocUnsafeSlow(MIN_ROOM);

/** A view of pooled memory holding body bytes; `release` once nothing references `data` any more. */
export interface PooledChunk {
  readonly data: Buffer;
  /** `reusable: false` when something may still reference the bytes (a write that failed): its slab is then not pooled again. */
  release(reusable?: boolean): void;
}

/**
 * Slabs (of SLAB bytes, or smaller under load: slabSizeFor), reused: kept up to `keep` bytes. Every
 * `idleMs`, the slabs that stayed free the whole time (the fewest free since the last look) are
 * released: nothing taken, all of them (a burst does not keep its memory); busy, what the load no
 * longer reaches (a LowWaterPool per size, as the send buffers').
 */
export class SlabPool {
  private readonly free = new Map<number, LowWaterPool>(SLAB_SIZES.map((size) => [size, new LowWaterPool()]));
  private pooled = 0;
  private timer: NodeJS.Timeout | null = null;
  private allocated = 0;

  constructor(
    readonly keep: number,
    private readonly idleMs = 10_000,
  ) {}

  /** A slab of `size` bytes (one of slabSizeFor's): a pooled one, else a new one. */
  take(size: number = SLAB): Buffer {
    const b = this.free.get(size)?.pop();
    if (b) {
      this.pooled -= b.length;
      return b;
    }
    this.allocated++;
    return Buffer.allocUnsafeSlow(size);
  }

  /** Pools `b` for reuse; false when the pool is full (`b` is then garbage once dropped). */
  give(b: Buffer): boolean {
    const pool = this.free.get(b.length);
    if (!pool || this.pooled + b.length > this.keep) return false;
    pool.push(b);
    this.pooled += b.length;
    this.timer ??= setInterval(() => this.trim(), this.idleMs).unref();
    return true;
  }

  /** Bytes pooled now, and slabs allocated since start (tests: reuse shows as few allocations). */
  stats(): { pooled: number; allocated: number } {
    return { pooled: this.pooled, allocated: this.allocated };
  }

  private trim(): void {
    let left = 0;
    for (const [size, pool] of this.free) {
      this.pooled -= pool.trim() * size;
      left += pool.length;
    }
    if (left > 0) return;
    clearInterval(this.timer!);
    this.timer = null;
  }
}

/** One slab being filled, and the views of it not released yet. */
class Slab {
  /** Held by the reader until it moves to another slab. */
  private refs = 1;
  private reusable = true;
  fill = 0;

  constructor(
    readonly buf: Buffer,
    private readonly pool: SlabPool,
  ) {}

  get room(): number {
    return this.buf.length - this.fill;
  }

  /** A released-once view of bytes [from, to). */
  view(from: number, to: number): PooledChunk {
    this.refs++;
    let released = false;
    return {
      data: this.buf.subarray(from, to),
      release: (reusable = true) => {
        if (released) return;
        released = true;
        if (!reusable) this.reusable = false;
        this.unref();
      },
    };
  }

  unref(): void {
    if (--this.refs > 0) return;
    // Not pooled again (a write of it failed, or the pool is full): garbage for V8, collected with
    // the other buffers dropped, rather than piling up to its external-memory limit (buffer-churn.ts).
    if (!this.reusable || !this.pool.give(this.buf)) buffersPassed(this.buf.length);
  }
}

/** A GET that failed: the answer's status (null: none came), and for errors.ts-style helpers `$metadata`. */
export class S3GetError extends Error {
  readonly $metadata: { httpStatusCode?: number };
  constructor(
    readonly status: number | null,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = status === null ? 'S3GetError' : `S3GetError${status}`;
    this.$metadata = status === null ? {} : { httpStatusCode: status };
  }
}

/** The body of an answer: its chunks go to one consumer; `false` from `chunk` pauses the socket until `resume`. */
export interface PooledBody {
  consume(c: { chunk(c: PooledChunk): boolean; end(): void; error(err: Error): void }): void;
  resume(): void;
  destroy(err?: Error): void;
}

export interface PooledGetOptions {
  /** A presigned URL of the object (http: only). */
  url: URL;
  /** Bytes [start, end] asked (Range). */
  start: number;
  end: number;
  /** If-Match (an ETag as S3 gave it); null: none. */
  ifMatch: string | null;
  /** The object may end before `end`: an answer of bytes [start, its last byte] is accepted (the GET that finds an object whose size is not known yet). */
  clip?: boolean;
  pool: SlabPool;
  signal: AbortSignal;
  /** Connecting and the answer's head must take no longer. */
  connectTimeoutMs?: number;
  /** Nothing received for this long fails the GET (a stalled gateway). */
  idleTimeoutMs?: number;
}

/** Header values that could end a line are refused before they are written. */
function headerValue(v: string): string {
  if (!/^[\x20-\x7e]*$/.test(v)) throw new S3GetError(null, 'refusing to send a header value with control or non-ASCII characters');
  return v;
}

interface Head {
  status: number;
  reason: string;
  headers: Map<string, string>;
}

/** Parses a head (without its final CRLFCRLF); null: malformed. Repeated headers are refused (a lying or confused server). */
function parseHead(text: string): Head | null {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (!m) return null;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0 || /^[ \t]/.test(line)) return null; // no name, or an obsolete folded line
    const name = line.slice(0, i).toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) return null;
    if (headers.has(name)) return null;
    headers.set(name, line.slice(i + 1).trim());
  }
  return { status: Number(m[1]), reason: m[2] ?? '', headers };
}

/** A valid answer's head: the object's ETag and size (null: not said), and the body to consume. */
export interface PooledAnswer {
  etag: string | null;
  total: number | null;
  body: PooledBody;
}

/**
 * Sends the GET and resolves once a valid 206 head arrived, with the body to consume; rejects with
 * an S3GetError for any other answer or failure (the signal's reason when it aborted).
 */
export function pooledGet(o: PooledGetOptions): Promise<PooledAnswer> {
  /** Body bytes to come: the range asked, or less once a clipped answer (`clip`) says so. */
  let expected = o.end - o.start + 1;
  let request: string;
  try {
    if (o.url.protocol !== 'http:') throw new S3GetError(null, `pooled GETs speak plain HTTP only, not ${o.url.protocol}`);
    request =
      `GET ${headerValue(o.url.pathname + o.url.search)} HTTP/1.1\r\n` +
      `Host: ${headerValue(o.url.host)}\r\n` +
      `Range: bytes=${o.start}-${o.end}\r\n` +
      (o.ifMatch !== null ? `If-Match: ${headerValue(o.ifMatch)}\r\n` : '') +
      'User-Agent: stevedore\r\nConnection: close\r\n\r\n';
  } catch (err) {
    return Promise.reject(err as Error);
  }
  if (o.signal.aborted) return Promise.reject(o.signal.reason as Error);

  return new Promise((resolve, reject) => {
    // This GET's connection is not counted yet: it is one more.
    let slab = new Slab(o.pool.take(slabSizeFor(openSockets + 1)), o.pool);
    let head: Head | null = null;
    let received = 0; // body bytes
    let finished = false;
    let consumer: Parameters<PooledBody['consume']>[0] | null = null;
    /** Body bytes that came before a consumer was set (at most about EARLY_MAX). */
    const early: PooledChunk[] = [];
    let earlyBytes = 0;
    let paused = false;

    /** A failure after the head came, before a consumer was set: told to it when it comes. */
    let failedWith: Error | null = null;
    const fail = (err: Error): void => {
      if (finished) return;
      finished = true;
      cleanup();
      socket.destroy();
      for (const c of early.splice(0)) c.release();
      slab.unref();
      if (!head) reject(err);
      else if (consumer) tell.error(err);
      else failedWith = err;
    };
    /** The consumer hears of the end or of a failure once. */
    let told = false;
    const tell = {
      end: (): void => {
        if (told || !consumer) return;
        told = true;
        consumer.end();
      },
      error: (err: Error): void => {
        if (told || !consumer) return;
        told = true;
        consumer.error(err);
      },
    };
    const onAbort = (): void => fail(o.signal.reason as Error);
    const connectTimer = setTimeout(() => fail(new S3GetError(null, `no answer from ${o.url.host} within ${o.connectTimeoutMs ?? 5000} ms`)), o.connectTimeoutMs ?? 5000);
    const cleanup = (): void => {
      clearTimeout(connectTimer);
      o.signal.removeEventListener('abort', onAbort);
    };

    /** Where the body bytes of the current slab not handed on yet begin. */
    let pending = 0;
    /**
     * Fails after handing on the body bytes [pending, upTo) not handed on yet: the caller's retry
     * asks from the byte they reached (a connection that breaks or stalls mid-body).
     */
    const failKeeping = (err: Error, upTo = slab.fill): void => {
      if (head && !finished && upTo > pending) {
        deliver(slab.view(pending, upTo));
        pending = upTo;
      }
      fail(err);
    };
    /** The next region of memory a read lands in: the current slab's room (onRead moves to a new one). */
    const nextBuffer = (): Buffer => (finished ? SCRATCH : slab.buf.subarray(slab.fill)); // finished: the socket is destroyed, no read lands anywhere

    const deliver = (c: PooledChunk): void => {
      if (!consumer) {
        early.push(c);
        earlyBytes += c.data.length;
        if (earlyBytes >= EARLY_MAX) paused = true; // until consume()
        return;
      }
      if (consumer.chunk(c) === false) paused = true;
    };

    const onRead = (n: number): boolean => {
      if (finished) return false;
      const from = slab.fill;
      slab.fill += n;
      let arrived = n;
      if (!head) {
        // The head is at the start of the first slab (it has room for MAX_HEAD and more).
        const at = slab.buf.subarray(0, slab.fill).indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1');
        if (at < 0 || at > MAX_HEAD) {
          if (at > MAX_HEAD || slab.fill >= MAX_HEAD) {
            fail(new S3GetError(null, `the answer's head is larger than ${MAX_HEAD} bytes`));
            return false;
          }
          return true;
        }
        const parsed = parseHead(slab.buf.toString('latin1', 0, at));
        if (!parsed) {
          fail(new S3GetError(null, 'a malformed HTTP answer'));
          return false;
        }
        head = parsed;
        const problem = checkHead(parsed, o.start, o.end, o.clip === true);
        if (problem instanceof S3GetError) {
          head = null; // the promise rejects
          fail(problem);
          return false;
        }
        expected = problem.length;
        clearTimeout(connectTimer);
        pending = at + 4;
        arrived = slab.fill - pending;
        resolve({ etag: parsed.headers.get('etag') ?? null, total: totalOf(parsed), body });
      }
      if (arrived <= 0) return true;
      if (received + arrived > expected) {
        failKeeping(new S3GetError(206, `the gateway sent more than the ${expected} bytes it announced`), from);
        return false;
      }
      received += arrived;
      const complete = received === expected;
      const retire = slab.room < MIN_ROOM;
      // DELIVER_MIN in a SLAB, half of a smaller one.
      if (complete || retire || slab.fill - pending >= slab.buf.length / 2) {
        deliver(slab.view(pending, slab.fill));
        pending = slab.fill;
        if (finished) return false; // the consumer gave up on it (destroy) meanwhile
      }
      if (complete) {
        finished = true;
        cleanup();
        socket.destroy();
        slab.unref();
        if (consumer) tell.end();
        return false;
      }
      if (retire) {
        slab.unref();
        slab = new Slab(o.pool.take(slabSizeFor(openSockets)), o.pool);
        pending = 0;
      }
      return !paused;
    };

    const body: PooledBody = {
      consume: (c) => {
        consumer = c;
        paused = false;
        earlyBytes = 0;
        for (const e of early.splice(0)) {
          if (c.chunk(e) === false) paused = true;
        }
        if (failedWith) tell.error(failedWith);
        else if (finished) tell.end();
        else if (paused) socket.pause();
        else socket.resume(); // reads waited for a consumer (EARLY_MAX)
      },
      resume: () => {
        if (finished || !paused) return;
        paused = false;
        socket.resume();
      },
      destroy: (err) => {
        const e = err ?? new S3GetError(null, 'the read was given up');
        if (!finished) return fail(e);
        // All of it had come: nothing to stop, but whoever gave up hears of it rather than of an end.
        if (consumer) tell.error(e);
        else failedWith = e;
      },
    };

    const socket = net.connect({
      host: o.url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(o.url.port || 80),
      noDelay: true,
      onread: { buffer: nextBuffer, callback: onRead },
    });
    openSockets++;
    socket.setTimeout(o.idleTimeoutMs ?? 60_000, () => failKeeping(new S3GetError(null, `nothing received from ${o.url.host} for ${o.idleTimeoutMs ?? 60_000} ms`)));
    socket.once('connect', () => socket.write(request));
    socket.on('error', (err) => failKeeping(new S3GetError(null, `the connection to ${o.url.host} failed: ${err.message}`, { cause: err })));
    socket.once('close', () => {
      openSockets--;
      if (!finished) failKeeping(new S3GetError(head ? 206 : null, head ? `the body ended after ${received} of ${expected} bytes` : 'the connection closed before an answer'));
    });
    o.signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The object's size an accepted head says: Content-Range's `/size`, or a whole answer's Content-Length. */
function totalOf(h: Head): number | null {
  const range = h.headers.get('content-range');
  if (range === undefined) return Number(h.headers.get('content-length'));
  const m = /\/(\d{1,15})$/.exec(range);
  return m ? Number(m[1]) : null;
}

/**
 * What is wrong with an answer's head for a GET of [start, end], or the body's length. With
 * `clip`, a range ending past the object is answered with what there is (bytes start..size-1).
 */
function checkHead(h: Head, start: number, end: number, clip: boolean): S3GetError | { length: number } {
  // A server that ignored the Range of a whole-object request answers 200: the same bytes.
  const whole = h.status === 200 && start === 0 && !h.headers.has('content-range');
  if (h.status !== 206 && !whole) {
    // S3's own error (404 NoSuchKey, 412 for If-Match, 503 SlowDown) or a gateway that ignored the Range (200).
    return new S3GetError(h.status, `the gateway answered ${h.status}${h.reason ? ` ${h.reason}` : ''} to a ranged GET`);
  }
  if (h.headers.has('transfer-encoding')) return new S3GetError(206, 'a ranged answer with a Transfer-Encoding (only Content-Length is accepted)');
  const asked = end - start + 1;
  const lengthText = h.headers.get('content-length');
  const length = lengthText !== undefined && /^\d{1,15}$/.test(lengthText) ? Number(lengthText) : null;
  const badLength = (want: string): S3GetError => new S3GetError(206, `Content-Length ${lengthText ?? '(none)'} for a range of ${want} bytes`);
  if (whole) return length !== null && (length === asked || (clip && length < asked)) ? { length } : badLength(String(asked));
  const range = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)$/.exec(h.headers.get('content-range') ?? '');
  const last = range ? Number(range[2]) : -1;
  const clipped = clip && range !== null && range[3] !== '*' && last < end && last === Number(range[3]) - 1;
  if (!range || Number(range[1]) !== start || (last !== end && !clipped)) {
    return new S3GetError(206, `Content-Range ${h.headers.get('content-range') ?? '(none)'} for bytes ${start}-${end}`);
  }
  const want = last - start + 1;
  return length === want ? { length } : badLength(String(want));
}
