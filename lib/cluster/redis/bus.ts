/**
 * The invalidation bus on Redis pub/sub: one channel per scope, `<namespace>tags`, carrying JSON
 * `{from, upstream, name, tag}` (a tag moved) or `{kind: "warm-mark", from, id}` (pre-heat). Subscriptions use a connection of their own (link.ts), which
 * resubscribes by itself after Redis comes back. Whoever can publish on Redis can put anything on
 * the channel: only well-formed messages are delivered (`parseBusMessage`).
 */
import { busMessageFields, parseBusMessage, type BusMessage, type InvalidationBus } from '../coordinator.js';
import type { RedisLink } from './link.js';

export class RedisBus implements InvalidationBus {
  constructor(
    private readonly link: RedisLink,
    private readonly channel: string,
  ) {}

  publish(m: BusMessage): Promise<boolean> {
    return this.link.publish(this.channel, JSON.stringify(busMessageFields(m)));
  }

  subscribe(fn: (m: BusMessage) => void): Promise<void> {
    return this.link.subscribe(this.channel, (message) => {
      const m = parseBusMessage(message);
      if (m) fn(m);
    });
  }
}
