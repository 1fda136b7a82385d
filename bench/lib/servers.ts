/**
 * The contenders, each a separate process on 127.0.0.1:
 *   - stevedore, compiled once with tsc into a temp dir (no TypeScript loader in the measured process);
 *   - CNCF distribution in proxy mode (`docker-registry` with `proxy: remoteurl:`), its own storage;
 *   - nginx serving stevedore's store files with sendfile: the limit for a warm blob.
 * Every one logs as it would by default (stevedore and distribution at info, one line per request,
 * to a file); nginx has its access log off.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_ENV, NODE_FLAGS } from '../../lib/cli/node-flags.js';
import { DEFECT_EVENTS } from '../../lib/server/last-resort.js';
import { startRedis as startTestRedis, type RedisServer as TestRedis } from '../../test/fixtures/redis.js';
import { freePort, removeDir, spawnTracked, stopProcess, tmpDir, waitFor, which } from '../../test/fixtures/util.js';
import { childPids } from './proc.js';
import { probe, startDockerRegistry } from './upstream.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Server {
  name: string;
  url: string;
  /** The process whose memory is reported (nginx: the master; see `pids`). */
  pid: number;
  /** Every process doing the serving (nginx: its workers). */
  pids(): number[];
  /** How its process ended ("exit code 1", "signal SIGSEGV"), or null while it runs. */
  exited(): string | null;
  /**
   * Defects it reported while it may keep running, from its log: stevedore's unhandled rejections
   * and uncaught exceptions (lib/server/last-resort.ts), a panic in distribution, a crashed nginx worker.
   */
  defects(): Promise<string[]>;
  /** The last lines of its log, for an error message. */
  logTail(): Promise<string>;
  /**
   * Stops it and removes its files. Throws a ServerFailure when its process had exited before
   * (nobody asked it to) or it reported a defect, up to and including the shutdown.
   */
  stop(): Promise<void>;
}

/** A contender that died or reported a defect: a failure of the benchmark, never a missing number. */
export class ServerFailure extends Error {
  constructor(
    readonly server: string,
    readonly what: string,
    readonly tail: string,
  ) {
    super(`${server} ${what}\n--- the end of its log ---\n${tail}`);
    this.name = 'ServerFailure';
  }
}

function exitOf(child: ChildProcess): string | null {
  if (child.exitCode !== null) return `exit code ${child.exitCode}`;
  if (child.signalCode !== null) return `signal ${child.signalCode}`;
  return null;
}

function failure(name: string, exited: string | null, defects: string[], tail: string): ServerFailure | null {
  if (exited === null && defects.length === 0) return null;
  const what = [...(exited === null ? [] : [`exited by itself (${exited})`]), ...defects.map((d) => `reported a defect: ${d}`)].join('; ');
  return new ServerFailure(name, what, tail);
}

/** Null while `s` runs without a defect; else why it failed (with the end of its log). */
export async function failureOf(s: Server): Promise<ServerFailure | null> {
  const exited = s.exited();
  const defects = await s.defects();
  return failure(s.name, exited, defects, exited === null && defects.length === 0 ? '' : await s.logTail());
}

/** Throws a ServerFailure if `s` died or reported a defect. */
export async function assertAlive(s: Server): Promise<void> {
  const f = await failureOf(s);
  if (f) throw f;
}

/**
 * Reads a growing log file from where the last call stopped and keeps the lines `match` picks
 * (stevedore's log grows by a line per request: never read it whole twice).
 */
class LogScanner {
  private offset = 0;
  private rest = '';
  private readonly found: string[] = [];

  constructor(
    private readonly file: string,
    private readonly match: (line: string) => string | null,
  ) {}

  async scan(): Promise<string[]> {
    const fh = await fsp.open(this.file, 'r').catch(() => null);
    if (!fh) return this.found;
    try {
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        const lines = (this.rest + buf.subarray(0, bytesRead).toString('utf8')).split('\n');
        this.rest = lines.pop()!;
        for (const line of lines) {
          const m = this.match(line);
          if (m !== null) this.found.push(m);
        }
      }
    } finally {
      await fh.close();
    }
    return this.found;
  }
}

/** The last `lines` lines of a file (each cut to 2,000 characters). */
async function tailOf(file: string, lines = 30): Promise<string> {
  const fh = await fsp.open(file, 'r').catch(() => null);
  if (!fh) return `(no log at ${file})`;
  try {
    const { size } = await fh.stat();
    const n = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, size - n);
    return buf
      .toString('utf8')
      .split('\n')
      .filter((l) => l !== '')
      .slice(-lines)
      .map((l) => (l.length > 2000 ? `${l.slice(0, 2000)}…` : l))
      .join('\n');
  } finally {
    await fh.close();
  }
}

