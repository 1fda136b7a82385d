/**
 * The peer endpoint: where stevedore processes fetch blobs from each other (the node tier's peers,
 * peers.ts; the replicas holding a download on S3, holder-stream.ts). Served by
 * lib/server/create-server.ts, only to requests signed with the shared secret (peer-auth.ts).
 */

/** The path peers fetch blobs on: `/_stevedore/peer/v1/blobs/<digest>`. */
export const PEER_BLOB_PATH = '/_stevedore/peer/v1/blobs/';

/** Who may fetch from this process's peer endpoint, and what it counts. */
export interface PeerEndpoint {
  /** Why a request (method, path, Authorization) is refused, or null when it is allowed. */
  refusal(method: string, path: string, authorization: string | undefined): string | null;
  served(): void;
}
