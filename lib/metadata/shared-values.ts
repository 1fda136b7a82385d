/**
 * Small values shared by every process on the cluster coordinator (tag freshness, upstream health).
 * Defined here, where they are used, so that metadata/ needs nothing from cluster/; every
 * `ClusterCoordinator` (lib/cluster/coordinator.ts) provides one as its `values`.
 *
 * Never fails for want of the coordinator: while it is unreachable this process's memory answers,
 * and the shared values are seen again when it returns.
 */
export interface SharedValues {
  get<T>(key: string): Promise<T | null>;
  set<T>(key: string, value: T, ttlMs: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Deletes every value (tests: a shared store starts each test clean). */
  clear(): Promise<void>;
  close(): Promise<void>;
}
