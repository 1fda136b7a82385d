/**
 * How this process shares upstream work with others. Chosen once, when PullThrough is built:
 *
 *   - LocalDownloads (local-downloads.ts): one process. A blob miss starts a Download here (one per
 *     digest, every client of this process follows it); nobody else asks the upstream, so every
 *     turn is this process's at once.
 *   - ClusterDownloads (cluster-downloads.ts): replicas on one store, coordinated by leases. A blob
 *     miss is downloaded by the replica holding the digest's lease and followed by the others; one
 *     replica at a time asks the upstream about a tag or a manifest; tag moves are told to all.
 *
 * The parts of the pull path (tag-resolver.ts, manifests.ts, blob-pulls.ts) ask this interface and
 * never which mode they run in.
 */
import type { Digest } from '../oci/digest.js';
import type { BlobAnswer, Target } from './pull-types.js';

/**
 * This process's turn to do a key's upstream work: a lease held until released; 'waited' once
 * another process that had the turn is done (its result is then in the shared state); null when
 * nobody coordinates (one process, or the coordinator unreachable): go ahead alone.
 */
export type Turn = { release(): Promise<void> } | 'waited' | null;

export interface Downloads {
  /**
   * A blob this process neither stores nor downloads (nor lingers on): downloads it, or follows
   * whoever does. 'stored': it was stored meanwhile; the caller looks again.
   */
  fetch(t: Target, d: Digest): Promise<BlobAnswer | 'stored'>;
  /** This process's turn to ask the upstream about `key` (`tag:<upstream>/<name>:<tag>`, `manifest:<digest>`). */
  turn(key: string): Promise<Turn>;
  /**
   * A push moved a tag of an upstream's namespace here: the other processes forget their answer.
   * Resolves once they were told (the push is answered after: a client's next request, on any
   * worker or replica, sees the new tag), or after a short bound when they cannot be reached.
   */
  tagMoved(upstream: string, name: string, tag: string): Promise<void>;
  /** Shutting down: downloads held for others are handed over to them. Resolves with how many. */
  handOver(): Promise<number>;
}
