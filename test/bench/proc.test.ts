// The benchmark's per-process figures (bench/lib/proc.ts): with workers, a server is several
// processes, and the per-worker memory figure is the largest peak among them, not the supervisor's.
import { spawn } from 'node:child_process';
import t from 'tap';
import { cpuSecondsOf, largestHwm, memStatus, summedHwm } from '../../bench/lib/proc.js';

const MiB = 1024 * 1024;

/** A node process that touches `mib` MiB, says so, and idles (no CPU used) until killed. */
async function holding(mib: number): Promise<{ pid: number; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, ['-e', `globalThis.b = Buffer.alloc(${mib} * 1048576, 1); process.stdout.write('ready'); setTimeout(() => {}, 1e9);`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the child exited (${code}) before it was ready`)));
  });
  // Its peak settles once start-up's last allocations are done (it idles after that).
  let last = -1;
  for (let hwm = memStatus(child.pid!)!.hwm; hwm !== last; hwm = memStatus(child.pid!)!.hwm) {
    last = hwm;
    await new Promise((r) => setTimeout(r, 200));
  }
  // Resolves once the child is reaped: its /proc entry is gone.
  return { pid: child.pid!, kill: () => (child.kill('SIGKILL'), exited) };
}

t.test("largestHwm is the largest process's peak, summedHwm their sum", async (t) => {
  const small = await holding(8);
  const big = await holding(96);
  t.teardown(() => Promise.all([small.kill(), big.kill()]));
  const bigPeak = memStatus(big.pid)!.hwm;
  const smallPeak = memStatus(small.pid)!.hwm;
  t.ok(bigPeak > smallPeak + 80 * MiB, `the 96 MiB process peaked higher (${(bigPeak / MiB).toFixed(1)} against ${(smallPeak / MiB).toFixed(1)} MiB)`);
  t.equal(largestHwm([small.pid, big.pid]), bigPeak, 'the larger peak, whichever comes first');
  t.equal(largestHwm([big.pid, small.pid]), bigPeak);
  t.equal(summedHwm([small.pid, big.pid]), bigPeak + smallPeak);
});

t.test('a process that is gone does not count; none at all is NaN', async (t) => {
  const p = await holding(8);
  t.teardown(() => p.kill());
  const gone = await holding(8);
  await gone.kill();
  t.equal(memStatus(gone.pid), null, 'the killed process is gone');
  t.equal(largestHwm([gone.pid, p.pid]), memStatus(p.pid)!.hwm);
  t.ok(Number.isNaN(largestHwm([gone.pid])), 'no process: NaN (the report shows it as missing, never as 0)');
  t.equal(summedHwm([gone.pid]), null);
});

t.test('cpuSecondsOf sums the processes and counts one that is gone as 0', async (t) => {
  const p = await holding(8);
  t.teardown(() => p.kill());
  const gone = await holding(8);
  await gone.kill();
  const one = cpuSecondsOf([p.pid]);
  t.ok(one > 0, `the idle child used some CPU starting (${one} s)`);
  t.equal(cpuSecondsOf([p.pid, p.pid]), 2 * one);
  t.equal(cpuSecondsOf([p.pid, gone.pid]), one, 'a process that is gone adds nothing');
});
