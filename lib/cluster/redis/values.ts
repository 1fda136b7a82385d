/**
 * Shared values on Redis through keyv (`@keyv/redis` on the link's connection, keys unprefixed,
 * as they always were). While Redis does not answer, this process's memory answers instead (a
 * replica goes on alone), and the shared values are seen again once it does.
 */
import Keyv from 'keyv';
import type { SharedValues } from '../coordinator.js';
import type { RedisLink } from './link.js';

export class RedisValues implements SharedValues {
  /** In memory: this replica's fallback while Redis is down. */
  private readonly local = new Keyv({ namespace: 'stevedore' });

  private constructor(
    private readonly shared: Keyv,
    private readonly link: RedisLink,
  ) {}

  /** The Redis adapter is loaded only when Redis is configured. */
  static async create(link: RedisLink): Promise<RedisValues> {
    const { default: KeyvRedis } = await import('@keyv/redis');
    const store = new KeyvRedis(link.client as never, { throwOnErrors: true, throwOnConnectError: true });
    return new RedisValues(new Keyv({ store, namespace: 'stevedore', useKeyPrefix: false, throwOnErrors: true }), link);
  }

  /** Redis while it answers; memory otherwise. */
  private async use<T>(fn: (kv: Keyv) => Promise<T>): Promise<T> {
    if (this.link.up) {
      try {
        return await fn(this.shared);
      } catch {
        // Redis failed this call (logged once by the link): this replica's memory answers instead.
      }
    }
    return fn(this.local);
  }

  async get<T>(key: string): Promise<T | null> {
    return (await this.use((kv) => kv.get<T>(key))) ?? null;
  }

  async set<T>(key: string, value: T, ttlMs: number): Promise<void> {
    await this.use((kv) => kv.set(key, value, ttlMs));
  }

  async delete(key: string): Promise<void> {
    await this.use((kv) => kv.delete(key));
  }

  async clear(): Promise<void> {
    await this.local.clear();
    await this.shared.clear();
  }

  /** The Redis connection belongs to the link (closed by the coordinator). */
  async close(): Promise<void> {
    // nothing of its own
  }
}
