/**
 * The shared index's records on Redis (the policy is lib/cluster/shared-index.ts):
 *   <namespace>idx:size     hash   digest → bytes, for every cached (unpinned) stored file
 *   <namespace>idx:total    string the sum of idx:size
 *   <namespace>idx:used     zset   digest → when any replica last served it (ms)
 *   <namespace>idx:evicted  zset   digest → when it was evicted (replicas drop it from their index)
 * A batch is sent as commands pipelined on the one connection (never a round trip per digest).
 */
import type { IndexRecords, IndexUse } from '../coordinator.js';
import type { RedisLink } from './link.js';
import { INDEX_ADD, INDEX_FORGET } from './scripts.js';

export class RedisIndexRecords implements IndexRecords {
  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
  ) {}

  private key(k: string): string {
    return `${this.prefix}idx:${k}`;
  }

  private get counted(): string[] {
    return [this.key('size'), this.key('total'), this.key('used')];
  }

  async update(batch: { added: ReadonlyMap<string, number>; forgotten: ReadonlySet<string>; used: readonly string[]; at: number }): Promise<void> {
    const c = this.link.client;
    const ops: Array<Promise<unknown>> = [];
    for (const [d, size] of batch.added) ops.push(c.eval(INDEX_ADD, { keys: this.counted, arguments: [d, String(size), String(batch.at)] }));
    for (const d of batch.forgotten) ops.push(c.eval(INDEX_FORGET, { keys: this.counted, arguments: [d] }));
    if (batch.used.length) ops.push(c.zAdd(this.key('used'), batch.used.map((d) => ({ score: batch.at, value: d })), { GT: true }));
    await Promise.all(ops);
  }

  async total(): Promise<number> {
    return Number((await this.link.client.get(this.key('total'))) ?? 0);
  }

  async leastRecent(n: number): Promise<IndexUse[]> {
    const batch = await this.link.client.zRangeWithScores(this.key('used'), 0, n - 1);
    return batch.map(({ value, score }) => ({ digest: String(value), usedAt: score }));
  }

  async forget(digest: string): Promise<number | null> {
    const size = await this.link.client.eval(INDEX_FORGET, { keys: this.counted, arguments: [digest] });
    return size === null ? null : Number(size);
  }

  async evicted(digest: string, at: number): Promise<void> {
    await this.link.client.zAdd(this.key('evicted'), { score: at, value: digest });
  }

  async evictedSince(since: number): Promise<string[]> {
    return (await this.link.client.zRangeByScore(this.key('evicted'), since, '+inf')).map(String);
  }

  async dropEvictedBefore(at: number): Promise<void> {
    await this.link.client.zRemRangeByScore(this.key('evicted'), '-inf', at);
  }

  async reconcile(listed: ReadonlyMap<string, { size: number; mtime: number }>): Promise<{ added: number; removed: number }> {
    const c = this.link.client;
    const recorded = await c.hGetAll(this.key('size'));
    let added = 0;
    let removed = 0;
    for (const [digest, { size, mtime }] of listed) {
      if (recorded[digest] !== undefined) continue;
      await c.hSet(this.key('size'), digest, String(size));
      await c.zAdd(this.key('used'), { score: Math.round(mtime), value: digest }, { NX: true });
      added++;
    }
    for (const digest of Object.keys(recorded)) {
      if (listed.has(digest)) continue;
      await c.hDel(this.key('size'), digest);
      await c.zRem(this.key('used'), digest);
      removed++;
    }
    let total = 0;
    for (const { size } of listed.values()) total += size;
    // Commits reported while the store was listed are counted again by the next reconciliation at worst.
    await c.set(this.key('total'), String(total));
    return { added, removed };
  }
}
