/** The orchestrator's handle on the load-generator process (client.ts). */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FetchJob, FetchResult, Job, PullJob, PullResult, SpreadJob, SpreadResult } from './client.js';
import type { SoakStartJob, SoakWindowStats } from './soak-load.js';
import { ROOT, cleanEnv } from './servers.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'client.ts');

export class LoadClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (msg: { id?: number; result?: unknown; error?: string }) => {
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error !== undefined) p.reject(new Error(`client: ${msg.error}`));
      else p.resolve(msg.result);
    });
    child.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`client process exited (${code})`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  static async start(): Promise<LoadClient> {
    const child = fork(CLIENT, [], {
      cwd: ROOT,
      execArgv: ['--import', '@tapjs/typescript/import'],
      env: cleanEnv({ TS_NODE_TRANSPILE_ONLY: '1' }),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('client process did not start within 30 s')), 30_000);
      child.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`client process exited at start (${code})`));
      });
    });
    return new LoadClient(child);
  }

  private run(job: Job): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, job });
    });
  }

  fetch(job: Omit<FetchJob, 'kind'>): Promise<FetchResult> {
    return this.run({ kind: 'fetch', ...job }) as Promise<FetchResult>;
  }

  pull(job: Omit<PullJob, 'kind'>): Promise<PullResult> {
    return this.run({ kind: 'pull', ...job }) as Promise<PullResult>;
  }

  spread(job: Omit<SpreadJob, 'kind'>): Promise<SpreadResult> {
    return this.run({ kind: 'spread', ...job }) as Promise<SpreadResult>;
  }

  /** Starts the soak's load (soak-load.ts) in the client process; it runs until soakStop. */
  async soakStart(job: Omit<SoakStartJob, 'kind'>): Promise<void> {
    await this.run({ kind: 'soak-start', ...job });
  }

  /** The soak's counts since the last call (or the start), and resets them. */
  soakWindow(): Promise<SoakWindowStats> {
    return this.run({ kind: 'soak-window' }) as Promise<SoakWindowStats>;
  }

  /** Stops the soak's load; the counts since the last window. */
  soakStop(): Promise<SoakWindowStats> {
    return this.run({ kind: 'soak-stop' }) as Promise<SoakWindowStats>;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}
