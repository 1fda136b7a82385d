// `server.workers: auto`: the cores available to the process, the cgroup CPU quota included.
import t from 'tap';
import { availableCores, cgroupQuotaCores, resolveWorkers } from '../../lib/util/available-cores.js';

const files = (m: Record<string, string>) => (f: string): string | null => m[f] ?? null;

t.test('cgroup v2: cpu.max quota over period, null when "max"', async (t) => {
  t.equal(cgroupQuotaCores(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 1.5);
  t.equal(cgroupQuotaCores(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), null);
});

t.test('cgroup v1: cfs_quota_us over cfs_period_us, null when -1', async (t) => {
  t.equal(cgroupQuotaCores(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), 4);
  t.equal(cgroupQuotaCores(files({ '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n' })), null);
});

t.test('no cgroup files: no quota', async (t) => {
  t.equal(cgroupQuotaCores(files({})), null);
});

t.test('the cores are the parallelism capped by the quota rounded up, at least 1', async (t) => {
  t.equal(availableCores(8, null), 8, 'no quota: every core');
  t.equal(availableCores(8, 1.5), 2, 'a quota of 1.5 cores: 2 workers');
  t.equal(availableCores(2, 16), 2, 'a quota above the cores: the cores');
  t.equal(availableCores(8, 0.2), 1, 'a fraction of a core: 1');
});

t.test('workers: auto is the cores, a number is itself', async (t) => {
  t.equal(resolveWorkers('auto', () => 3), 3);
  t.equal(resolveWorkers(5, () => 3), 5);
});
