/**
 * Upload sessions locked across replicas (cluster mode): each request of a push (PATCH, PUT,
 * DELETE) may land on any replica, and a session's chunks must be appended one at a time. The lock
 * is a lease (renewed while the request runs, so a slow chunk keeps it); a request that finds it
 * taken waits for it, and is refused after `waitMs` (a client sending two chunks of one upload at
 * once). Redis unreachable: the lock is this process's alone (the in-process chain still holds).
 */
import { OciError } from '../oci/errors.js';
import type { SessionLocks } from '../storage/upload-store.js';
import type { Leases } from './coordinator.js';

export class ClusterSessionLocks implements SessionLocks {
  constructor(
    private readonly coordinator: Leases,
    private readonly opts: { leaseTtlMs: number; waitMs: number; pollMs: number },
  ) {}

  private key(uuid: string): string {
    return `upload:${uuid}`;
  }

  async acquire(uuid: string): Promise<() => Promise<void>> {
    const deadline = Date.now() + this.opts.waitMs;
    for (;;) {
      if (!this.coordinator.available()) return async () => undefined;
      let lease;
      try {
        lease = await this.coordinator.acquire(this.key(uuid), this.opts.leaseTtlMs);
      } catch {
        return async () => undefined;
      }
      if (lease) return () => lease.release();
      if (Date.now() >= deadline) {
        throw new OciError('BLOB_UPLOAD_INVALID', `another request of upload ${uuid} is still in progress; send its chunks one at a time`, {
          status: 409,
          headers: { 'Retry-After': '1' },
        });
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs));
    }
  }

  async held(uuid: string): Promise<boolean> {
    return (await this.coordinator.read(this.key(uuid))) !== null;
  }
}
