/**
 * Cluster mode's side of "one upstream fetch per digest": a download held by another replica.
 *
 * The replica holding a digest's lease downloads into the shared temp file (storage/paths.ts
 * `sharedPart`) and publishes, in the lease's record, the repository it fetched for and the size
 * once the upstream answered. Every other replica keeps one RemoteBlob per digest for all its
 * clients: it polls the file's size (no fs.watch: it does not work on NFS) and the lease, and its
 * clients read the growing file at their own pace, the last byte of each answer held back until
 * the verified file is in the store (docs/ARCHITECTURE.md, rule 2).
 *
 * When the lease disappears without a stored file or a failure note, its holder died: this
 * replica takes the lease over and resumes the download from the bytes on disk (re-hashed), so
 * its clients and every other replica's carry on.
 *
 * Replicas that share no disk (the S3 backend) follow no file: the holder publishes its URL
 * (cluster.advertise) in the lease record and the clients of the others stream from its peer
 * endpoint (lib/cluster/holder-stream.ts). When the holder dies, the taker starts the download
 * afresh (its own temp file) and those clients go on from the byte they reached, from it.
 *
 * The lease record comes from Redis, and Redis is not trusted (rule 10): its size is checked
 * against the bytes before a client's last byte, its repository never stands in for this
 * replica's own authorization (cluster-downloads.ts), a holder that shows no progress for too long is
 * given up (the replica downloads alone), and bytes streamed from a holder are hashed here
 * (VerifiedWindow): a client's last byte goes out only once they matched the digest.
 */
