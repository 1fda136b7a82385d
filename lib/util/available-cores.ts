/**
 * The cores this process may use (config `server.workers: auto`): the machine's, as Node sees them
 * (`os.availableParallelism()`, which follows the CPU affinity mask), capped by the cgroup's CPU
 * quota when one is set (a Kubernetes CPU limit: cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
 * `cpu.cfs_period_us`), rounded up, and at least 1.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** A cgroup CPU quota as cores (quota / period), or null when there is none or it cannot be read. */
export function cgroupQuotaCores(read: (file: string) => string | null = readOrNull, root = '/sys/fs/cgroup'): number | null {
  // cgroup v2: "max 100000" (no limit) or "200000 100000".
  const v2 = read(`${root}/cpu.max`);
  if (v2 !== null) {
    const [quota, period] = v2.trim().split(/\s+/);
    return quotaOver(quota, period);
  }
  // cgroup v1: -1 when there is no limit.
  return quotaOver(read(`${root}/cpu/cpu.cfs_quota_us`)?.trim() ?? read(`${root}/cpu,cpuacct/cpu.cfs_quota_us`)?.trim(), read(`${root}/cpu/cpu.cfs_period_us`)?.trim() ?? read(`${root}/cpu,cpuacct/cpu.cfs_period_us`)?.trim());
}

function quotaOver(quota: string | undefined, period: string | undefined): number | null {
  if (quota === undefined || period === undefined || !/^\d+$/.test(quota) || !/^\d+$/.test(period)) return null;
  const q = Number(quota);
  const p = Number(period);
  if (q <= 0 || p <= 0) return null;
  return q / p;
}

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** The cores available: `parallelism` capped by `quota` (cores, fractional), rounded up, at least 1. */
export function availableCores(parallelism = availableParallelism(), quota = cgroupQuotaCores()): number {
  const cores = quota === null ? parallelism : Math.min(parallelism, Math.ceil(quota));
  return Math.max(1, Math.floor(cores));
}

/** `server.workers` as a number of processes. */
export function resolveWorkers(workers: number | 'auto', cores: () => number = () => availableCores()): number {
  return workers === 'auto' ? cores() : workers;
}
