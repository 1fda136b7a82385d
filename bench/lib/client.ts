/**
 * The load generator: a separate node process (so client work is not in any proxy's process nor in
 * the orchestrator), driven over IPC by client-api.ts. Uses undici's dispatcher directly and only
 * counts body bytes (no hashing, no copies), to spend as little of the shared CPUs as it can.
 *
 * Jobs:
 *   fetch: GET each path (each once) with `concurrency` requests in flight, one connection each;
 *          per-request latency (request sent → last byte) and aggregate throughput.
 *   pull:  `clients` concurrent image pulls: manifest by tag, then config and layers with
 *          `layerConcurrency` in flight per client (containerd's default is 3); each body's length
 *          is checked against the manifest. With `origins`, client i pulls from origins[i mod n]
 *          (scenario 9: clients spread round-robin over replicas), all starting together. With
 *          `verify` (scenario 10), every blob is hashed as it arrives and checked against its
 *          digest, and the manifest against `manifestDigest`.
 *   spread: `clients` concurrent GETs of one path at the same moment, client i on origins[i mod n]
 *          (scenario 12: one cold blob through cluster replicas), each body hashed as it arrives;
 *          per client the status, bytes, digest and when it started, got its first body byte and
 *          its last (epoch ms, `performance.timeOrigin + performance.now()`, comparable with the
 *          orchestrator's upstream link records).
 *   soak-start / soak-window / soak-stop: the soak's mixed load (soak-load.ts), running in the
 *          background until stopped; soak-window returns and resets its counts.
 */
import { createHash, type Hash } from 'node:crypto';
import { Agent } from 'undici';
import { RawConnection } from './raw-http.js';
import { soakStart, soakStop, soakWindow, type SoakStartJob, type SoakWindowStats } from './soak-load.js';

export interface FetchJob {
  kind: 'fetch';
  origin: string;
  paths: string[];
  concurrency: number;
  headers?: Record<string, string>;
  /** undici (default) or the minimal raw HTTP/1.1 client (raw-http.ts). */
  engine?: 'undici' | 'raw';
}

export interface FetchResult {
  wallMs: number;
  bytes: number;
  latMs: number[];
  failed: number;
  errors: string[];
}

export interface PullJob {
  kind: 'pull';
  origin: string;
  /** Several servers: client i pulls from origins[i % origins.length] (`origin` is then unused). */
  origins?: string[];
  repo: string;
  tag: string;
  clients: number;
  layerConcurrency: number;
  accept: string;
  /** Hash every blob (sha256) and fail the pull when one does not match its digest. */
  verify?: boolean;
  /** With `verify`: the digest the manifest fetched by tag must have. */
  manifestDigest?: string;
}

export interface PullResult {
  wallMs: number;
  bytes: number;
  clientMs: number[];
  /** The server each entry of clientMs pulled from. */
  clientOrigins: string[];
  failed: number;
  errors: string[];
}

export interface SpreadJob {
  kind: 'spread';
  origins: string[];
  path: string;
  clients: number;
}

export interface SpreadClient {
  origin: string;
  status: number;
  bytes: number;
  /** sha256:… of the body received (whole or not). */
  digest: string;
  startAt: number;
  /** 0: no body byte. */
  firstByteAt: number;
  endAt: number;
  error?: string;
}

export interface SpreadResult {
  startAt: number;
  clients: SpreadClient[];
}

/** The soak's load (soak-load.ts): started, read and reset per window, stopped. */
export type SoakJob = SoakStartJob | { kind: 'soak-window' } | { kind: 'soak-stop' };

export type Job = FetchJob | PullJob | SpreadJob | SoakJob;

/** Epoch ms, sub-millisecond (as bench/lib/upstream.ts `now`). */
function now(): number {
  return performance.timeOrigin + performance.now();
}

interface Got {
  status: number;
  bytes: number;
  ms: number;
  body: Buffer | null;
}

function get(agent: Agent, origin: string, path: string, headers: Record<string, string>, keepBody: boolean, hash?: Hash): Promise<Got> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let status = 0;
    let bytes = 0;
    const chunks: Buffer[] | null = keepBody ? [] : null;
    agent.dispatch(
      { origin, path, method: 'GET', headers, headersTimeout: 120_000, bodyTimeout: 120_000 },
      {
        onRequestStart() {},
        onResponseStart(_c, s) {
          status = s;
        },
        onResponseData(_c, chunk) {
          bytes += chunk.length;
          chunks?.push(chunk);
          hash?.update(chunk);
        },
        onResponseEnd() {
          resolve({ status, bytes, ms: performance.now() - t0, body: chunks ? Buffer.concat(chunks) : null });
        },
        onResponseError(_c, err) {
          reject(err);
        },
      },
    );
  });
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function newAgent(connections: number): Agent {
  return new Agent({ connections, pipelining: 1, keepAliveTimeout: 30_000 });
}

async function runFetchRaw(job: FetchJob): Promise<FetchResult> {
  const res: FetchResult = { wallMs: 0, bytes: 0, latMs: [], failed: 0, errors: [] };
  const u = new URL(job.origin);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(job.concurrency, job.paths.length) }, async () => {
      let conn: RawConnection | null = null;
      try {
        while (next < job.paths.length) {
          const p = job.paths[next++]!;
          try {
            conn ??= new RawConnection(u.hostname, Number(u.port));
            const g = await conn.get(p, job.headers);
            res.bytes += g.bytes;
            if (g.status !== 200) throw new Error(`GET ${p}: ${g.status}`);
            res.latMs.push(g.ms);
          } catch (err) {
            res.failed++;
            if (res.errors.length < 5) res.errors.push((err as Error).message);
            conn?.close();
            conn = null;
          }
        }
      } finally {
        conn?.close();
      }
    }),
  );
  res.wallMs = performance.now() - t0;
  return res;
}

