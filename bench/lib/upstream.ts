/**
 * The upstream: Debian's CNCF distribution (`docker-registry`) on 127.0.0.1, behind a "link" — a
 * pass-through proxy that counts every request and response byte, and can pace all responses
 * together to a shared rate (one WAN link to a remote registry, whatever the number of streams).
 *
 *   proxies ─► link (counts, paces) ─► docker-registry        seeding goes to `directUrl`
 */
import type { ChildProcess } from 'node:child_process';
import http, { type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { spawnDockerRegistry } from '../../test/fixtures/registry.js';
import { removeDir, stopProcess, tmpDir } from '../../test/fixtures/util.js';

export interface LinkRecord {
  method: string;
  path: string;
  status: number;
  /** Response body bytes sent to the client. */
  bytes: number;
  /** When the request arrived, and when the last byte of the answer was handed to the socket (null: not yet, or cut short); epoch ms (`now()`). */
  startedAt: number;
  finishedAt: number | null;
}

/** Epoch milliseconds with sub-millisecond resolution, comparable across this machine's processes (bench/lib/client.ts uses the same). */
/** An upstream answer's raw headers for the proxy's own answer, without the hop-by-hop ones. */
export function answerHeaders(upRes: IncomingMessage): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < upRes.rawHeaders.length; i += 2) {
    const lk = upRes.rawHeaders[i]!.toLowerCase();
    if (lk === 'connection' || lk === 'keep-alive') continue;
    out.push(upRes.rawHeaders[i]!, upRes.rawHeaders[i + 1]!);
  }
  return out;
}

export function now(): number {
  return performance.timeOrigin + performance.now();
}

export interface Upstream {
  /** Through the link: what the proxies (and a direct pull) use. */
  url: string;
  /** The registry itself (seeding). */
  directUrl: string;
  dataDir: string;
  pid: number;
  /** Bytes per second shared by every response; null: unpaced. */
  setRate(bytesPerSecond: number | null): void;
  resetCounts(): void;
  records(): LinkRecord[];
  /** Body bytes sent since the last reset (responses still streaming included). */
  bytes(): number;
  stop(): Promise<void>;
}

const SLICE = 64 * 1024;

/** One shared pipe: each slice reserves the next free slot of the link, FIFO. */
class LinkPacer {
  rate: number | null = null;
  private next = 0;

  /** Resolves when `n` more bytes may go out; null when no waiting is needed. */
  take(n: number): Promise<void> | null {
    if (this.rate === null) return null;
    const now = performance.now();
    const start = Math.max(now, this.next);
    this.next = start + (n / this.rate) * 1000;
    const wait = this.next - now;
    return wait > 1 ? new Promise((r) => setTimeout(r, wait)) : null;
  }
}

function registryConfig(port: number, storage: string): string {
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  cache:',
    '    blobdescriptor: inmemory',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(storage)}`,
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: stevedore-bench-upstream',
    '',
  ].join('\n');
}

export async function probe(url: string, ok: (status: number) => boolean = (s) => s === 200 || s === 401): Promise<boolean> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 1000);
  try {
    const res = await fetch(url, { signal: ctl.signal });
    await res.arrayBuffer();
    return ok(res.status);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts `docker-registry serve` with `config` (a function of the port) in `dir`, through the test
 * fixture (test/fixtures/registry.ts: a free port, retried when lost, until it answers /v2/).
 */
export async function startDockerRegistry(
  dir: string,
  name: string,
  config: (port: number) => string,
): Promise<{ child: ChildProcess; port: number; logFile: string }> {
  const logFile = path.join(dir, `${name}.log`);
  const { child, port } = await spawnDockerRegistry({ configPath: path.join(dir, `${name}.yml`), logFile, home: dir, config, name, timeoutMs: 20_000 });
  return { child, port, logFile };
}

export async function startUpstream(): Promise<Upstream> {
  const dir = await tmpDir(undefined, 'stevedore-bench-upstream-');
  const dataDir = path.join(dir, 'data');
  const { child, port } = await startDockerRegistry(dir, 'upstream', (p) => registryConfig(p, dataDir));
  const pacer = new LinkPacer();
  let records: LinkRecord[] = [];
  let total = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set<Socket>();

  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const rec: LinkRecord = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, bytes: 0, startedAt: now(), finishedAt: null };
    records.push(rec);
    const list = records;
    const headers: OutgoingHttpHeaders = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i]!;
      const lk = k.toLowerCase();
      if (lk === 'connection' || lk === 'keep-alive' || lk === 'proxy-connection') continue;
      const prev = headers[k];
      const v = req.rawHeaders[i + 1]!;
      headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
    }
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers, agent, setHost: false }, (upRes) => {
      rec.status = upRes.statusCode ?? 502;
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, answerHeaders(upRes));
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          const pump = async (): Promise<void> => {
            for (let off = 0; off < chunk.length; off += SLICE) {
              const slice = chunk.subarray(off, off + SLICE);
              const wait = pacer.take(slice.length);
              if (wait) await wait;
              rec.bytes += slice.length;
              if (list === records) total += slice.length;
              this.push(slice);
            }
          };
          pump().then(() => cb(), cb);
        },
      });
      pipeline(upRes, meter, res).then(() => {
        rec.finishedAt = now();
      }, () => {
        if (!res.destroyed) res.destroy();
      });
    });
    up.on('error', (e) => {
      if (rec.status === 0) rec.status = 502;
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`link: ${e.message}\n`);
      } else res.destroy();
    });
    req.pipe(up);
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const linkPort = (server.address() as AddressInfo).port;
  let stopped = false;
  return {
    url: `http://127.0.0.1:${linkPort}`,
    directUrl: `http://127.0.0.1:${port}`,
    dataDir,
    pid: child.pid!,
    setRate(r) {
      pacer.rate = r;
    },
    resetCounts() {
      records = [];
      total = 0;
    },
    records: () => records,
    bytes: () => total,
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      agent.destroy();
      await stopProcess(child, 'SIGTERM', 5000);
      await removeDir(dir);
    },
  };
}
