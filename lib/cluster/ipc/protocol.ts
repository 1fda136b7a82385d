/**
 * The messages of the IPC coordinator (docs/ARCHITECTURE.md, "Workers"): a worker's calls to the
 * primary's coordination state, and the primary's answers and bus deliveries, over the IPC channel
 * node:cluster opens between them (JSON). Every message carries `stevedoreIpc`, so that other users
 * of the channel (node:cluster itself, prom-client's metrics aggregation) are told apart.
 */

/** The channel to the other side: `process` in a worker, a `cluster.Worker` (or a forked child) in the primary. */
export interface IpcChannel {
  send(message: unknown): boolean;
  on(event: 'message', fn: (message: unknown) => void): unknown;
  off(event: 'message', fn: (message: unknown) => void): unknown;
  readonly connected: boolean;
}

export const IPC_TAG = 'stevedore-coordinator';

/** A call: `op` on namespace `ns` (absent for shared values) with JSON arguments. `client` tells apart coordinators sharing one channel. */
export interface IpcRequest {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'req';
  id: number;
  client: string;
  op: string;
  ns: string | null;
  args: unknown[];
}

export interface IpcResponse {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'res';
  id: number;
  client: string;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/**
 * A bus message for a subscriber of namespace `ns`. The subscriber answers `ack` with an
 * IpcBusAck once its handlers ran: the publisher's call resolves after every subscriber's did.
 */
export interface IpcBusDelivery {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'bus';
  client: string;
  ns: string;
  message: unknown;
  ack?: number;
}

/** A subscriber's handlers ran for the delivery `id`. */
export interface IpcBusAck {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'bus-ack';
  id: number;
}

/** The supervisor asks every worker for its part of something (`what`: the dashboard's figures). */
export interface IpcCollect {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'collect';
  id: number;
  what: string;
}

/** A worker's part (null when it could not make it). */
export interface IpcCollected {
  stevedoreIpc: typeof IPC_TAG;
  kind: 'collected';
  id: number;
  value: unknown;
}

export function isIpcMessage(m: unknown): m is IpcRequest | IpcResponse | IpcBusDelivery | IpcBusAck | IpcCollect | IpcCollected {
  return typeof m === 'object' && m !== null && (m as { stevedoreIpc?: unknown }).stevedoreIpc === IPC_TAG;
}
