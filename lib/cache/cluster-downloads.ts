/**
 * The Downloads of replicas on one store (cluster mode): one upstream fetch per digest for the
 * cluster. A miss takes the digest's lease and downloads here (into the shared temp file, its size
 * and state published in the lease record), or follows the replica holding it (RemoteBlob,
 * cluster-download.ts); a dead holder's download is taken over. One replica at a time asks the
 * upstream about a tag or a manifest (turn). Redis unreachable: this replica works alone.
 *
 * The lease record comes from Redis, and Redis is not trusted (docs/ARCHITECTURE.md rule 10): its
 * repository never stands in for this replica's own authorization (followRemote asks
 * repository-access.ts for the asking repository itself), its size is checked against the bytes
 * before a client's last byte (RemoteBlob.sendTo), a holder that shows no progress is abandoned
 * (this replica downloads alone), a holder address outside cluster.allowedNetworks is not asked,
 * and a failure note says only what a replica could have written (its code, status and reason).
 */
import { Transform, type Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { Store } from '../storage/store.js';
import type { Lease, Leases } from '../cluster/coordinator.js';
import { UpstreamError } from '../upstream/errors.js';
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import { activeTracer } from '../util/tracing.js';
import { blobFailureKey, blobLeaseKey, FAILURE_NOTE_TTL_MS, RemoteBlob, type FailureNote, type HolderSource, type LeaseProgress, type PublishedDownload } from './remote-blob.js';
import { Download } from './download.js';
import type { Downloads, Turn } from './downloads.js';
import type { LocalDownloads } from './local-downloads.js';
import { repoKey, type BlobAnswer, type Target } from './pull-types.js';
import type { RepositoryAccess } from './repository-access.js';
import { isMappedError, toOciError } from './error-answers.js';

/** How long a push waits for the other replicas to be told that it moved a tag (then it answers all the same). */
const TAG_MOVED_WAIT_MS = 1_000;

/** Cluster mode: replicas on one shared store coordinate downloads through leases. */
export interface ClusterDownloadOptions {
  coordinator: Leases;
  /** This replica's name, in lease records and logs. */
  replicaId: string;
  /** A download's lease expires this long after its holder last renewed it (then it is taken over). */
  leaseTtlMs: number;
  /** How often a download held elsewhere is looked at (file size, lease). */
  pollMs: number;
  /** A holder showing no progress this long is given up on; this replica then downloads alone. */
  noProgressMs: number;
  /** Counts takeovers and remote follows (metrics). */
  onEvent?(what: 'takeover' | 'remote_follow' | 'alone'): void;
  /** A push moved a tag of an upstream's namespace here: the other replicas forget their answer. */
  onTagMoved?(upstream: string, name: string, tag: string): Promise<unknown>;
  /**
   * Replicas that share no disk (the S3 backend): this replica's URL, published in its leases, and
   * how the clients of others stream a download from the replica holding it (holder-stream.ts).
   */
  holders?: HolderSource & { readonly self: string };
}

export class ClusterDownloads implements Downloads {
  /** Downloads other replicas hold that clients of this one follow, by digest. */
  private readonly remotes = new Map<string, RemoteBlob>();
  /** When each lease of another replica last showed progress (cluster-download.ts). */
  private readonly leaseProgress = new LRUCache<string, LeaseProgress>(upTo(10_000));
  /** A miss being resolved (lease asked for), shared by concurrent requests. */
  private readonly resolving = new Map<string, Promise<Download | RemoteBlob | 'stored'>>();
  /** Cluster downloads this replica holds the lease of. */
  private readonly held = new Map<Download, Promise<void>>();
  /** Downloads given up for another replica to continue (shutdown): their failure is no failure. */
  private readonly handedOver = new Set<Download>();
  private readonly store: Store;
  private readonly log: Logger;
  private readonly access: RepositoryAccess;

  constructor(
    private readonly local: LocalDownloads,
    private readonly c: ClusterDownloadOptions,
    deps: { store: Store; log: Logger; access: RepositoryAccess },
  ) {
    this.store = deps.store;
    this.log = deps.log;
    this.access = deps.access;
  }

  async fetch(t: Target, d: Digest): Promise<BlobAnswer | 'stored'> {
    const source = await this.source(t, d);
    if (source === 'stored') return 'stored';
    if (source instanceof Download) return this.local.join(t, d, source);
    return this.followRemote(source, t, d);
  }

  /**
   * This replica's turn to do `key`'s upstream work (a lease, held until released), or 'waited'
   * once another replica that had it is done (then its result is in the shared state), or null
   * when Redis cannot say (this replica goes ahead alone).
   */
  turn(key: string): Promise<Turn> {
    const tracer = activeTracer();
    if (!tracer) return this.turnNow(key);
    // A cluster wait: this replica's lease, or the wait for the replica that holds it.
    return tracer.span('cluster.lease', { 'stevedore.lease': key }, async (span) => {
      const turn = await this.turnNow(key);
      span.set('stevedore.lease.outcome', turn === null ? 'alone' : turn === 'waited' ? 'waited' : 'acquired');
      return turn;
    });
  }

  private async turnNow(key: string): Promise<Turn> {
    const c = this.c;
    if (!c.coordinator.available()) return null;
    try {
      const lease = await c.coordinator.acquire(key, c.leaseTtlMs);
      if (lease) return lease;
      // Bounded: a holder that takes longer than this (a stalled upstream) is not waited for.
      const deadline = Date.now() + 2 * c.leaseTtlMs;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, c.pollMs));
        if ((await c.coordinator.read(key)) === null) break;
      }
      return 'waited';
    } catch {
      return null;
    }
  }

  async tagMoved(upstream: string, name: string, tag: string): Promise<void> {
    const told = this.c.onTagMoved?.(upstream, name, tag);
    if (!told) return;
    // Best effort (the bus loses what a cut-off replica misses): a coordinator that does not
    // answer delays the push's answer by TAG_MOVED_WAIT_MS at most.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([told.catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, TAG_MOVED_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /**
   * Shutting down: the downloads this replica still holds are stopped with their bytes left in the
   * shared file and their leases released, so another replica resumes each one (with Range) at
   * once instead of failing its clients. Resolves when they have settled.
   */
  async handOver(): Promise<number> {
    const held = [...this.held];
    for (const [dl] of held) {
      this.handedOver.add(dl);
      dl.cancel(new OciError('BLOB_UNKNOWN', `this replica is shutting down; another continues the download of ${dl.digest}`, { status: 503 }), { keepFile: true });
    }
    // Settled: each lease released (after the file was left as it is).
    await Promise.allSettled(held.map(([, settled]) => settled));
    if (held.length) this.log.info({ downloads: held.length }, 'shutting down: downloads in progress handed over to the other replicas');
    return held.length;
  }

  /**
   * A miss: this replica downloads (it got the digest's lease), or follows the replica that holds
   * it. Redis unreachable: this replica downloads alone (per-replica coalescing).
   */
  private source(t: Target, d: Digest): Promise<Download | RemoteBlob | 'stored'> {
    const pending = this.resolving.get(d.value);
    if (pending) return pending;
    const p = (async (): Promise<Download | RemoteBlob | 'stored'> => {
      const c = this.c;
      const remote = this.remotes.get(d.value);
      if (remote) return remote;
      let lease: Lease | null | 'unavailable' = 'unavailable';
      if (c.coordinator.available()) {
        try {
          lease = await c.coordinator.acquire(blobLeaseKey(d), c.leaseTtlMs, this.published(t, null, false));
        } catch {
          lease = 'unavailable';
        }
      }
      if (lease === 'unavailable') {
        c.onEvent?.('alone');
        return this.local.start(t, d);
      }
      if (lease) {
        // Stored meanwhile: the holder before us finished between our look and our lease.
        if (await this.store.blobs.adopt(d)) {
          await lease.release();
          return 'stored';
        }
        return this.startHeld(t, d, lease);
      }
      c.onEvent?.('remote_follow');
      return this.remoteFor(t, d);
    })();
    this.resolving.set(d.value, p);
    const forget = (): void => {
      if (this.resolving.get(d.value) === p) this.resolving.delete(d.value);
    };
    p.then(forget, forget);
    return p;
  }

  private published(t: Target, size: number | null, ready: boolean): string {
    const c = this.c;
    const pub: PublishedDownload = { owner: c.replicaId, repoKey: repoKey(t), size, ready, ...(c.holders ? { url: c.holders.self } : {}) };
    return JSON.stringify(pub);
  }

  private remoteFor(t: Target, d: Digest): RemoteBlob {
    const existing = this.remotes.get(d.value);
    if (existing) return existing;
    const c = this.c;
    const remote: RemoteBlob = new RemoteBlob(d, {
      store: this.store,
      coordinator: c.coordinator,
      log: this.log,
      pollMs: c.pollMs,
      leaseTtlMs: c.leaseTtlMs,
      noProgressMs: c.noProgressMs,
      progress: this.leaseProgress,
      ...(c.holders ? { holders: c.holders } : {}),
      takeOver: async () => {
        if (this.local.inFlight(d)) return null;
        const lease = await c.coordinator.acquire(blobLeaseKey(d), c.leaseTtlMs, this.published(t, remote.size, false)).catch(() => null);
        if (!lease) return null;
        if (await this.store.blobs.adopt(d)) {
          await lease.release();
          return null;
        }
        c.onEvent?.('takeover');
        this.log.warn({ digest: d.value, previousHolder: remote.owner || 'unknown', upstream: t.client.name, repo: t.name }, 'the replica downloading this blob is gone; taking its download over');
        this.startHeld(t, d, lease);
        return lease.token;
      },
      onDone: () => {
        if (this.remotes.get(d.value) === remote) this.remotes.delete(d.value);
      },
    });
    this.remotes.set(d.value, remote);
    return remote;
  }

  /** Answers from a download another replica holds (or this one took over) through the shared file. */
  private async followRemote(remote: RemoteBlob, t: Target, d: Digest): Promise<BlobAnswer | 'stored'> {
    const release = remote.use();
    try {
      const tracer = activeTracer();
      // A cluster wait: another replica's download, until it has bytes to follow (or ended).
      if (tracer) {
        await tracer.span('cluster.follow', { 'stevedore.digest': d.value, 'stevedore.holder': (remote.owner || 'unknown').slice(0, 100) }, async (span) => {
          try {
            await remote.ready;
          } finally {
            span.set('stevedore.follow.state', remote.state);
          }
        });
      } else await remote.ready;
    } catch (err) {
      release();
      if (err instanceof UpstreamError) throw err;
      // Stored after all (the RemoteBlob saw the file land): served like any stored blob.
      if (await this.store.blobs.present(d)) return 'stored';
      // Its lease stands but nobody works on it (Redis says so, Redis is not trusted): alone.
      if (remote.state === 'abandoned') return this.downloadAlone(t, d);
      throw err;
    }
    if (remote.state === 'committed') {
      release();
      await this.store.blobs.adopt(d);
      return 'stored';
    }
    if (remote.state === 'abandoned') {
      release();
      return this.downloadAlone(t, d);
    }
    // A holder address outside cluster.allowedNetworks, or one that sent bytes that did not verify.
    const holders = this.c.holders;
    if (holders && remote.url && !holders.usable(remote.url)) {
      release();
      return this.downloadAlone(t, d);
    }
    try {
      // The repository in the lease record comes from Redis: never taken for this one's authorization.
      await this.access.authorizeStored(t, d);
    } catch (err) {
      release();
      throw err;
    }
    // What the headers will say (from the lease record): checked against the bytes before the last one.
    const promised = remote.size;
    const sendTo = async (dest: Writable, r?: { start: number; end: number }): Promise<void> => {
      try {
        await remote.sendTo(dest, r?.start, r?.end, promised);
      } finally {
        release();
      }
    };
    return {
      size: promised,
      cache: 'miss',
      available: () => remote.written,
      sendTo,
      open: (r) => {
        // The file sender under sendTo reuses a buffer as soon as its write is called back, which a
        // PassThrough does at once, before anyone has read the chunk: each chunk is copied into the
        // readable side instead (open() serves seeding and prefetch; HTTP answers use sendTo).
        const out = new Transform({ transform: (chunk: Buffer, _enc, cb) => cb(null, Buffer.from(chunk)) });
        sendTo(out, r).catch((err: unknown) => out.destroy(err as Error));
        return out;
      },
      release: async () => release(),
    };
  }

  /** The download another replica holds cannot be followed: this replica downloads the blob itself (no lease). */
  private async downloadAlone(t: Target, d: Digest): Promise<BlobAnswer> {
    this.c.onEvent?.('alone');
    const running = this.local.inFlight(d);
    if (running) return this.local.join(t, d, running);
    return this.local.follow(this.local.start(t, d));
  }

  /** Starts the download of a digest whose lease this replica holds, into the shared temp file. */
  private startHeld(t: Target, d: Digest, lease: Lease): Download {
    return this.local.start(t, d, { shared: true, onStart: (dl) => this.holdLease(lease, dl, t, d) });
  }

  /**
   * The holder's side of a cluster download: publishes the size once the upstream answered, stops
   * (leaving the file to whoever took over) if the lease is lost, says why it failed, and releases
   * the lease once the blob is stored or failed.
   */
  private holdLease(lease: Lease, dl: Download, t: Target, d: Digest): void {
    this.log.info({ digest: d.value, replica: this.c.replicaId, upstream: t.client.name, repo: t.name }, 'downloading a blob for the cluster (holding its lease)');
    const onLost = (): void => {
      this.log.warn({ digest: d.value, reason: (lease.lost.reason as Error | undefined)?.message }, 'lost the lease of a download; another replica continues it');
      dl.cancel(new OciError('BLOB_UNKNOWN', `the download of ${d.value} was taken over by another replica`, { status: 503 }), { keepFile: true });
    };
    lease.lost.addEventListener('abort', onLost, { once: true });
    dl.ready.then(
      () => lease.publish(this.published(t, dl.size, true)).catch(() => false),
      () => undefined,
    );
    const settled = dl.done.then(
      async () => {
        lease.lost.removeEventListener('abort', onLost);
        this.held.delete(dl);
        await lease.release();
      },
      async (err: unknown) => {
        lease.lost.removeEventListener('abort', onLost);
        this.held.delete(dl);
        // Handed over: no failure note, so the first replica to look takes it over at once.
        if (!lease.lost.aborted && !this.handedOver.delete(dl)) {
          // What this replica's own clients get for a failed blob download (the HTTP edge maps an
          // UpstreamError the same way), written down for the other replicas' clients.
          const oci = err instanceof UpstreamError ? err.toOciError('BLOB_UNKNOWN') : isMappedError(err) ? toOciError(err) : new OciError('BLOB_UNKNOWN', `the download of ${d.value} failed: ${(err as Error).message}`, { status: 502 });
          // Its reason, not its message: followers on other replicas put it in their status line (an upstream's quoted words stay here).
          const note: FailureNote = { token: lease.token, code: oci.code, message: oci.reason, status: oci.status };
          await this.c.coordinator.setNote(blobFailureKey(d), JSON.stringify(note), FAILURE_NOTE_TTL_MS).catch(() => undefined);
        }
        await lease.release();
      },
    );
    this.held.set(dl, settled);
  }
}
