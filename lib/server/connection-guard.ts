/**
 * What one client may hold: connections (in all, and from one address), and how slowly it may send.
 * Node's server gives the head timeout (`headersTimeout`), keep-alive and socket inactivity
 * (`idleTimeout`); a body is watched here, because a client that trickles a byte every few seconds
 * is never idle, and a `requestTimeout` over the whole request would cut a large upload that is
 * merely long. Every limit hit is logged and counted (`stevedore_connections_refused_total`).
 */
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';

export type RefusalReason = 'max_connections' | 'per_address' | 'slow_body';

/** File descriptors kept for the store, upstream connections and logs when maxConnections is derived. */
const FD_RESERVE = 256;

/** The soft open-file limit of this process (Linux: /proc/self/limits), or null when unknown. */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m || m[1] === 'unlimited') return null;
    return Number(m[1]);
  } catch {
    return null;
  }
}

/** maxConnections as configured, or derived from the open-file limit (leaving room for files). */
export function connectionLimit(configured: number | null, fdLimit = openFileLimit()): number {
  if (configured !== null) return configured;
  if (fdLimit === null) return 4096;
  return Math.max(64, fdLimit - FD_RESERVE);
}

export class ConnectionGuard {
  private readonly perAddress = new Map<string, number>();
  private readonly limits: Config['server'];
  private readonly log: Logger;
  private readonly onRefused: (reason: RefusalReason) => void;
  /** Refusals not yet logged (one warning per address and reason per interval, not one per connection). */
  private lastWarned = new Map<string, number>();
  readonly maxConnections: number;

  constructor(limits: Config['server'], log: Logger, onRefused: (reason: RefusalReason) => void = () => undefined) {
    this.limits = limits;
    this.log = log;
    this.onRefused = onRefused;
    this.maxConnections = connectionLimit(limits.maxConnections);
  }

  /** Applies the limits to a server (before it listens). */
  install(server: http.Server): void {
    const l = this.limits;
    server.headersTimeout = l.headersTimeout;
    server.keepAliveTimeout = l.keepAliveTimeout;
    server.requestTimeout = 0;
    // No server-wide socket timeout: refreshing it on every read and write cost ~9 % of the
    // manifest requests per second; it is armed where a stuck reader holds something (armIdle).
    server.maxConnections = this.maxConnections;
    server.on('drop', () => this.refused('max_connections', 'unknown'));
    server.on('connection', (socket: Socket) => this.admit(socket));
  }

  /**
   * For an answer with a body that may not fit in the socket's buffers (a blob): a connection on
   * which nothing moves for idleTimeout (a client that stopped reading) is closed, and the transfer
   * it held ends. Node's keep-alive handling sets its own timeout once the answer is done.
   */
  armIdle(res: ServerResponse): void {
    res.socket?.setTimeout(this.limits.idleTimeout);
  }

  private admit(socket: Socket): void {
    const addr = socket.remoteAddress ?? 'unknown';
    const n = (this.perAddress.get(addr) ?? 0) + 1;
    if (n > this.limits.maxConnectionsPerAddress) {
      this.refused('per_address', addr);
      socket.destroy();
      return;
    }
    this.perAddress.set(addr, n);
    socket.once('close', () => {
      const left = (this.perAddress.get(addr) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(addr);
      else this.perAddress.set(addr, left);
    });
  }

  /**
   * Watches a request's body: each requestBodyTimeout it must have brought requestBodyMinBytes more,
   * until it is complete; else the connection is cut. Returns the function that stops watching.
   */
  watchBody(req: IncomingMessage, onSlow: () => void): () => void {
    if (!hasBody(req)) return () => undefined;
    const socket = req.socket;
    let last = socket.bytesRead;
    const timer = setInterval(() => {
      if (req.complete || socket.destroyed) return clearInterval(timer);
      const now = socket.bytesRead;
      if (now - last >= this.limits.requestBodyMinBytes) {
        last = now;
        return;
      }
      clearInterval(timer);
      this.refused('slow_body', socket.remoteAddress ?? 'unknown');
      onSlow();
      socket.destroy();
    }, this.limits.requestBodyTimeout);
    timer.unref();
    return () => clearInterval(timer);
  }

  private refused(reason: RefusalReason, addr: string): void {
    this.onRefused(reason);
    const key = `${reason} ${addr}`;
    const now = Date.now();
    if (now - (this.lastWarned.get(key) ?? 0) < 60_000) return;
    if (this.lastWarned.size > 10_000) this.lastWarned = new Map();
    this.lastWarned.set(key, now);
    const why = {
      max_connections: `server.maxConnections (${this.maxConnections}) reached`,
      per_address: `server.maxConnectionsPerAddress (${this.limits.maxConnectionsPerAddress}) reached`,
      slow_body: `request body slower than server.requestBodyMinBytes (${this.limits.requestBodyMinBytes}) per server.requestBodyTimeout (${this.limits.requestBodyTimeout} ms)`,
    }[reason];
    this.log.warn({ client: addr, reason }, `connection refused or cut: ${why} (logged once a minute per client)`);
  }
}

/** Whether a request carries a body (Content-Length above 0, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}