/** A stevedore log line that is a defect (its `event`), as "event: stack". */
function stevedoreDefect(line: string): string | null {
  if (!DEFECT_EVENTS.some((e) => line.includes(e))) return null;
  try {
    const rec = JSON.parse(line) as { event?: unknown; err?: { message?: string; stack?: string } };
    if (!(DEFECT_EVENTS as readonly unknown[]).includes(rec.event)) return null;
    return `${String(rec.event)}: ${rec.err?.stack ?? rec.err?.message ?? JSON.stringify(rec.err)}`;
  } catch {
    return null;
  }
}

/** The environment for measured processes: nothing from a parent test runner or a user's stevedore setup. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (k === 'NODE_OPTIONS' || k === 'NODE_V8_COVERAGE' || k.startsWith('STEVEDORE_') || k.startsWith('TAP') || k.startsWith('_TAPJS')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

// ---- stevedore ---------------------------------------------------------------------------

/** The project's own dist/ (compiled already: `npm run build`, or tap's before script), used in place. */
export async function prebuiltStevedore(root = ROOT): Promise<StevedoreBuild> {
  const main = path.join(root, 'dist', 'cli', 'main.js');
  try {
    await fsp.access(main);
  } catch {
    throw new Error(`--prebuilt: ${main} is missing (npm run build)`);
  }
  return { main, dir: root, warnings: '' };
}

export interface StevedoreBuild {
  main: string;
  dir: string;
  /** tsc complaints, if it still emitted (others may be editing lib/ while the benchmark runs). */
  warnings: string;
}

/**
 * Compiles lib/ into <temp dir>/dist, laid out as the project is (dist/ beside package.json, a
 * node_modules link and the dashboard's assets/), so that what the server finds next to its code
 * is there. `root`: the checkout to build (default this one; scenario 12's `--baseline DIR`
 * builds another, with its own tsc, tsconfig.build.json and node_modules).
 */
export async function buildStevedore(root = ROOT): Promise<StevedoreBuild> {
  const dir = await tmpDir(undefined, 'stevedore-bench-build-');
  const outDir = path.join(dir, 'dist');
  const tsc = path.join(root, 'node_modules', '.bin', 'tsc');
  const out = await new Promise<{ code: number; text: string }>((resolve, reject) => {
    const child = spawn(tsc, ['-p', path.join(root, 'tsconfig.build.json'), '--outDir', outDir, '--sourceMap', 'false'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (c: Buffer) => (text += c.toString()));
    child.stderr.on('data', (c: Buffer) => (text += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? 1, text }));
  });
  const main = path.join(outDir, 'cli', 'main.js');
  try {
    await fsp.access(main);
  } catch {
    throw new Error(`tsc did not produce ${main} (exit ${out.code}):\n${out.text}`);
  }
  await fsp.copyFile(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  await fsp.symlink(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  await fsp.symlink(path.join(root, 'assets'), path.join(dir, 'assets'), 'dir');
  return { main, dir, warnings: out.code === 0 ? '' : out.text };
}

export interface StevedoreServer extends Server {
  storage: string;
  logFile: string;
  /** ms from spawn to the 'stevedore listening' line (its pino `time`). */
  startupMs: number;
  /** `ms` of the 'store index rebuilt' line, and the blobs it found. */
  indexMs: number;
  indexedBlobs: number;
}

export interface StevedoreOptions {
  build: StevedoreBuild;
  storage: string;
  upstreamUrl: string;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir', dir]. */
  nodeArgs?: string[];
  logLevel?: string;
  /** Merged into the configuration (scenario 9: `metadata` and `cluster`). */
  config?: Record<string, unknown>;
  /** Its name in reports and failures (default "stevedore"; scenario 9: one per replica). */
  name?: string;
}

export const UPSTREAM_NAME = 'upstream.bench';

async function readLines(file: string): Promise<Array<Record<string, unknown>>> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line still being written
    }
  }
  return out;
}

/** One line of stevedore's access log (a 'request' line: lib/server/create-server.ts). */
export interface AccessLine {
  method: string;
  /** As logged: with its query (`?ns=`). */
  path: string;
  status: number;
  /** The answer's body bytes; 0 for an answer cut short (`aborted`). */
  bytes: number;
  aborted: boolean;
}

/** The access log of a running stevedore, as written so far. */
export async function accessLog(s: StevedoreServer): Promise<AccessLine[]> {
  return (await readLines(s.logFile))
    .filter((l) => l.msg === 'request')
    .map((l) => ({ method: String(l.method), path: String(l.path), status: Number(l.status), bytes: Number(l.bytes ?? 0), aborted: l.aborted === true }));
}