import type { Logger } from 'pino';
import type { Readable, Writable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { OciError, OCI_ERRORS, type OciErrorCode } from '../oci/errors.js';
import type { Store } from '../storage/store.js';
import type { Leases } from '../cluster/coordinator.js';
import { NextEvent } from '../util/next-event.js';
import { endAnswer } from '../util/pump.js';
import { DestinationClosedError } from '../util/destination-closed.js';
import { VerifiedWindow } from './verified-window.js';

/** What a download's holder publishes in its lease record. */
export interface PublishedDownload {
  /** The replica holding it (for logs). */
  owner: string;
  /** `<upstream>/<name>` it was started for: other repositories must be allowed to join (rule 9). */
  repoKey: string;
  /** Total size, once the upstream answered. */
  size: number | null;
  /** The upstream answered with a body: clients may be answered. */
  ready: boolean;
  /** The holder's URL, where the others stream it from when replicas share no disk (the S3 backend). */
  url?: string;
}

/** Why a held download failed, left for the other replicas' clients for a few seconds. */
export interface FailureNote {
  token: string;
  code: OciErrorCode;
  message: string;
  status: number;
}

export const FAILURE_NOTE_TTL_MS = 15_000;

export function blobLeaseKey(d: Digest): string {
  return `blob:${d.value}`;
}

export function blobFailureKey(d: Digest): string {
  return `blobfail:${d.value}`;
}

export interface RemoteBlobDeps {
  store: Store;
  coordinator: Leases;
  log: Logger;
  pollMs: number;
  leaseTtlMs: number;
  /**
   * Called when the holder is gone and nothing was stored: takes the lease and resumes the
   * download here. Returns the new lease's token, or null when another replica was faster.
   */
  takeOver(): Promise<string | null>;
  /** Called once the RemoteBlob is finished with (committed, failed, or no one follows it). */
  onDone(): void;
  /**
   * A holder that shows no sign of progress (no size published, its file not growing) for this
   * long while its lease stands is given up on: `state` becomes 'abandoned' and the replica
   * downloads alone. Redis can hold a lease nobody works on.
   */
  noProgressMs: number;
  /**
   * When each lease (digest and token) last showed progress, shared by the RemoteBlobs of this
   * process: a lease nobody works on is given up even when every client left and came back (each
   * time a new RemoteBlob).
   */
  progress: { get(key: string): LeaseProgress | undefined; set(key: string, value: LeaseProgress): unknown };
  /**
   * Replicas that share no disk (the S3 backend): the holders' peer endpoints, which clients
   * stream from instead of following the shared temp file.
   */
  holders?: HolderSource;
}

/** When a lease last showed progress, and what its record said then. */
export interface LeaseProgress {
  at: number;
  seen: string;
}

/** The peer endpoints of the replicas holding downloads (lib/cluster/holder-stream.ts). */
export interface HolderSource {
  /** The blob from byte `start` to its end, from the replica at `url`. */
  open(url: string, d: Digest, start: number): Promise<Readable>;
  /** Whether `url` may be asked (inside the allowed networks, not marked bad). */
  usable(url: string): boolean;
  markBad(url: string, why: string): void;
}

/** Bytes from another replica that did not hash to their digest: the client is cut, never retried. */
export class UnverifiedBytesError extends Error {
  readonly code = 'ERR_UNVERIFIED_BYTES';
}

/** Most takeovers one RemoteBlob attempts before it fails its clients (a download that keeps dying). */
const MAX_TAKEOVERS = 3;

export class RemoteBlob {
  /** 'abandoned': the holder showed no progress for too long (see noProgressMs); the replica downloads alone. */
  state: 'waiting' | 'writing' | 'committed' | 'failed' | 'abandoned' = 'waiting';
  size: number | null = null;
  repoKey = '';
  owner = '';
  /** The holder's URL (published when replicas share no disk). */
  url = '';
  /** Bytes in the shared file at the last look. */
  written = 0;
  failure: Error | null = null;
  /** Resolves when clients may be answered (the holder published its size, or the blob is stored). */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private failReady!: (err: Error) => void;
  private token: string | null = null;
  private users = 0;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private takeovers = 0;
  /** When the file last grew (or the lease was last seen): a holder Redis cannot vouch for is given up after a while. */
  private lastSign = Date.now();
  /** When the holder last showed progress (published its size, its file grew). */
  private lastProgress = Date.now();
  private readonly next = new NextEvent();

  constructor(
    readonly digest: Digest,
    private readonly deps: RemoteBlobDeps,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.markReady = resolve;
      this.failReady = reject;
    });
    this.ready.catch(() => undefined);
    this.schedule(0);
  }

  /** A client waits for it (answer not sent yet): keeps the polling going. */
  use(): () => void {
    this.users++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.users--;
      if (this.users === 0 && this.state !== 'committed' && this.state !== 'failed') {
        // Nobody follows it here any more: stop looking. The holder finishes it for the store.
        this.finish();
      }
    };
  }

  /**
   * Sends bytes [start, end] (inclusive) to `dest` as they reach the shared file, and ends it.
   * `promised` is the size the answer's headers gave (from the lease record): the last byte goes
   * out only once the stored blob has that size, else the client is cut. The caller holds a
   * `use()` for as long as it sends.
   */
  async sendTo(dest: Writable, start = 0, end = Infinity, promised: number | null = this.size): Promise<void> {
    if (this.deps.holders) {
      await this.streamFromHolder(this.deps.holders, dest, start, end, promised);
      return;
    }
    // The answer's last byte: the end of its range, or of the blob the headers announced.
    const last = end !== Infinity ? end : promised !== null ? promised - 1 : Infinity;
    await this.deps.store.blobs.sendShared(this.digest, dest, start, end, {
      available: () => {
        if (this.state === 'failed' || this.state === 'abandoned') throw this.failure ?? new Error('download failed on another replica');
        if (this.state !== 'committed') return Math.max(0, Math.min(this.written - 1, last));
        // Stored (verified by the replica that stored it): its size must be the one announced.
        if (promised !== null && this.written !== promised) {
          throw new Error(`${this.digest.value} was announced (in Redis) as ${promised} bytes but is ${this.written}: the answer is cut`);
        }
        return this.written;
      },
      complete: () => this.state === 'committed',
      waitForMore: () => this.nextEvent(),
    });
  }

  /**
   * Replicas that share no disk: bytes from the holder's peer endpoint, hashed here from byte 0
   * (rule 10: another process is trusted for nothing but bytes that verify). The client's window
   * is sent as it arrives, but for its last byte, which goes out once the whole blob matched its
   * digest; a mismatch cuts the client and marks the holder bad. When the holder stops (it died,
   * or lost its lease), the client stays: once another replica (perhaps this one) holds the
   * download, or the object is stored, it goes on from the byte it reached.
   */
  private async streamFromHolder(holders: HolderSource, dest: Writable, start: number, end: number, promised: number | null): Promise<void> {
    const last = end !== Infinity ? end : promised !== null ? promised - 1 : Infinity;
    const w = new VerifiedWindow(this.digest.algorithm, start, last);
    for (let attempt = 0; ; attempt++) {
      const url = this.url;
      try {
        if (this.state === 'committed') {
          // In the bucket: stored only once verified by the replica that wrote it.
          const stored = await this.deps.store.blobs.open(this.digest);
          if (!stored) throw new Error(`${this.digest.value} was stored, then vanished`);
          const to = last === Infinity ? stored.size - 1 : last;
          if ((promised !== null && stored.size !== promised) || to > stored.size - 1) {
            await stored.release();
            throw new UnverifiedBytesError(`${this.digest.value} was announced (in Redis) as ${promised} bytes but is ${stored.size}: the answer is cut`);
          }
          await stored.sendTo(dest, { start: w.unsent, end: to });
          return;
        }
        if (!url) throw new OciError('BLOB_UNKNOWN', `the replica downloading ${this.digest.value} published no address (cluster.advertise)`, { status: 503 });
        const body = await holders.open(url, this.digest, w.hashed);
        await w.feed(body, dest);
        const got = w.digest();
        if (got !== this.digest.value) {
          holders.markBad(url, `sent ${w.hashed} bytes hashing to ${got}, not ${this.digest.value}`);
          throw new UnverifiedBytesError(`the bytes of ${this.digest.value} from ${url} do not verify: the answer is cut`);
        }
        if ((promised !== null && w.hashed !== promised) || (last !== Infinity && last > w.hashed - 1)) {
          throw new UnverifiedBytesError(`${this.digest.value} was announced (in Redis) as ${promised} bytes but is ${w.hashed}: the answer is cut`);
        }
        await w.finish(dest);
        break;
      } catch (err) {
        if (err instanceof UnverifiedBytesError || err instanceof DestinationClosedError) throw err;
        if (dest.destroyed || this.state === 'failed' || attempt >= MAX_TAKEOVERS + 1) throw this.failure ?? err;
        this.deps.log.warn({ digest: this.digest.value, holder: url, at: w.hashed, err: (err as Error).message }, 'the replica holding a download stopped sending it; going on from another');
        await this.holderChanged(url);
      }
    }
    await endAnswer(dest);
  }

  /** Resolves when the download has another holder (a new URL), is stored, failed, or after a while. */
  private async holderChanged(url: string): Promise<void> {
    const until = Date.now() + 3 * this.deps.leaseTtlMs + 5_000;
    while (this.url === url && this.state !== 'committed' && this.state !== 'failed' && this.state !== 'abandoned' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, this.deps.pollMs));
    }
  }

  private get settled(): boolean {
    return this.state === 'committed' || this.state === 'failed' || this.state === 'abandoned';
  }

  private schedule(ms: number): void {
    if (this.timer || this.settled) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.tick();
    }, ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.look();
    } catch (err) {
      this.deps.log.warn({ err, digest: this.digest.value }, 'following a download of another replica failed');
    } finally {
      this.ticking = false;
    }
    if (!this.settled) this.schedule(this.deps.pollMs);
  }

  private async look(): Promise<void> {
    const { store, coordinator } = this.deps;
    const probe = await store.blobs.probeShared(this.digest);
    if (probe.final !== null) {
      this.written = probe.final;
      this.size ??= probe.final;
      this.commit();
      return;
    }
    let grew = false;
    if (probe.part !== null && probe.part > this.written) {
      this.written = probe.part;
      grew = true;
      this.lastSign = Date.now();
      this.lastProgress = Date.now();
    }
    let rec;
    try {
      rec = await coordinator.read(blobLeaseKey(this.digest));
    } catch {
      rec = undefined; // Redis unreachable: the holder cannot be checked, only the file watched
    }
    if (rec) {
      this.lastSign = Date.now();
      this.token = rec.token;
      // Progress: the shared file grew, or the record changed (the holder published its size, that
      // it is ready, its address), since this lease was last looked at by any RemoteBlob here.
      const pub = parsePublished(rec.value);
      const key = `${this.digest.value} ${rec.token}`;
      const seen = `${rec.value.length} ${pub?.ready} ${pub?.size} ${pub?.url}`;
      const last = this.deps.progress.get(key);
      if (grew || !last || last.seen !== seen) this.deps.progress.set(key, { at: Date.now(), seen });
      this.lastProgress = this.deps.progress.get(key)!.at;
      // Replicas that stream from the holder see no file grow: its stream shows progress to its
      // clients. A shared file that stops growing, or a holder that never answers, is given up.
      const idleFor = Date.now() - this.lastProgress;
      if ((this.state === 'waiting' || !this.deps.holders) && idleFor > this.deps.noProgressMs) {
        this.abandon(pub ? `the replica holding it (${pub.owner.slice(0, 100)}) showed no progress for ${Math.round(idleFor / 1000)} s` : 'its lease record in Redis is not one a replica writes');
        return;
      }
      if (pub) {
        this.repoKey = pub.repoKey;
        this.owner = pub.owner;
        if (pub.url) this.url = pub.url;
        if (pub.size !== null) this.size = pub.size;
        if (pub.ready && this.state === 'waiting') {
          this.state = 'writing';
          this.markReady();
        }
      }
    } else if (rec === null) {
      const note = await coordinator.getNote(blobFailureKey(this.digest)).catch(() => null);
      const failure = note ? parseFailure(note) : null;
      if (failure && (this.token === null || failure.token === this.token)) {
        this.fail(new OciError(failure.code, failure.message, { status: failure.status }));
        return;
      }
      // Gone without storing it or saying why: its replica died (or lost Redis for longer than the lease).
      if (this.takeovers >= MAX_TAKEOVERS) {
        this.fail(new OciError('BLOB_UNKNOWN', `the download of ${this.digest.value} was taken over ${this.takeovers} times and never finished`, { status: 503 }));
        return;
      }
      this.takeovers++;
      const token = await this.deps.takeOver();
      if (token) this.token = token;
    } else if (Date.now() - this.lastSign > Math.max(30_000, 3 * this.deps.leaseTtlMs)) {
      this.fail(new OciError('BLOB_UNKNOWN', `the download of ${this.digest.value} on another replica made no progress while Redis was unreachable`, { status: 503 }));
      return;
    }
    if (grew) this.wake();
  }

  /** The lease stands but nobody works on it (as far as this replica can tell): download alone. */
  private abandon(why: string): void {
    this.deps.log.warn({ digest: this.digest.value, reason: why }, 'not following the download another replica holds; downloading it here');
    this.state = 'abandoned';
    this.failure = new OciError('BLOB_UNKNOWN', `the download of ${this.digest.value} on another replica made no progress`, { status: 503 });
    this.failReady(this.failure);
    this.wake(this.failure);
    this.finish();
  }

  private commit(): void {
    this.state = 'committed';
    this.markReady();
    this.wake();
    this.finish();
  }

  private fail(err: Error): void {
    this.state = 'failed';
    this.failure = err;
    this.failReady(err);
    this.wake(err);
    this.finish();
  }

  private finish(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.settled) {
      // Abandoned by its clients: anyone still waiting (none) is released; a new request starts afresh.
      this.state = 'failed';
      this.failure = new Error('no client follows this download here any more');
      this.failReady(this.failure);
      this.wake(this.failure);
    }
    this.deps.onDone();
  }

  /** One promise per look for every follower: resolves on progress or commit, rejects on failure. */
  private nextEvent(): Promise<void> {
    if (this.state === 'failed' || this.state === 'abandoned') return Promise.reject(this.failure ?? new Error('download failed on another replica'));
    if (this.state === 'committed') return Promise.resolve();
    return this.next.wait();
  }

  private wake(err?: Error): void {
    this.next.fire(err);
  }
}

