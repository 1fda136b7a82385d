/**
 * The peer endpoint: where stevedore processes fetch blobs from each other (the node tier's peers,
 * peers.ts; the replicas holding a download on S3, holder-stream.ts). Served by
 * lib/server/create-server.ts, only to requests signed with the shared secret (peer-auth.ts).
 */
import type { Readable } from 'node:stream';
import type { ProgressRule } from '../util/progress.js';

/** The path peers fetch blobs on: `/_stevedore/peer/v1/blobs/<digest>`. */
export const PEER_BLOB_PATH = '/_stevedore/peer/v1/blobs/';

/** Who may fetch from this process's peer endpoint, and what it counts. */
export interface PeerEndpoint {
  /** Why a request (method, path, Authorization) is refused, or null when it is allowed. */
  refusal(method: string, path: string, authorization: string | undefined): string | null;
  served(): void;
}

/** A blob's body from a peer, from byte `start`, with the peers' minimum progress. */
export interface PeerBody {
  peer: string;
  size: number | null;
  start: number;
  body: Readable;
  stall: ProgressRule;
}

/** The other node instances, as a source of blobs (implemented in lib/cluster/peers.ts; lib/upstream/upstream-sources.ts asks it first). */
export interface PeerSource {
  /**
   * Opens `digest` from byte `start` at a peer that holds it, skipping `exclude` (and peers known
   * bad); tries the next peer when one fails to answer. Null when no peer can serve it.
   */
  open(
    digest: string,
    start: number,
    signal: AbortSignal,
    exclude: ReadonlySet<string>,
  ): Promise<PeerBody | null>;
  /** A peer that failed a transfer (gone, stalled, wrong bytes): not asked again for a while. */
  markBad(peer: string, why: string): void;
}