/**
 * `server.workers` for every stevedore the bench starts (`--workers N|auto`); null: the key is not
 * written (the build's default — and a build from before the key existed still starts).
 */
let stevedoreWorkers: number | 'auto' | null = null;
export function setStevedoreWorkers(workers: number | 'auto' | null): void {
  stevedoreWorkers = workers;
}

export async function startStevedore(opts: StevedoreOptions): Promise<StevedoreServer> {
  const dir = await tmpDir(undefined, 'stevedore-bench-sd-');
  const configFile = path.join(dir, 'stevedore.yaml');
  const logFile = path.join(dir, 'stevedore.log');
  await fsp.writeFile(
    configFile,
    JSON.stringify({
      listen: '127.0.0.1:0',
      storage: { path: opts.storage },
      log: { level: opts.logLevel ?? 'info' },
      upstreams: { [UPSTREAM_NAME]: { url: opts.upstreamUrl } },
      defaultUpstream: UPSTREAM_NAME,
      ...(stevedoreWorkers === null ? {} : { server: { workers: stevedoreWorkers } }),
      ...opts.config,
    }),
  );
  const name = opts.name ?? 'stevedore';
  const fd = openSync(logFile, 'a');
  const spawnedAt = Date.now();
  const child: ChildProcess = spawnTracked(process.execPath, [...NODE_FLAGS, ...(opts.nodeArgs ?? []), opts.build.main, 'serve', '--config', configFile], {
    cwd: dir,
    env: cleanEnv(NODE_ENV),
    stdio: ['ignore', fd, fd],
  }, { dieWithParent: true });
  closeSync(fd);
  let listening: Record<string, unknown> | undefined;
  let index: Record<string, unknown> | undefined;
  const scanner = new LogScanner(logFile, stevedoreDefect);
  const stop = async (): Promise<void> => {
    const before = exitOf(child);
    await stopProcess(child, 'SIGTERM', 15_000);
    // Read before the log goes: a defect during the shutdown counts too.
    const defects = await scanner.scan();
    const f = failure(name, before, defects, before === null && defects.length === 0 ? '' : await tailOf(logFile));
    await removeDir(dir);
    if (f) throw f;
  };
  try {
    await waitFor(
      'stevedore to log "stevedore listening"',
      async () => {
        if (child.exitCode !== null) throw new Error(`stevedore exited with ${child.exitCode}: ${await fsp.readFile(logFile, 'utf8').catch(() => '')}`);
        const lines = await readLines(logFile);
        index = lines.find((l) => l.msg === 'store index rebuilt');
        listening = lines.find((l) => l.msg === 'stevedore listening');
        return listening !== undefined;
      },
      60_000,
      5,
    );
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return {
    name,
    url: `http://${String(listening!.listen)}`,
    pid: child.pid!,
    // With workers: the supervisor and every worker (the host's RSS and CPU).
    pids: () => [child.pid!, ...childPids(child.pid!)],
    exited: () => exitOf(child),
    defects: () => scanner.scan(),
    logTail: () => tailOf(logFile),
    storage: opts.storage,
    logFile,
    startupMs: Number(listening!.time) - spawnedAt,
    indexMs: Number(index?.ms ?? NaN),
    indexedBlobs: Number(index?.blobs ?? NaN),
    stop,
  };
}

// ---- redis (scenario 9: stevedore's cluster mode) --------------------------------------------

export interface RedisServer extends Server {
  /** redis://127.0.0.1:PORT, for `metadata.redis`. */
  redisUrl: string;
}


/**
 * Debian's `redis-server` on 127.0.0.1 and a free port, no persistence, logging to a file: the
 * test fixture (test/fixtures/redis.ts). A crash report in its log is a defect.
 */
export async function startRedis(): Promise<RedisServer> {
  const dir = await tmpDir(undefined, 'stevedore-bench-redis-');
  const logFile = path.join(dir, 'redis.log');
  for (let attempt = 0; ; attempt++) {
    let redis: TestRedis;
    try {
      // Stopped by this server's stop(), not by a test's teardown.
      redis = await startTestRedis({ teardown: () => undefined }, { logFile });
    } catch (err) {
      const log = await fsp.readFile(logFile, 'utf8').catch(() => '');
      if (attempt < 3 && /Address already in use/i.test(log)) continue;
      await removeDir(dir);
      throw new Error(`redis-server did not start: ${(err as Error).message}\n${log}`);
    }
    const child = redis.child();
    if (exitOf(child) !== null) {
      // Another process had taken the port (and answered PING): another one.
      if (attempt < 3) continue;
      await removeDir(dir);
      throw new Error(`redis-server exited at start-up (${exitOf(child)}):\n${await fsp.readFile(logFile, 'utf8').catch(() => '')}`);
    }
    const scanner = new LogScanner(logFile, (line) => (/REDIS BUG REPORT|Guru Meditation|crashed by signal/.test(line) ? line.slice(0, 500) : null));
    const server = processServer('redis', child, redis.port, dir, logFile, scanner, () => redis.stop());
    return { ...server, redisUrl: redis.url };
  }
}

/**
 * Stops every one of `servers` (in order), and then throws the first ServerFailure among them
 * (one that died or reported a defect), else the first other error.
 */
export async function stopEach(servers: Server[]): Promise<void> {
  let failed: unknown = null;
  for (const s of servers) {
    await s.stop().catch((err: unknown) => {
      if (failed === null || (err instanceof ServerFailure && !(failed instanceof ServerFailure))) failed = err;
    });
  }
  if (failed !== null) throw failed;
}

// ---- distribution (proxy mode) -----------------------------------------------------------

/**
 * Distribution's s3 storage driver (2.8: `storage.s3`), for an S3 server on 127.0.0.1 (scenario 11).
 * With `regionendpoint` set, the 2.8 driver addresses the bucket path-style by itself (it has no
 * `forcepathstyle` option).
 */
export interface DistributionS3 {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  rootDirectory: string;
}

function distributionStorage(storage: string, s3: DistributionS3 | undefined): string[] {
  if (!s3) return ['  filesystem:', `    rootdirectory: ${JSON.stringify(storage)}`];
  const q = JSON.stringify;
  return [
    '  s3:',
    `    region: ${q(s3.region)}`,
    `    regionendpoint: ${q(s3.endpoint)}`,
    `    bucket: ${q(s3.bucket)}`,
    `    accesskey: ${q(s3.accessKeyId)}`,
    `    secretkey: ${q(s3.secretAccessKey)}`,
    `    secure: ${s3.endpoint.startsWith('https:') ? 'true' : 'false'}`,
    '    v4auth: true',
    `    rootdirectory: ${q(s3.rootDirectory)}`,
    // Else a blob GET answers 307 to a pre-signed URL of the S3 server: here it streams the blob
    // itself, as stevedore does (the clients measure the proxy, not the S3 server).
    '  redirect:',
    '    disable: true',
  ];
}

function distributionConfig(port: number, storage: string, remote: string, s3?: DistributionS3): string {
  // Debian's /etc/docker/registry/config.yml, on loopback, without htpasswd, plus `proxy`.
  return [
    'version: 0.1',
    'log:',
    '  fields:',
    '    service: registry',
    'storage:',
    '  cache:',
    '    blobdescriptor: inmemory',
    ...distributionStorage(storage, s3),
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: stevedore-bench-distribution',
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
    'health:',
    '  storagedriver:',
    '    enabled: true',
    '    interval: 10s',
    '    threshold: 3',
    'proxy:',
    `  remoteurl: ${remote}`,
    '',
  ].join('\n');
}

/**
 * A server that is one process logging to `logFile` in `dir`: stopping it (SIGTERM, or `halt`)
 * checks it and removes `dir`.
 */
function processServer(name: string, child: ChildProcess, port: number, dir: string, logFile: string, scanner: LogScanner, halt?: () => Promise<void>): Server {
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    pids: () => [child.pid!],
    exited: () => exitOf(child),
    defects: () => scanner.scan(),
    logTail: () => tailOf(logFile),
    async stop() {
      const before = exitOf(child);
      await (halt ? halt() : stopProcess(child, 'SIGTERM', 5000));
      const defects = await scanner.scan();
      const f = failure(name, before, defects, before === null && defects.length === 0 ? '' : await tailOf(logFile));
      await removeDir(dir);
      if (f) throw f;
    },
  };
}

