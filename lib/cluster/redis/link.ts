/**
 * The one Redis connection of a process (metadata, leases, the shared store index), built on
 * `@redis/client` (the client under `@keyv/redis`). Commands fail at once while the connection is
 * down (no offline queue: a request must never wait for Redis to come back); the client reconnects
 * in the background with a capped backoff. Every change of state is logged once and exported as
 * `stevedore_redis_up`, so an outage is one warning, not one per request.
 *
 * Every connection (this one, its pub/sub duplicates, the keyv store on it) authenticates with the
 * configured ACL user and password (metadata.username / password / passwordFile, or the URL's) and,
 * for rediss://, verifies Redis's certificate against metadata.tls.ca. A password file is read
 * again at every (re)connection, so a rotated Secret is picked up without a restart. Credentials
 * or a certificate Redis refuses at start-up stop start-up with a message naming the key; a Redis
 * that does not answer does not (the process serves without it until it does).
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { createClient } from '@redis/client';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../../config/config.js';

export type RedisClient = ReturnType<typeof createClient>;

/** Where and how to connect: metadata.* resolved (lib/config/schema.ts documents each key). */
export interface RedisSettings {
  url: string;
  username: string | null;
  password: string | null;
  passwordFile: string | null;
  tls: { ca: string | null; cert: string | null; key: string | null; serverName: string | null } | null;
}

/** The Redis settings of a configuration (null: no Redis). */
export function redisSettings(metadata: Config['metadata']): RedisSettings | null {
  if (metadata.redis === null) return null;
  return { url: metadata.redis, username: metadata.username, password: metadata.password, passwordFile: metadata.passwordFile, tls: metadata.tls };
}

/** A URL alone (tests, tools): its own credentials, no TLS files. */
function asSettings(s: RedisSettings | string): RedisSettings {
  return typeof s === 'string' ? { url: s, username: null, password: null, passwordFile: null, tls: null } : s;
}

/** Where the password comes from, as the configuration names it (for messages). */
export function passwordKey(s: RedisSettings): string | null {
  if (s.passwordFile !== null) return 'metadata.passwordFile';
  if (s.password !== null) return 'metadata.password';
  try {
    if (new URL(s.url).password) return 'metadata.redis (its password)';
  } catch {
    // unparsable: no password
  }
  return null;
}

/** Whether the settings give Redis a password at all. */
export function hasPassword(s: RedisSettings): boolean {
  return passwordKey(s) !== null;
}

const TLS_TRUST = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'INVALID_CA',
]);

/**
 * What a connection error means for the operator, naming the configuration key to fix, or null
 * for an error that is not about credentials or TLS (Redis down, a timeout: worth waiting for).
 * Never contains the password (Redis's own messages do not carry it).
 */
export function explainRedisError(err: unknown, settings: RedisSettings | string): string | null {
  const s = asSettings(settings);
  const e = err as { message?: string; code?: string } | null;
  // OpenSSL's messages run over several lines: the first says it.
  const msg = String(e?.message ?? err).split('\n')[0]!.trim();
  const code = e?.code ?? '';
  const user = s.username ?? (safeUrl(s.url)?.username ? decodeURIComponent(safeUrl(s.url)!.username) : 'default');
  const pw = passwordKey(s);
  if (/^WRONGPASS|invalid username-password/i.test(msg)) {
    return `Redis refused the credentials of user ${JSON.stringify(user)} (WRONGPASS): check metadata.username and ${pw ?? 'metadata.password / metadata.passwordFile'}`;
  }
  if (/^NOAUTH|Authentication required/i.test(msg)) {
    return 'Redis requires a password and none is configured (NOAUTH): set metadata.password, metadata.passwordFile or the password in metadata.redis';
  }
  if (/^NOPERM/.test(msg)) {
    return `the Redis user ${JSON.stringify(user)} lacks a permission stevedore needs (${msg.split('\n')[0]}): grant it ~* &* +@all (metadata.username)`;
  }
  if (TLS_TRUST.has(code) || /self[- ]signed certificate|unable to verify|certificate has expired/i.test(msg)) {
    return `Redis's TLS certificate is not trusted (${msg}): set metadata.tls.ca to the CA that signed it`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `Redis's TLS certificate does not name the host of metadata.redis (${msg}): fix the host, or set metadata.tls.serverName to a name the certificate holds`;
  }
  if (/wrong version number|packet length too long|ERR_SSL_WRONG_VERSION_NUMBER/i.test(`${code} ${msg}`)) {
    return 'Redis does not speak TLS on this port: use redis:// in metadata.redis, or the port of its tls-port';
  }
  if (/certificate required|alert number 116/i.test(msg)) {
    return 'Redis asks for a client certificate (TLS alert "certificate required"): set metadata.tls.cert and metadata.tls.key';
  }
  return null;
}

