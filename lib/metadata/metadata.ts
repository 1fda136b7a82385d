/**
 * Shared metadata in keyv: when each tag was last confirmed with its upstream. In-memory by
 * default; Redis (`@keyv/redis`) when `metadata.redis` is set, so several replicas share it.
 * Timestamps come from the caller's clock, so freshness decisions can be tested with a fake one.
 */
import Keyv from 'keyv';
import type { RedisLink } from '../cluster/redis-link.js';

/** Records are garbage-collected by the backend after this long, whatever their freshness. */
const RECORD_TTL_MS = 30 * 86_400_000;

export class Metadata {
  /** Shared (Redis) when configured; used only while Redis answers. */
  private readonly shared: Keyv | null;
  /** In memory: the only store of a single process, the fallback of a replica while Redis is down. */
  private readonly local: Keyv;
  private readonly link: RedisLink | null;

  /** `kv` is the Redis-backed store when `link` is given (memory then only backs it up), else the memory one. */
  constructor(kv: Keyv, link: RedisLink | null = null) {
    this.shared = link ? kv : null;
    this.local = link ? new Keyv({ namespace: 'stevedore' }) : kv;
    this.link = link;
  }

  /**
   * In memory, or on the Redis connection `link` (the process's one, shared with the cluster's
   * leases). The Redis adapter is loaded only when Redis is configured.
   */
  static async create(opts: { link: RedisLink | null }): Promise<Metadata> {
    if (opts.link) {
      const { default: KeyvRedis } = await import('@keyv/redis');
      const store = new KeyvRedis(opts.link.client as never, { throwOnErrors: true, throwOnConnectError: true });
      const kv = new Keyv({ store, namespace: 'stevedore', useKeyPrefix: false, throwOnErrors: true });
      return new Metadata(kv, opts.link);
    }
    return new Metadata(new Keyv({ namespace: 'stevedore' }));
  }

  /** Redis while it answers; memory otherwise (a replica goes on alone, and rejoins when it returns). */
  private async use<T>(fn: (kv: Keyv) => Promise<T>): Promise<T> {
    if (this.shared && this.link?.up) {
      try {
        return await fn(this.shared);
      } catch {
        // Redis failed this call (logged once by the link): this replica's memory answers instead.
      }
    }
    return fn(this.local);
  }

  private static tagKey(upstream: string, name: string, tag: string): string {
    return `tag:${upstream}/${name}:${tag}`;
  }

  /** When the upstream last confirmed (or gave us) this tag's digest, or null if never / forgotten. */
  async tagCheckedAt(upstream: string, name: string, tag: string): Promise<{ at: number; digest: string } | null> {
    const v = await this.use((kv) => kv.get<{ at: number; digest: string }>(Metadata.tagKey(upstream, name, tag)));
    return v ?? null;
  }

  async setTagChecked(upstream: string, name: string, tag: string, digest: string, at: number): Promise<void> {
    await this.use((kv) => kv.set(Metadata.tagKey(upstream, name, tag), { at, digest }, RECORD_TTL_MS));
  }

  /** A small record shared by replicas (upstream health, quotas). */
  async getRecord<T>(key: string): Promise<T | null> {
    return (await this.use((kv) => kv.get<T>(key))) ?? null;
  }

  async setRecord<T>(key: string, value: T, ttlMs = RECORD_TTL_MS): Promise<void> {
    await this.use((kv) => kv.set(key, value, ttlMs));
  }

  async deleteRecord(key: string): Promise<void> {
    await this.use((kv) => kv.delete(key));
  }

  /** Deletes every record of this namespace (tests only: a shared Redis starts each test clean). */
  async clearForTests(): Promise<void> {
    await this.local.clear();
    if (this.shared) await this.shared.clear();
  }

  /** The Redis connection belongs to the link (closed by its owner), not to this. */
  async close(): Promise<void> {
    if (!this.link) await this.local.disconnect();
  }
}
