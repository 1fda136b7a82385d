/**
 * `stevedore doctor` for the Redis coordinator: connects to metadata.redis as `serve` would (its
 * user, password and TLS) and sends a PING; then says whether Redis also answers a connection
 * without a password (anyone who reaches it could rewrite stevedore's leases and records), and
 * whether the link crosses a network in clear text.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { ConfigError, type Config } from '../../config/config.js';
import type { CoordinatorFinding } from '../coordinator.js';
import { explainRedisError, hasPassword, RedisLink, redactUrl, redisSettings } from './link.js';
import { tcpConnect } from '../../util/tcp-connect.js';
import { errText } from '../../util/error-text.js';

function finding(level: CoordinatorFinding['level'], target: string, detail: string, fix: string | null = null): CoordinatorFinding {
  return { level, target, detail, fix };
}

export async function diagnoseRedis(config: Config): Promise<CoordinatorFinding[]> {
  const settings = redisSettings(config.metadata);
  if (!settings) return [];
  const target = redactUrl(settings.url);
  let lastError = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      try {
        const line = JSON.parse(chunk.toString()) as { err?: unknown };
        if (typeof line.err === 'string' && line.err) lastError = line.err;
      } catch {
        // not JSON: ignore
      }
      cb();
    },
  });
  const log = pino({ level: 'warn' }, sink);
  let link: RedisLink | null = null;
  // RedisLink.open waits on an unref'd timer and the client retries on unref'd sockets: without a
  // reference of our own, Node would exit in the middle of the check.
  const keepAlive = setInterval(() => undefined, 1_000);
  try {
    try {
      link = await RedisLink.open(settings, log, 3_000);
    } catch (err) {
      // Credentials or a certificate refused, or a file the settings name unreadable.
      const problems = err instanceof ConfigError ? err.problems.join('; ') : errText(err);
      return [finding('fail', target, problems.replace(/^metadata\.redis \([^)]*\): /, ''), 'fix the key named (SECURITY.md, "Redis")')];
    }
    if (!link.up) {
      if (!lastError) lastError = await redisCause(settings.url);
      return [finding('fail', target, `unreachable: ${lastError}`, 'start Redis or fix metadata.redis (host, port, password)')];
    }
    const pong = await link.client.ping();
    const out = [finding('ok', target, `answers PING (${pong})${hasPassword(settings) ? `, authenticated (${settings.username ?? (new URL(settings.url).username || 'default')} user)` : ''}`)];
    if (await answersWithoutPassword(link)) {
      out.push(
        finding(
          'warn',
          target,
          hasPassword(settings)
            ? 'Redis also answers without a password: anyone who reaches it can rewrite leases and records, and make replicas fetch from where it says'
            : 'no password: Redis answers anyone who reaches it, who can then rewrite leases and records, and make replicas fetch from where it says',
          'give Redis a password (requirepass, or an ACL user with the default user off) and stevedore metadata.password or metadata.passwordFile (SECURITY.md, "Redis")',
        ),
      );
    }
    const u = new URL(settings.url);
    if (u.protocol === 'redis:' && !isLoopback(u.hostname)) {
      out.push(finding('warn', target, 'plain redis:// to another host: the password and every record cross the network unencrypted', 'use rediss:// (Redis\'s tls-port) with metadata.tls.ca, or keep Redis reachable by stevedore alone (NetworkPolicy)'));
    }
    return out;
  } catch (err) {
    return [finding('fail', target, `PING failed: ${explainRedisError(err, settings) ?? errText(err)}`, 'check metadata.redis and the Redis server')];
  } finally {
    if (link) {
      // quit() waits for a connection that is not there: a Redis that is down is dropped at once.
      if (link.up) await Promise.race([link.close(), new Promise((r) => setTimeout(r, 2_000).unref())]);
      else {
        try {
          link.client.destroy();
        } catch {
          // already closed
        }
      }
    }
    clearInterval(keepAlive);
  }
}

/** Whether a connection to the same Redis (same TLS) without any credentials gets PONG. */
async function answersWithoutPassword(link: RedisLink): Promise<boolean> {
  const probe = link.client.duplicate({ credentialsProvider: undefined });
  probe.on('error', () => undefined);
  try {
    const pong = await Promise.race([
      probe.connect().then(() => probe.ping()),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 3_000).unref()),
    ]);
    return pong === 'PONG';
  } catch {
    return false; // NOAUTH: a password is required
  } finally {
    try {
      probe.destroy();
    } catch {
      // not open
    }
  }
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

/** Why a Redis did not answer, when its client said nothing useful: what a TCP connect says. */
async function redisCause(url: string): Promise<string> {
  try {
    const u = new URL(url);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port || 6379);
    await tcpConnect(host, port);
    return `TCP connect to ${host}:${port} works, but Redis did not become ready within 3 s (password, TLS or protocol?)`;
  } catch (err) {
    return `no answer within 3 s (${errText(err)})`;
  }
}