function safeUrl(url: string): URL | null {
  try {
    return new URL(url);
  } catch {
    return null;
  }
}

function readConfigured(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError([`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], 'Redis');
  }
}

/** A password file's content without its trailing newline (what `kubectl create secret --from-file` keeps). */
function passwordOf(text: string): string {
  return text.replace(/[\r\n]+$/, '');
}

export class RedisLink {
  readonly client: RedisClient;
  private isUp = false;
  private closed = false;
  private downSince: number | null = null;
  private readonly listeners = new Set<(up: boolean) => void>();
  private readonly subscribers: RedisClient[] = [];
  /** Credentials or a certificate refused while connecting: what is wrong, for the operator. */
  private refused: string | null = null;
  private readonly onRefused = new Set<() => void>();
  private readonly settings: RedisSettings;

  private constructor(
    settings: RedisSettings,
    private readonly log: Logger,
    connectTimeoutMs: number,
    create: typeof createClient,
  ) {
    this.settings = settings;
    const u = new URL(settings.url);
    const urlUser = u.username ? decodeURIComponent(u.username) : null;
    const urlPassword = u.password ? decodeURIComponent(u.password) : null;
    // The credentials are given to the client apart from the URL (which would override them).
    u.username = '';
    u.password = '';
    const username = settings.username ?? urlUser;
    const fixedPassword = settings.password ?? urlPassword;
    const file = settings.passwordFile;
    // Read once now (an unreadable file stops start-up), then again at every connection.
    let lastPassword = file !== null ? passwordOf(readConfigured('metadata.passwordFile', file).toString('utf8')) : fixedPassword;
    if (file !== null && !lastPassword) throw new ConfigError([`metadata.passwordFile: ${file} is empty`], 'Redis');
    let fileFailed = false;
    const credentials = async (): Promise<{ username?: string; password?: string }> => {
      if (file !== null) {
        try {
          const now = passwordOf(await readFile(file, 'utf8'));
          if (now) lastPassword = now;
          fileFailed = false;
        } catch (err) {
          if (!fileFailed) log.warn({ file, err: (err as NodeJS.ErrnoException).code ?? String(err) }, 'metadata.passwordFile cannot be read: connecting to Redis with the password read before');
          fileFailed = true;
        }
      }
      return { ...(username !== null ? { username } : {}), ...(lastPassword !== null ? { password: lastPassword } : {}) };
    };
    const t = settings.tls;
    const tlsOptions = u.protocol === 'rediss:'
      ? {
          tls: true as const,
          ...(t?.ca ? { ca: readConfigured('metadata.tls.ca', t.ca) } : {}),
          ...(t?.cert ? { cert: readConfigured('metadata.tls.cert', t.cert) } : {}),
          ...(t?.key ? { key: readConfigured('metadata.tls.key', t.key) } : {}),
          ...(t?.serverName ? { servername: t.serverName } : {}),
        }
      : { tls: false as const };
    this.client = create({
      url: u.toString(),
      ...(username !== null || lastPassword !== null ? { credentialsProvider: { type: 'async-credentials-provider' as const, credentials } } : {}),
      disableOfflineQueue: true,
      socket: {
        ...tlsOptions,
        connectTimeout: connectTimeoutMs,
        // Reconnect for ever, at most every 2 s: Redis coming back is noticed within seconds.
        reconnectStrategy: (retries: number) => Math.min(2_000, 50 * 2 ** Math.min(retries, 6)),
      },
    });
    // Without a listener, a connection error would be an uncaught 'error' event: the process would end.
    this.client.on('error', (err: Error) => this.failed(err));
    this.client.on('ready', () => this.setUp(true));
    this.client.on('end', () => this.setUp(false));
  }

  /**
   * Connects, waiting at most `connectTimeoutMs` for the first answer. A Redis that is down at
   * start-up does not stop start-up: the process serves without it and joins when it answers.
   * One that refuses the credentials or whose certificate does not verify does: a ConfigError
   * naming the key to fix (never the password).
   */
  static async open(settings: RedisSettings | string, log: Logger, connectTimeoutMs = 3_000): Promise<RedisLink> {
    const s = asSettings(settings);
    // The client library is loaded by the first connection: a process without Redis never loads it.
    const { createClient } = await import('@redis/client');
    const link = new RedisLink(s, log, connectTimeoutMs, createClient);
    const connecting = link.client.connect().then(
      () => undefined,
      (err: unknown) => link.failed(err as Error),
    );
    const refused = new Promise<void>((resolve) => link.onRefused.add(resolve));
    await Promise.race([connecting, refused, new Promise<void>((resolve) => setTimeout(resolve, connectTimeoutMs).unref())]);
    // A Redis that wants a password we do not send lets the connection become ready (the
    // handshake has no AUTH to refuse), then refuses every command: one PING tells.
    if (link.refused === null && link.up) {
      try {
        await link.client.ping();
      } catch (err) {
        link.failed(err as Error);
      }
    }
    if (link.refused !== null) {
      const why = link.refused;
      link.closed = true;
      try {
        link.client.destroy();
      } catch {
        // not open
      }
      throw new ConfigError([`metadata.redis (${redactUrl(s.url)}): ${why}`], 'Redis');
    }
    if (!link.isUp) log.warn({ redis: redactUrl(s.url) }, 'Redis does not answer yet: serving without it (per-replica coalescing) until it does');
    return link;
  }

  /** Whether commands can be sent now. */
  get up(): boolean {
    return this.isUp && this.client.isReady;
  }

  onChange(fn: (up: boolean) => void): void {
    this.listeners.add(fn);
  }

  /** A connection error: credentials or TLS refused are remembered (start-up stops on them) and named in the log. */
  private failed(err: Error): void {
    const why = explainRedisError(err, this.settings);
    if (why !== null && this.refused === null) {
      this.refused = why;
      for (const fn of this.onRefused) fn();
    }
    this.setUp(false, err, why);
  }

  private setUp(up: boolean, err?: Error, why?: string | null): void {
    if (this.closed) return;
    // 'ready' comes before the handshake's refusal is known only when Redis wants a password we do not send.
    if (up) this.refused = null;
    if (up === this.isUp) return;
    this.isUp = up;
    if (up) {
      const downFor = this.downSince === null ? null : Date.now() - this.downSince;
      this.downSince = null;
      if (downFor !== null) this.log.warn({ downForMs: downFor }, 'Redis is back: cluster coordination resumes');
    } else {
      this.downSince = Date.now();
      this.log.error({ err: why ?? err?.message }, 'Redis is unreachable: serving what is stored and pulling with per-replica coalescing until it returns');
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

  /**
   * Closes every connection: politely (QUIT) when Redis answers, at most `quitMs`; at once when it
   * does not. QUIT is queued whatever the offline queue says, so on a connection that is down (or
   * reconnecting) it would wait for Redis to come back: a process stopped during an outage would
   * never exit (issue 28).
   */
  async close(quitMs = 1_000): Promise<void> {
    this.closed = true;
    await Promise.all([...this.subscribers, this.client].map((c) => closeClient(c, quitMs)));
  }
}

async function closeClient(c: RedisClient, quitMs: number): Promise<void> {
  if (!c.isOpen) return;
  if (c.isReady) {
    const quit = c.quit().then(
      () => true,
      () => false,
    );
    const late = new Promise<false>((resolve) => setTimeout(() => resolve(false), quitMs).unref());
    if (await Promise.race([quit, late])) return;
  }
  try {
    c.destroy();
  } catch {
    // already closed
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