export function parsePublished(value: string): PublishedDownload | null {
  try {
    const v = JSON.parse(value) as Partial<PublishedDownload>;
    if (typeof v.repoKey !== 'string' || typeof v.owner !== 'string') return null;
    return {
      owner: v.owner,
      repoKey: v.repoKey,
      size: typeof v.size === 'number' && Number.isSafeInteger(v.size) && v.size >= 0 ? v.size : null,
      ready: v.ready === true,
      ...(typeof v.url === 'string' && /^https?:\/\/[^/]+$/.test(v.url) ? { url: v.url } : {}),
    };
  } catch {
    return null;
  }
}

function parseFailure(value: string): FailureNote | null {
  try {
    const v = JSON.parse(value) as Partial<FailureNote>;
    if (typeof v.token !== 'string' || typeof v.code !== 'string' || typeof v.message !== 'string' || typeof v.status !== 'number') return null;
    // From Redis: only an error a replica could have written (a known code, an error status, a
    // short printable message) reaches a client.
    if (!Object.hasOwn(OCI_ERRORS, v.code) || !Number.isInteger(v.status) || v.status < 400 || v.status > 599) return null;
    return { token: v.token, code: v.code as OciErrorCode, status: v.status, message: v.message.replace(/[^\x20-\x7e]/g, ' ').slice(0, 300) };
  } catch {
    return null;
  }
}
