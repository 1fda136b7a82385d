/**
 * Process memory from /proc: VmHWM (peak resident set) and VmRSS; open descriptors. The peak is reset between
 * measurements by writing "5" to /proc/<pid>/clear_refs (Linux ≥ 4.0); a sampler that polls VmRSS
 * backs it up where the reset is refused.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

export interface MemStatus {
  /** Peak resident set since start or the last reset, bytes. */
  hwm: number;
  /** Resident set now, bytes. */
  rss: number;
}

export function memStatus(pid: number): MemStatus | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** The peak resident set (VmHWM) of each process still readable (a supervisor and its workers). */
export function hwms(pids: number[]): number[] {
  return pids.map((pid) => memStatus(pid)?.hwm).filter((v): v is number => v !== undefined && Number.isFinite(v));
}

/**
 * The largest peak resident set (VmHWM) of processes (a supervisor and its workers: the busiest
 * worker's, what the per-worker memory target is about); NaN when none is there.
 */
export function largestHwm(pids: number[]): number {
  const peaks = hwms(pids);
  return peaks.length ? Math.max(...peaks) : NaN;
}

/** Peak resident sets (VmHWM) summed over processes (a supervisor and its workers); null when none is there. */
export function summedHwm(pids: number[]): number | null {
  const peaks = hwms(pids);
  return peaks.length ? peaks.reduce((a, b) => a + b, 0) : null;
}

/** Open file descriptors of a process (entries of /proc/<pid>/fd); null when it is gone. */
export function openFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Resets VmHWM to the current RSS. False when the kernel refuses. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Direct children of a process (nginx workers). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Tracks the peak RSS of a set of processes over a measurement: resets VmHWM at start, samples VmRSS
 * every `intervalMs`, and at stop returns the larger of VmHWM and the sampled maximum (summed over
 * the processes, e.g. nginx's workers).
 */
export class PeakRss {
  private readonly maxSeen = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly resetOk: boolean;
  /** Each process's peak, set by stop(). */
  private each: number[] = [];

  constructor(
    private readonly pids: () => number[],
    intervalMs = 50,
  ) {
    let ok = true;
    for (const pid of pids()) ok = resetPeak(pid) && ok;
    this.resetOk = ok;
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    for (const pid of this.pids()) {
      const s = memStatus(pid);
      if (s) this.maxSeen.set(pid, Math.max(this.maxSeen.get(pid) ?? 0, s.rss));
    }
  }

  /** Peak bytes (sum over the processes). */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    this.each = this.pids().map((pid) => {
      const s = memStatus(pid);
      const sampled = this.maxSeen.get(pid) ?? 0;
      return this.resetOk && s ? Math.max(s.hwm, sampled) : sampled;
    });
    return this.each.reduce((a, b) => a + b, 0);
  }

  /** After stop(): the peak of the one process that peaked highest (with workers: per worker). */
  largest(): number {
    return Math.max(0, ...this.each);
  }
}

export interface CpuTicks {
  /** Busy time of the whole machine (user, nice, system, irq, softirq), in USER_HZ ticks. */
  busy: number;
  /** Time the hypervisor ran something else (steal). */
  steal: number;
  /** This process and every child it has reaped (utime, stime, cutime, cstime). */
  own: number;
}

/** CPU accounting from /proc/stat and /proc/self/stat, to tell how busy other processes kept the box. */
export function cpuTicks(): CpuTicks {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  const self = readFileSync('/proc/self/stat', 'utf8');
  const fields = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
  // After the comm field: state is [0], utime [11], stime [12], cutime [13], cstime [14].
  const own = (fields[11] ?? 0) + (fields[12] ?? 0) + (fields[13] ?? 0) + (fields[14] ?? 0);
  return { busy: user + nice + system + irq + softirq, steal, own };
}

export function loadAvg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'unknown';
  }
}

/** CPU-seconds a process has used so far (utime + stime of /proc/<pid>/stat); null when it is gone. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // After the comm field: utime is [11], stime [12], in USER_HZ ticks (100 on Linux).
    return ((fields[11] ?? 0) + (fields[12] ?? 0)) / 100;
  } catch {
    return null;
  }
}

/** CPU-seconds the processes have used, summed (a stevedore's `pids()`: its supervisor and workers); a process gone counts 0. */
export function cpuSecondsOf(pids: readonly number[]): number {
  return pids.reduce((n, pid) => n + (cpuSeconds(pid) ?? 0), 0);
}