async function runFetch(job: FetchJob): Promise<FetchResult> {
  if (job.engine === 'raw') return runFetchRaw(job);
  const agent = newAgent(job.concurrency);
  const res: FetchResult = { wallMs: 0, bytes: 0, latMs: [], failed: 0, errors: [] };
  const t0 = performance.now();
  try {
    await pool(job.paths, job.concurrency, async (p) => {
      try {
        const g = await get(agent, job.origin, p, job.headers ?? {}, false);
        res.bytes += g.bytes;
        if (g.status !== 200) throw new Error(`GET ${p}: ${g.status}`);
        res.latMs.push(g.ms);
      } catch (err) {
        res.failed++;
        if (res.errors.length < 5) res.errors.push((err as Error).message);
      }
    });
    res.wallMs = performance.now() - t0;
  } finally {
    await agent.close();
  }
  return res;
}

interface Descriptor {
  digest: string;
  size: number;
}

async function pullOnce(agent: Agent, job: PullJob, origin: string): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  const m = await get(agent, origin, `/v2/${job.repo}/manifests/${job.tag}`, { accept: job.accept }, true);
  if (m.status !== 200) throw new Error(`manifest ${job.repo}:${job.tag}: ${m.status} ${m.body?.toString().slice(0, 200)}`);
  if (job.verify && job.manifestDigest !== undefined) {
    const got = `sha256:${createHash('sha256').update(m.body!).digest('hex')}`;
    if (got !== job.manifestDigest) throw new Error(`manifest ${job.repo}:${job.tag} from ${origin}: digest ${got}, expected ${job.manifestDigest}`);
  }
  const manifest = JSON.parse(m.body!.toString()) as { config: Descriptor; layers: Descriptor[] };
  let bytes = m.bytes;
  await pool([manifest.config, ...manifest.layers], job.layerConcurrency, async (d) => {
    const hash = job.verify ? createHash('sha256') : undefined;
    const g = await get(agent, origin, `/v2/${job.repo}/blobs/${d.digest}`, {}, false, hash);
    if (g.status !== 200 || g.bytes !== d.size) throw new Error(`blob ${d.digest}: status ${g.status}, ${g.bytes} of ${d.size} bytes`);
    if (hash) {
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== d.digest) throw new Error(`blob ${d.digest} from ${origin}: the bytes hash to ${got}`);
    }
    bytes += g.bytes;
  });
  return { bytes, ms: performance.now() - t0 };
}

async function runPull(job: PullJob): Promise<PullResult> {
  const agent = newAgent(job.clients * job.layerConcurrency + 1);
  const res: PullResult = { wallMs: 0, bytes: 0, clientMs: [], clientOrigins: [], failed: 0, errors: [] };
  const t0 = performance.now();
  try {
    await Promise.all(
      Array.from({ length: job.clients }, async (_, i) => {
        const origin = job.origins?.length ? job.origins[i % job.origins.length]! : job.origin;
        try {
          const r = await pullOnce(agent, job, origin);
          res.bytes += r.bytes;
          res.clientMs.push(r.ms);
          res.clientOrigins.push(origin);
        } catch (err) {
          res.failed++;
          if (res.errors.length < 5) res.errors.push((err as Error).message);
        }
      }),
    );
    res.wallMs = performance.now() - t0;
  } finally {
    await agent.close();
  }
  return res;
}

function spreadOne(agent: Agent, origin: string, path: string): Promise<SpreadClient> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    const got: SpreadClient = { origin, status: 0, bytes: 0, digest: '', startAt: now(), firstByteAt: 0, endAt: 0 };
    const done = (error?: Error): void => {
      if (got.endAt !== 0) return;
      got.endAt = now();
      got.digest = `sha256:${hash.digest('hex')}`;
      if (error) got.error = error.message;
      resolve(got);
    };
    agent.dispatch(
      { origin, path, method: 'GET', headers: {}, headersTimeout: 300_000, bodyTimeout: 300_000 },
      {
        onRequestStart() {},
        onResponseStart(_c, s) {
          got.status = s;
        },
        onResponseData(_c, chunk) {
          if (got.bytes === 0) got.firstByteAt = now();
          got.bytes += chunk.length;
          hash.update(chunk);
        },
        onResponseEnd() {
          done();
        },
        onResponseError(_c, err) {
          done(err);
        },
      },
    );
  });
}

async function runSpread(job: SpreadJob): Promise<SpreadResult> {
  // One connection per client (the Agent's limit is per origin).
  const agent = newAgent(job.clients);
  try {
    const startAt = now();
    const clients = await Promise.all(Array.from({ length: job.clients }, (_, i) => spreadOne(agent, job.origins[i % job.origins.length]!, job.path)));
    return { startAt, clients };
  } finally {
    await agent.close();
  }
}

export function runJob(job: Job): Promise<FetchResult | PullResult | SpreadResult | SoakWindowStats | { started: true }> {
  switch (job.kind) {
    case 'fetch':
      return runFetch(job);
    case 'pull':
      return runPull(job);
    case 'spread':
      return runSpread(job);
    case 'soak-start':
      return soakStart(job);
    case 'soak-window':
      return Promise.resolve().then(soakWindow);
    case 'soak-stop':
      return soakStop();
  }
}

if (process.send) {
  process.on('disconnect', () => process.exit(0));
  process.on('message', (msg: { id: number; job: Job }) => {
    runJob(msg.job).then(
      (result) => process.send!({ id: msg.id, result }),
      (err: unknown) => process.send!({ id: msg.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
    );
  });
  process.send({ ready: true });
}
