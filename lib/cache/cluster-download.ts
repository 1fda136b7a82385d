/**
 * Cluster mode's side of "one upstream fetch per digest": a download held by another replica.
 *
 * The replica holding a digest's lease downloads into the shared temp file (storage/paths.ts
 * `sharedPart`) and publishes, in the lease's record, the repository it fetched for and the size
 * once the upstream answered. Every other replica keeps one RemoteBlob per digest for all its
 * clients: it polls the file's size (no fs.watch: it does not work on NFS) and the lease, and its
 * clients read the growing file at their own pace, the last byte held back until the verified file
 * is in the store (rule 2 of DESIGN.md: a client never mistakes unverified bytes for a blob).
 *
 * When the lease disappears without a stored file or a failure note, its holder died: this
 * replica takes the lease over and resumes the download from the bytes on disk (re-hashed), so
 * its clients and every other replica's carry on.
 *
 * Replicas that share no disk (the S3 backend) follow no file: the holder publishes its URL
 * (cluster.advertise) in the lease record and the clients of the others stream from its peer
 * endpoint (lib/cluster/holder-stream.ts). When the holder dies, the taker starts the download
 * afresh (its own temp file) and those clients go on from the byte they reached, from it.
 */
import type { Logger } from 'pino';
import type { Writable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { OciError, type OciErrorCode } from '../oci/errors.js';
import type { Store } from '../storage/store.js';
import type { Coordinator } from '../cluster/coordinator.js';
import { NextEvent } from '../util/next-event.js';
import { endAnswer } from '../util/pump.js';

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
  coordinator: Coordinator;
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
   * Replicas that share no disk (the S3 backend): streams bytes [start, end] from the holder at
   * `url` instead of following the shared temp file.
   */
  streamFrom?(url: string, d: Digest, dest: Writable, start: number, end: number, onBytes: (n: number) => void): Promise<void>;
}

/** Most takeovers one RemoteBlob attempts before it fails its clients (a download that keeps dying). */
const MAX_TAKEOVERS = 3;

export class RemoteBlob {
  state: 'waiting' | 'writing' | 'committed' | 'failed' = 'waiting';
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
   * Sends bytes [start, end] (inclusive) to `dest` as they reach the shared file, and ends it. The
   * caller holds a `use()` for as long as it sends.
   */
  async sendTo(dest: Writable, start = 0, end = Infinity): Promise<void> {
    if (this.deps.streamFrom) {
      await this.streamFromHolder(this.deps.streamFrom, dest, start, end);
      return;
    }
    await this.deps.store.blobs.sendShared(this.digest, dest, start, end, {
      available: () => {
        if (this.state === 'failed') throw this.failure ?? new Error('download failed on another replica');
        return this.state === 'committed' ? this.written : Math.max(0, this.written - 1);
      },
      complete: () => this.state === 'committed',
      waitForMore: () => this.nextEvent(),
    });
  }

  /**
   * Replicas that share no disk: bytes from the holder's peer endpoint. When the holder stops
   * (it died, or lost its lease), the client stays: once another replica (perhaps this one) holds
   * the download, or the object is stored, it goes on from the byte it reached. A blob is the same
   * bytes whoever fetches it, and every holder verifies it before its last byte.
   */
  private async streamFromHolder(
    streamFrom: NonNullable<RemoteBlobDeps['streamFrom']>,
    dest: Writable,
    start: number,
    end: number,
  ): Promise<void> {
    let pos = start;
    const last = (): number => (end === Infinity && this.size !== null ? this.size - 1 : end);
    for (let attempt = 0; ; attempt++) {
      if (pos > last()) break;
      const url = this.url;
      try {
        if (this.state === 'committed') {
          const stored = await this.deps.store.blobs.open(this.digest);
          if (!stored) throw new Error(`${this.digest.value} was stored, then vanished`);
          await stored.sendTo(dest, { start: pos, end: Math.min(last(), stored.size - 1) });
          return;
        }
        if (!url) throw new OciError('BLOB_UNKNOWN', `the replica downloading ${this.digest.value} published no address (cluster.advertise)`, { status: 503 });
        await streamFrom(url, this.digest, dest, pos, end, (n) => {
          pos += n;
        });
        break;
      } catch (err) {
        if (dest.destroyed || this.state === 'failed' || attempt >= MAX_TAKEOVERS + 1) throw this.failure ?? err;
        this.deps.log.warn({ digest: this.digest.value, holder: url, at: pos, err: (err as Error).message }, 'the replica holding a download stopped sending it; going on from another');
        await this.holderChanged(url);
      }
    }
    await endAnswer(dest);
  }

  /** Resolves when the download has another holder (a new URL), is stored, failed, or after a while. */
  private async holderChanged(url: string): Promise<void> {
    const until = Date.now() + 3 * this.deps.leaseTtlMs + 5_000;
    while (this.url === url && this.state !== 'committed' && this.state !== 'failed' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, this.deps.pollMs));
    }
  }

  private schedule(ms: number): void {
    if (this.timer || this.state === 'committed' || this.state === 'failed') return;
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
    if (this.state !== 'committed' && this.state !== 'failed') this.schedule(this.deps.pollMs);
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
      const pub = parsePublished(rec.value);
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
    if (this.state !== 'committed' && this.state !== 'failed') {
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
    if (this.state === 'failed') return Promise.reject(this.failure ?? new Error('download failed on another replica'));
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
    return v as FailureNote;
  } catch {
    return null;
  }
}