/** `name`: in reports and failures (scenario 9 starts three). `s3`: its s3 storage driver instead of the filesystem (scenario 11). */
export async function startDistribution(upstreamUrl: string, name = 'distribution', s3?: DistributionS3): Promise<Server> {
  const dir = await tmpDir(undefined, 'stevedore-bench-dist-');
  const { child, port, logFile } = await startDockerRegistry(dir, 'distribution', (p) => distributionConfig(p, path.join(dir, 'data'), upstreamUrl, s3));
  // A Go panic: one that kills the process, or one net/http recovered in a handler.
  const scanner = new LogScanner(logFile, (line) => (/^panic: |http: panic serving/.test(line) ? line.slice(0, 500) : null));
  return processServer(name, child, port, dir, logFile, scanner);
}

// ---- nginx -------------------------------------------------------------------------------

export interface NginxFile {
  /** Exact request path, e.g. /v2/bench/app/manifests/v1. */
  path: string;
  file: string;
  contentType: string;
}

/**
 * nginx with sendfile, serving `/v2/<name>/blobs/sha256:<hex>` (and manifests by digest) straight
 * from a stevedore store's files, plus exact paths from `files` (a tag's manifest).
 */
export async function startNginx(storeRoot: string, files: NginxFile[]): Promise<Server> {
  const bin = which('nginx');
  const dir = await tmpDir(undefined, 'stevedore-bench-nginx-');
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await fsp.mkdir(path.join(dir, 'tmp', d), { recursive: true });
  const blobs = path.join(path.resolve(storeRoot), 'blobs', 'sha256');
  const q = (s: string): string => JSON.stringify(s);
  const conf = (port: number): string =>
    [
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'worker_processes auto;',
      'daemon off;',
      `pid ${q(path.join(dir, 'nginx.pid'))};`,
      `error_log ${q(path.join(dir, 'error.log'))} warn;`,
      'events { worker_connections 4096; }',
      'http {',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  access_log off;',
      '  keepalive_requests 1000000;',
      '  keepalive_timeout 65s;',
      '  default_type application/octet-stream;',
      `  client_body_temp_path ${q(path.join(dir, 'tmp', 'body'))};`,
      `  proxy_temp_path ${q(path.join(dir, 'tmp', 'proxy'))};`,
      `  fastcgi_temp_path ${q(path.join(dir, 'tmp', 'fastcgi'))};`,
      `  uwsgi_temp_path ${q(path.join(dir, 'tmp', 'uwsgi'))};`,
      `  scgi_temp_path ${q(path.join(dir, 'tmp', 'scgi'))};`,
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    location ~ "^/v2/.+/blobs/sha256:([0-9a-f]{2})([0-9a-f]{62})$" { alias ${q(`${blobs}/$1/$1$2`)}; }`,
      `    location ~ "^/v2/.+/manifests/sha256:([0-9a-f]{2})([0-9a-f]{62})$" { default_type application/vnd.docker.distribution.manifest.v2+json; alias ${q(`${blobs}/$1/$1$2`)}; }`,
      ...files.map((f) => `    location = ${q(f.path)} { default_type ${q(f.contentType)}; alias ${q(f.file)}; }`),
      '  }',
      '}',
      '',
    ].join('\n');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const confFile = path.join(dir, 'nginx.conf');
    await fsp.writeFile(confFile, conf(port));
    const logFd = openSync(path.join(dir, 'stderr.log'), 'a');
    const child = spawnTracked(bin, ['-p', dir, '-c', confFile, '-e', path.join(dir, 'error.log')], { stdio: ['ignore', logFd, logFd], env: cleanEnv() }, { dieWithParent: true });
    closeSync(logFd);
    const exited = new Promise<'exited'>((r) => child.once('exit', () => r('exited')));
    const url = `http://127.0.0.1:${port}`;
    const ready = waitFor('nginx to answer', () => probe(`${url}/`, () => true), 15_000).then(() => 'ready' as const);
    if ((await Promise.race([ready, exited])) === 'exited') {
      const log = await fsp.readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
      if (attempt < 3 && /Address already in use/i.test(log)) continue;
      throw new Error(`nginx exited at start-up (code ${child.exitCode}):\n${log}`);
    }
    const errorLog = path.join(dir, 'error.log');
    // The master restarts a worker that crashed, and says so at `alert` level.
    const scanner = new LogScanner(errorLog, (line) => (/worker process \d+ exited on signal/.test(line) ? line : null));
    return {
      name: 'nginx',
      url,
      pid: child.pid!,
      pids: () => {
        const workers = childPids(child.pid!);
        return workers.length ? workers : [child.pid!];
      },
      exited: () => exitOf(child),
      defects: () => scanner.scan(),
      logTail: () => tailOf(errorLog),
      async stop() {
        const before = exitOf(child);
        await stopProcess(child, 'SIGQUIT', 5000);
        const defects = await scanner.scan();
        const f = failure('nginx', before, defects, before === null && defects.length === 0 ? '' : await tailOf(errorLog));
        await removeDir(dir);
        if (f) throw f;
      },
    };
  }
}

export function machine(): { nproc: number; cpu: string; memGiB: number; kernel: string } {
  return { nproc: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: os.totalmem() / 2 ** 30, kernel: os.release() };
}
