/**
 * The Redis coordinator (metadata.redis): one connection per process (link.ts) carrying the
 * leases (leases.ts), the shared index's records (shared-index.ts), the invalidation bus (bus.ts,
 * on a subscribing connection of its own), the node tier's holder directory (directory.ts) and the
 * shared values (values.ts, keyv). Commands fail at once while Redis is down; every part then
 * behaves as lib/cluster/coordinator.ts says (leases throw, values fall back to memory, the
 * directory is silent), and the process rejoins when Redis answers.
 */
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import type { ClusterCoordinator, CoordinationScope, CoordinatorFactory, SharedValues } from '../coordinator.js';
import { RedisBus } from './bus.js';
import { diagnoseRedis } from './diagnose.js';
import { RedisHolderDirectory } from './directory.js';
import { RedisLeases } from './leases.js';
import { RedisLink, redactUrl, redisSettings, type RedisSettings } from './link.js';
import { RedisIndexRecords } from './shared-index.js';
import { RedisValues } from './values.js';

export class RedisCoordinator implements ClusterCoordinator {
  readonly name = 'redis';
  readonly shared = true;
  private readonly scopes = new Map<string, CoordinationScope>();

  private constructor(
    readonly link: RedisLink,
    readonly values: SharedValues,
    readonly target: string,
  ) {}

  /** Connects (RedisLink.open: a Redis that does not answer yet does not stop start-up; refused credentials do). */
  static async open(settings: RedisSettings | string, log: Logger, connectTimeoutMs?: number): Promise<RedisCoordinator> {
    const link = await RedisLink.open(settings, log, connectTimeoutMs);
    const url = typeof settings === 'string' ? settings : settings.url;
    return new RedisCoordinator(link, await RedisValues.create(link), redactUrl(url));
  }

  available(): boolean {
    return this.link.up;
  }

  onAvailability(fn: (up: boolean) => void): void {
    this.link.onChange(fn);
  }

  scope(namespace: string): CoordinationScope {
    let s = this.scopes.get(namespace);
    if (!s) {
      s = {
        leases: new RedisLeases(this.link, namespace),
        index: new RedisIndexRecords(this.link, namespace),
        bus: new RedisBus(this.link, `${namespace}tags`),
        directory: new RedisHolderDirectory(this.link, namespace),
      };
      this.scopes.set(namespace, s);
    }
    return s;
  }

  async close(): Promise<void> {
    await this.values.close();
    await this.link.close();
  }
}

export const redisCoordinator: CoordinatorFactory = {
  configured: (config: Config) => config.metadata.redis !== null,
  open: async (config: Config, log: Logger) => RedisCoordinator.open(redisSettings(config.metadata)!, log),
  diagnose: diagnoseRedis,
};
