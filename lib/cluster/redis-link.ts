/**
 * The one Redis connection of a process (metadata, leases, the shared store index), built on
 * `@redis/client` (the client under `@keyv/redis`). Commands fail at once while the connection is
 * down (no offline queue: a request must never wait for Redis to come back); the client reconnects
 * in the background with a capped backoff. Every change of state is logged once and exported as
 * `stevedore_redis_up`, so an outage is one warning, not one per request.
 */
import { createClient } from '@redis/client';
import type { Logger } from 'pino';

export type RedisClient = ReturnType<typeof createClient>;

export class RedisLink {
  readonly client: RedisClient;
  private isUp = false;
  private closed = false;
  private downSince: number | null = null;
  private readonly listeners = new Set<(up: boolean) => void>();
  private readonly subscribers: RedisClient[] = [];

  private constructor(
    url: string,
    private readonly log: Logger,
    connectTimeoutMs: number,
  ) {
    this.client = createClient({
      url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: connectTimeoutMs,
        // Reconnect for ever, at most every 2 s: Redis coming back is noticed within seconds.
        reconnectStrategy: (retries: number) => Math.min(2_000, 50 * 2 ** Math.min(retries, 6)),
      },
    });
    // Without a listener, a connection error would be an uncaught 'error' event: the process would end.
    this.client.on('error', (err: Error) => this.setUp(false, err));
    this.client.on('ready', () => this.setUp(true));
    this.client.on('end', () => this.setUp(false));
  }

  /**
   * Connects, waiting at most `connectTimeoutMs` for the first answer. A Redis that is down at
   * start-up does not stop start-up: the process serves without it and joins when it answers.
   */
  static async open(url: string, log: Logger, connectTimeoutMs = 3_000): Promise<RedisLink> {
    const link = new RedisLink(url, log, connectTimeoutMs);
    const connecting = link.client.connect().then(
      () => undefined,
      (err: unknown) => link.setUp(false, err as Error),
    );
    await Promise.race([connecting, new Promise<void>((resolve) => setTimeout(resolve, connectTimeoutMs).unref())]);
    if (!link.isUp) log.warn({ redis: redactUrl(url) }, 'Redis does not answer yet: serving without it (per-replica coalescing) until it does');
    return link;
  }

  /** Whether commands can be sent now. */
  get up(): boolean {
    return this.isUp && this.client.isReady;
  }

  onChange(fn: (up: boolean) => void): void {
    this.listeners.add(fn);
  }

  private setUp(up: boolean, err?: Error): void {
    if (this.closed || up === this.isUp) return;
    this.isUp = up;
    if (up) {
      const downFor = this.downSince === null ? null : Date.now() - this.downSince;
      this.downSince = null;
      if (downFor !== null) this.log.warn({ downForMs: downFor }, 'Redis is back: cluster coordination resumes');
    } else {
      this.downSince = Date.now();
      this.log.error({ err: err?.message }, 'Redis is unreachable: serving what is stored and pulling with per-replica coalescing until it returns');
    }
    for (const fn of this.listeners) fn(up);
  }

  /**
   * Delivers every message published on `channel` (by any replica) to `fn`, through a second
   * connection (a subscribing connection can send nothing else); it resubscribes by itself after
   * Redis comes back. Best effort: a message published while a replica is cut off is lost to it.
   */
  subscribe(channel: string, fn: (message: string) => void, waitMs = 3_000): Promise<void> {
    const sub = this.client.duplicate();
    sub.on('error', () => undefined); // reported once by the main connection
    this.subscribers.push(sub);
    // With Redis down at start-up, connecting waits for it (the client retries): start-up waits
    // at most `waitMs`, and the subscription completes in the background when Redis answers.
    // Once connected, the client resubscribes by itself after every reconnect.
    const subscribed = sub
      .connect()
      .then(() => sub.subscribe(channel, (message: string) => fn(message)))
      .catch((err: unknown) => {
        if (!this.closed) this.log.warn({ err: (err as Error).message, channel }, 'could not subscribe to a Redis channel: tags pushed on other replicas are seen here only after their tag TTL');
      });
    return Promise.race([subscribed, new Promise<void>((resolve) => setTimeout(resolve, waitMs).unref())]);
  }

  /** Publishes to every replica's subscription; false when Redis is unreachable. */
  async publish(channel: string, message: string): Promise<boolean> {
    if (!this.up) return false;
    try {
      await this.client.publish(channel, message);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const sub of this.subscribers) {
      try {
        if (sub.isOpen) await sub.quit();
      } catch {
        sub.destroy();
      }
    }
    try {
      if (this.client.isOpen) await this.client.quit();
    } catch {
      this.client.destroy();
    }
  }
}

/** A Redis URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return 'redis://[unparseable]';
  }
}
