/**
 * Leases on Redis: `SET key "<token> <value>" NX PX ttl`, renewed, published over and released
 * only by the token's holder (scripts.ts). Every key is under the scope's namespace; notes under
 * `<namespace>note:`.
 */
import { HeldLease, newLeaseToken, type Lease, type LeaseRecord, type Leases } from '../coordinator.js';
import type { RedisLink } from './link.js';
import { LEASE_PUBLISH, LEASE_RELEASE, LEASE_RENEW } from './scripts.js';

const SEP = ' ';

export class RedisLeases implements Leases {
  readonly shared = true;

  /** `prefix` scopes every key (one store's replicas share it, another store's do not). */
  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
  ) {}

  available(): boolean {
    return this.link.up;
  }

  private k(key: string): string {
    return `${this.prefix}${key}`;
  }

  async acquire(key: string, ttlMs: number, value = ''): Promise<Lease | null> {
    const token = newLeaseToken();
    const ok = await this.link.client.set(this.k(key), `${token}${SEP}${value}`, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } });
    if (ok !== 'OK') return null;
    const client = this.link.client;
    return new HeldLease(this.k(key), token, ttlMs, {
      renew: async (k, tok, ttl) => Number(await client.eval(LEASE_RENEW, { keys: [k], arguments: [`${tok}${SEP}`, String(ttl)] })) === 1,
      publish: async (k, tok, v) => Number(await client.eval(LEASE_PUBLISH, { keys: [k], arguments: [`${tok}${SEP}`, v] })) === 1,
      release: async (k, tok) => {
        await client.eval(LEASE_RELEASE, { keys: [k], arguments: [`${tok}${SEP}`] });
      },
    });
  }

  async read(key: string): Promise<LeaseRecord | null> {
    const raw = await this.link.client.get(this.k(key));
    if (raw === null) return null;
    const s = String(raw);
    const i = s.indexOf(SEP);
    return i < 0 ? { token: s, value: '' } : { token: s.slice(0, i), value: s.slice(i + 1) };
  }

  async setNote(key: string, value: string, ttlMs: number): Promise<void> {
    await this.link.client.set(this.k(`note:${key}`), value, { expiration: { type: 'PX', value: ttlMs } });
  }

  async getNote(key: string): Promise<string | null> {
    const v = await this.link.client.get(this.k(`note:${key}`));
    return v === null ? null : String(v);
  }
}
