/**
 * The node tier's holder directory on Redis: `<namespace>has:<digest>`, a sorted set of the
 * instances holding the digest scored by when their announcement expires; the key itself expires
 * `keepMs` after the last announcement. Announcements go in batches of ANNOUNCE_BATCH per round trip.
 */
import { MAX_HOLDERS, type HolderDirectory } from '../coordinator.js';
import type { RedisLink } from './link.js';

/** Announcements sent to Redis in one round trip at most. */
const ANNOUNCE_BATCH = 500;

export class RedisHolderDirectory implements HolderDirectory {
  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
  ) {}

  private hasKey(digest: string): string {
    return `${this.prefix}has:${digest}`;
  }

  async announce(digests: readonly string[], member: string, until: number, keepMs: number): Promise<void> {
    if (!this.link.up || digests.length === 0) return;
    for (let i = 0; i < digests.length; i += ANNOUNCE_BATCH) {
      const m = this.link.client.multi();
      for (const d of digests.slice(i, i + ANNOUNCE_BATCH)) {
        m.zAdd(this.hasKey(d), { score: until, value: member });
        m.pExpire(this.hasKey(d), keepMs);
      }
      await m.exec();
    }
  }

  async withdraw(digests: readonly string[], member: string): Promise<void> {
    if (!this.link.up || digests.length === 0) return;
    if (digests.length === 1) {
      await this.link.client.zRem(this.hasKey(digests[0]!), member);
      return;
    }
    for (let i = 0; i < digests.length; i += ANNOUNCE_BATCH) {
      const m = this.link.client.multi();
      for (const d of digests.slice(i, i + ANNOUNCE_BATCH)) m.zRem(this.hasKey(d), member);
      await m.exec();
    }
  }

  async holders(digest: string, now: number): Promise<string[]> {
    return (await this.link.client.zRangeByScore(this.hasKey(digest), now, '+inf', { LIMIT: { offset: 0, count: MAX_HOLDERS } })).map(String);
  }
}
