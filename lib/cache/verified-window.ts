/**
 * Verifying bytes another replica streams (docs/ARCHITECTURE.md, rule 1): a follower on the S3
 * backend hashes the holder's stream from byte 0 and forwards the client's window of it, holding
 * the window's last byte until the whole blob matched its digest (used by remote-blob.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { DigestAlgorithm } from '../oci/digest.js';
import { buffersPassed } from '../util/buffer-churn.js';
import { DestinationClosedError } from '../util/destination-closed.js';

/**
 * The bytes of a blob from another replica, hashed as they pass, and the client's window
 * [start, last] of them forwarded: every byte but the window's last goes out as it arrives; that
 * one waits in `held` until the whole blob matched its digest (finish).
 */
export class VerifiedWindow {
  /** Bytes of the blob hashed so far: where the next transfer starts. */
  hashed = 0;
  /** The next byte of the window not sent yet (the held one included). */
  unsent: number;
  private held: Buffer | null = null;
  private readonly hash: Hash;

  constructor(
    private readonly algorithm: DigestAlgorithm,
    start: number,
    private readonly last: number,
  ) {
    this.hash = createHash(algorithm);
    this.unsent = start;
  }

  /** Writes `body` (the blob from byte `hashed` on) through the hash into `dest`, which stays open. */
  async feed(body: Readable, dest: Writable): Promise<void> {
    const gone = (): void => {
      body.destroy(new DestinationClosedError());
    };
    const socket = (dest as Writable & { req?: { socket?: NodeJS.EventEmitter & { destroyed?: boolean } } }).req?.socket;
    if (dest.destroyed || socket?.destroyed) {
      body.destroy();
      throw new DestinationClosedError();
    }
    dest.once('close', gone);
    socket?.once('close', gone);
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        const at = this.hashed;
        this.hash.update(chunk);
        this.hashed += chunk.length;
        // Each chunk is a socket read dropped once relayed: collected every few MiB, not when V8's
        // external-memory limit is reached (util/buffer-churn.ts).
        buffersPassed(chunk.length);
        // The part of this chunk inside the window, from the first byte not sent.
        const from = Math.max(this.unsent + (this.held ? 1 : 0), at);
        const to = Math.min(this.last, this.hashed - 1);
        if (from > to) continue;
        const part = chunk.subarray(from - at, to - at + 1);
        const out: Buffer[] = [];
        if (this.held) out.push(this.held);
        if (part.length > 1) out.push(part.subarray(0, part.length - 1));
        this.held = Buffer.from(part.subarray(part.length - 1));
        // One writev for the held byte and the rest.
        let ok = true;
        dest.cork();
        for (const b of out) {
          this.unsent += b.length;
          ok = dest.write(b);
        }
        dest.uncork();
        if (!ok) await drained(dest);
      }
    } finally {
      dest.off('close', gone);
      socket?.off('close', gone);
    }
    if (dest.destroyed) throw new DestinationClosedError();
  }

  digest(): string {
    return `${this.algorithm}:${this.hash.copy().digest('hex')}`;
  }

  /** The whole blob verified: the held byte goes out. */
  async finish(dest: Writable): Promise<void> {
    if (!this.held) return;
    const b = this.held;
    this.held = null;
    this.unsent += 1;
    if (!dest.write(b)) await drained(dest);
  }
}

/** Resolves when `dest` drained; rejects when it closed first. */
function drained(dest: Writable): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      dest.off('drain', onDrain);
      dest.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(new DestinationClosedError());
    dest.once('drain', onDrain);
    dest.once('close', onClose);
  });
}
