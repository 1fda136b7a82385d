/**
 * The invalidation bus on Redis pub/sub: one channel per scope, `<namespace>tags`, carrying JSON
 * `{from, upstream, name, tag}`. Subscriptions use a connection of their own (link.ts), which
 * resubscribes by itself after Redis comes back. Whoever can publish on Redis can put anything on
 * the channel: only well-formed invalidations are delivered (`parseTagMoved`).
 */
import { parseTagMoved, type InvalidationBus, type TagMoved } from '../coordinator.js';
import type { RedisLink } from './link.js';

export class RedisBus implements InvalidationBus {
  constructor(
    private readonly link: RedisLink,
    private readonly channel: string,
  ) {}

  publish(m: TagMoved): Promise<boolean> {
    return this.link.publish(this.channel, JSON.stringify({ from: m.from, upstream: m.upstream, name: m.name, tag: m.tag }));
  }

  subscribe(fn: (m: TagMoved) => void): Promise<void> {
    return this.link.subscribe(this.channel, (message) => {
      const m = parseTagMoved(message);
      if (m) fn(m);
    });
  }
}
