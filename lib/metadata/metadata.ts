/**
 * Shared metadata in keyv: when each tag was last confirmed with its upstream. In-memory by
 * default; Redis (`@keyv/redis`) when `metadata.redis` is set, so several replicas share it.
 * Timestamps come from the caller's clock, so freshness decisions can be tested with a fake one.
 */
import Keyv from 'keyv';

/** Records are garbage-collected by the backend after this long, whatever their freshness. */
const RECORD_TTL_MS = 30 * 86_400_000;

export class Metadata {
  private readonly kv: Keyv;

  constructor(kv: Keyv) {
    this.kv = kv;
  }

  /** The Redis client is loaded only when Redis is configured: a single instance does not pay for it. */
  static async create(opts: { redis: string | null }): Promise<Metadata> {
    if (opts.redis) {
      const { default: KeyvRedis } = await import('@keyv/redis');
      return new Metadata(new Keyv({ store: new KeyvRedis(opts.redis), namespace: 'stevedore', useKeyPrefix: false }));
    }
    return new Metadata(new Keyv({ namespace: 'stevedore' }));
  }

  private static tagKey(upstream: string, name: string, tag: string): string {
    return `tag:${upstream}/${name}:${tag}`;
  }

  /** When the upstream last confirmed (or gave us) this tag's digest, or null if never / forgotten. */
  async tagCheckedAt(upstream: string, name: string, tag: string): Promise<{ at: number; digest: string } | null> {
    const v = await this.kv.get<{ at: number; digest: string }>(Metadata.tagKey(upstream, name, tag));
    return v ?? null;
  }

  async setTagChecked(upstream: string, name: string, tag: string, digest: string, at: number): Promise<void> {
    await this.kv.set(Metadata.tagKey(upstream, name, tag), { at, digest }, RECORD_TTL_MS);
  }

  /** A small record shared by replicas (upstream health, quotas). */
  async getRecord<T>(key: string): Promise<T | null> {
    return (await this.kv.get<T>(key)) ?? null;
  }

  async setRecord<T>(key: string, value: T, ttlMs = RECORD_TTL_MS): Promise<void> {
    await this.kv.set(key, value, ttlMs);
  }

  async deleteRecord(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  /** Deletes every record of this namespace (tests only: a shared Redis starts each test clean). */
  async clearForTests(): Promise<void> {
    await this.kv.clear();
  }

  async close(): Promise<void> {
    await this.kv.disconnect();
  }
}
