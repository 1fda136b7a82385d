/**
 * Shared metadata: when each tag was last confirmed with its upstream, and small records (upstream
 * health, quotas). Kept in the cluster coordinator's shared values (shared-values.ts, lib/cluster/coordinator.ts):
 * in memory for a single process, on Redis when `metadata.redis` is set, so several replicas share
 * it (while Redis does not answer, each replica's memory answers: it goes on alone, and rejoins).
 * Timestamps come from the caller's clock, so freshness decisions can be tested with a fake one.
 */
import type { SharedValues } from './shared-values.js';

/** Records are garbage-collected by the backend after this long, whatever their freshness. */
const RECORD_TTL_MS = 30 * 86_400_000;

export class Metadata {
  constructor(private readonly values: SharedValues) {}

  private static tagKey(upstream: string, name: string, tag: string): string {
    return `tag:${upstream}/${name}:${tag}`;
  }

  /** When the upstream last confirmed (or gave us) this tag's digest, or null if never / forgotten. */
  async tagCheckedAt(upstream: string, name: string, tag: string): Promise<{ at: number; digest: string } | null> {
    return this.values.get<{ at: number; digest: string }>(Metadata.tagKey(upstream, name, tag));
  }

  async setTagChecked(upstream: string, name: string, tag: string, digest: string, at: number): Promise<void> {
    await this.values.set(Metadata.tagKey(upstream, name, tag), { at, digest }, RECORD_TTL_MS);
  }

  /** A small record shared by replicas (upstream health, quotas). */
  async getRecord<T>(key: string): Promise<T | null> {
    return this.values.get<T>(key);
  }

  async setRecord<T>(key: string, value: T, ttlMs = RECORD_TTL_MS): Promise<void> {
    await this.values.set(key, value, ttlMs);
  }

  async deleteRecord(key: string): Promise<void> {
    await this.values.delete(key);
  }

  /** Deletes every record (tests only: a shared Redis starts each test clean). */
  async clearForTests(): Promise<void> {
    await this.values.clear();
  }
}
