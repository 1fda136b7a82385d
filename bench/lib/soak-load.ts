/**
 * The soak's load (scenario "soak", bench/scenarios/s13-soak.ts), run inside the load-generator
 * process (client.ts: jobs soak-start, soak-window, soak-stop). Until stopped, at once:
 *
 *   - warm:    `connections` loops, one keep-alive connection each, GET a warm blob (hashed: the
 *              body must be the digest's bytes, whole), a manifest by tag or a manifest by digest
 *              (hashed: the body must be the manifest's digest, and Docker-Content-Digest too),
 *              `pauseMs` between two requests of a loop; latency request → last byte;
 *   - hangups: raw sockets that reset (RST) at every stage — part of the request sent, inside the
 *              answer's head, mid-body — on a big warm blob, a manifest and the newest cold blob
 *              (test/fixtures/hangup.ts);
 *   - range:   valid and invalid Range headers on a warm blob: each answer's status as
 *              blob-response.ts defines it, and every 206/200 body byte for byte;
 *   - hostile: the malformed names, digests, references and ns of test/e2e/bad-input.test.ts (their
 *              status and OCI error code) and malformed requests over raw sockets (oversized,
 *              smuggling, bad bytes, no Host: any 4xx);
 *   - cold:    a new image pushed to the upstream registry (directly, not through stevedore) every
 *              round, then pulled through stevedore by `coldClients` clients at once (manifest by
 *              tag and by digest, config, layers: every body hashed), one more client resetting
 *              mid-body on its largest layer; the previous round's image pulled again. Stevedore
 *              reaches the upstream through the soak's fault proxy: resets, stalls and 429s make
 *              cold pulls fail now and then — counted, never a wrong byte.
 *
 * A body that arrives whole and is not the digest's bytes, or a 206 with other bytes than the
 * range's, is a "wrong" answer: the scenario fails on any. An error (a refused connection, a cut
 * body, a 5xx) is counted per window; an answer to a Range or hostile request with another status
 * than expected is "unexpected" (counted, with examples).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { hangUp, requestHead } from '../../test/fixtures/hangup.js';
import { buildImage, MANIFEST_ACCEPT, type ImageSpec } from './data.js';
import { pushImage } from './registry-api.js';
import { percentile, prng } from './stats.js';

export interface SoakBlob {
  path: string;
  digest: string;
  size: number;
}

export interface SoakManifest {
  path: string;
  digest: string;
}

export interface SoakStartJob {
  kind: 'soak-start';
  /** The stevedore processes (cluster: one per replica); loop i uses origins[i mod n]. */
  origins: string[];
  /** The upstream registry itself: where the cold images are pushed. */
  upstreamDirect: string;
  /** The repository of the cold images (pulled through stevedore under the same name). */
  coldRepo: string;
  warmBlobs: SoakBlob[];
  /** By tag and by digest. */
  warmManifests: SoakManifest[];
  /** A big warm blob for the clients that hang up mid-body. */
  hangupBlob: SoakBlob;
  /** A warm blob for the Range requests (fetched and verified first, kept in memory). */
  rangeBlob: SoakBlob;
  /** A valid manifest path and a valid blob digest of the warm set: the hostile cases are built around them. */
  hostileBase: { repo: string; tag: string; blobDigest: string; manifestDigest: string };
  connections: number;
  pauseMs: number;
  hangupEveryMs: number;
  hangupsAtOnce: number;
  rangeLoops: number;
  rangePauseMs: number;
  hostileEveryMs: number;
  coldPauseMs: number;
  coldClients: number;
  coldLayers: number[];
  /** Distinct cold images cycled through (0: a new one every round); pushed the first time only. */
  coldImages: number;
  seed: number;
}

export interface SoakWindowStats {
  warm: { ok: number; errors: number; byKind: Record<string, number>; p50Ms: number; p99Ms: number; maxMs: number; bytes: number };
  hangups: { total: number; byStage: Record<string, number> };
  range: { ok: number; unexpected: number; errors: number };
  hostile: { ok: number; unexpected: number; errors: number };
  cold: { pulls: number; ok: number; failed: number; repulls: number; repullsOk: number; images: number; pushFailed: number; cycled: number };
  /** Whole bodies with wrong bytes (the scenario fails on any). */
  wrong: string[];
  /** Examples (at most 8 each). */
  errorSamples: string[];
  unexpectedSamples: string[];
}

function emptyStats(): SoakWindowStats {
  return {
    warm: { ok: 0, errors: 0, byKind: {}, p50Ms: NaN, p99Ms: NaN, maxMs: NaN, bytes: 0 },
    hangups: { total: 0, byStage: {} },
    range: { ok: 0, unexpected: 0, errors: 0 },
    hostile: { ok: 0, unexpected: 0, errors: 0 },
    cold: { pulls: 0, ok: 0, failed: 0, repulls: 0, repullsOk: 0, images: 0, pushFailed: 0, cycled: 0 },
    wrong: [],
    errorSamples: [],
    unexpectedSamples: [],
  };
}

/** Up to 3 examples per kind of error (the message's first word: warm, cold, Range, …), 16 in all. */
const sample = (list: string[], msg: string): void => {
  const kind = msg.slice(0, msg.indexOf(' ') + 1);
  if (list.length < 16 && list.filter((m) => m.startsWith(kind)).length < 3) list.push(msg.slice(0, 300));
};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: number;
  digest: string;
  body: Buffer | null;
  ms: number;
}

/** One GET; the body hashed (sha256) as it arrives, kept when `keep`. Rejects on a cut body. */
function get(agent: Agent, origin: string, path: string, headers: Record<string, string>, keep: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let status = 0;
    let bytes = 0;
    let resHeaders: Record<string, string | string[] | undefined> = {};
    agent.dispatch(
      { origin, path, method: 'GET', headers, headersTimeout: 120_000, bodyTimeout: 120_000 },
      {
        onRequestStart() {},
        onResponseStart(_c, s, h) {
          status = s;
          resHeaders = h as Record<string, string | string[] | undefined>;
        },
        onResponseData(_c, chunk) {
          bytes += chunk.length;
          hash.update(chunk);
          if (keep) chunks.push(chunk);
        },
        onResponseEnd() {
          resolve({ status, headers: resHeaders, bytes, digest: `sha256:${hash.digest('hex')}`, body: keep ? Buffer.concat(chunks) : null, ms: performance.now() - t0 });
        },
        onResponseError(_c, err) {
          reject(err);
        },
      },
    );
  });
}

const header = (h: Record<string, string | string[] | undefined>, k: string): string | undefined => {
  const v = h[k];
  return Array.isArray(v) ? v[0] : v;
};

/** What a Range case expects (blob-response.ts): 206 with [start, end], 200 whole, or 416. */
type RangeCase = { range: string; status: 206; start: number; end: number } | { range: string; status: 200 | 416 };

function rangeCases(size: number, rand: () => number): RangeCase[] {
  const a = Math.floor(rand() * (size - 1));
  const b = a + Math.floor(rand() * (size - a));
  return [
    { range: 'bytes=0-99', status: 206, start: 0, end: 99 },
    { range: 'bytes=0-0', status: 206, start: 0, end: 0 },
    { range: `bytes=${a}-${b}`, status: 206, start: a, end: b },
    { range: `bytes=${a}-`, status: 206, start: a, end: size - 1 },
    { range: 'bytes=-100', status: 206, start: size - 100, end: size - 1 },
    { range: `bytes=-${size * 2}`, status: 206, start: 0, end: size - 1 },
    { range: `bytes=5-${size * 10}`, status: 206, start: 5, end: size - 1 },
    { range: 'Bytes= 0-9, 5-19', status: 206, start: 0, end: 19 },
    { range: 'bytes=0-9,100-109', status: 200 },
    { range: `bytes=${size}-`, status: 416 },
    { range: `bytes=${size + 10}-${size + 20}`, status: 416 },
    { range: 'bytes=9-5', status: 416 },
    { range: 'bytes=-0', status: 416 },
    { range: 'lines=1-2', status: 416 },
    { range: 'bytes=abc', status: 416 },
    { range: 'bytes=1-2-3', status: 416 },
    { range: 'bytes=', status: 416 },
    { range: `bytes=${'9'.repeat(40)}-`, status: 416 },
  ];
}

/** The hostile requests answered by path (bad-input.test.ts's list, without the cases that need the upstream's own address). */
function hostilePaths(base: SoakStartJob['hostileBase']): Array<{ method: string; path: string; status: number; code: string; or?: [number, string] }> {
  const { repo, blobDigest, manifestDigest } = base;
  const hex = blobDigest.slice('sha256:'.length);
  const m = (name: string, ref = base.tag): string => `/v2/${name}/manifests/${ref}`;
  const b = (name: string, digest = blobDigest): string => `/v2/${name}/blobs/${digest}`;
  const G = 'GET';
  return [
    { method: G, path: m('Library/alpine'), status: 400, code: 'NAME_INVALID' },
    { method: G, path: b(repo.replace(/^./, (c) => c.toUpperCase())), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(`${repo}/../x`), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m('../../etc/passwd'), status: 400, code: 'NAME_INVALID' },
    { method: G, path: b(`${repo}/..`), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(`${repo}/%2e%2e/x`), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(repo.replace('/', '%2F')), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(repo.replace('/', '//')), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(`${repo}/`), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m('a'.repeat(256)), status: 400, code: 'NAME_INVALID' },
    { method: G, path: m(repo, 'sha256:short'), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, 'sha256:short'), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, 'md5:d41d8cd98f00b204e9800998ecf8427e'), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, `sha256:${hex.toUpperCase()}`), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: m(repo, `sha256:${manifestDigest.slice(7).toUpperCase()}`), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, `SHA256:${hex}`), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, `sha256:${hex.slice(1)}`), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: b(repo, 'latest'), status: 400, code: 'DIGEST_INVALID' },
    { method: G, path: m(repo, '-bad'), status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: G, path: m(repo, '.bad'), status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: G, path: m(repo, 'a'.repeat(129)), status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: G, path: `${m(repo)}?ns=evil.com`, status: 404, code: 'NAME_UNKNOWN' },
    { method: G, path: `${b(repo)}?ns=evil.com`, status: 404, code: 'NAME_UNKNOWN' },
    { method: G, path: `${m(repo)}?ns=`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: `${m(repo)}?ns=evil.com%2F..%2Fx`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: `${m(repo)}?ns=user%40evil.com`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: `${m(repo)}?ns=http%3A%2F%2Fevil.com`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: `${m(repo)}?ns=DOCKER.IO`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: `${m(repo)}?ns=docker.io%00.evil.com`, status: 400, code: 'NAME_INVALID' },
    { method: G, path: m('evil.com/x'), status: 404, code: 'NAME_UNKNOWN' },
    { method: G, path: m('localhost:5000/x'), status: 404, code: 'NAME_UNKNOWN' },
    // 405 without a push configuration (bad-input.test.ts); with the default `push`, a DELETE needs a user: 403.
    { method: 'DELETE', path: m(repo, manifestDigest), status: 405, code: 'UNSUPPORTED', or: [403, 'DENIED'] },
    { method: 'DELETE', path: b(repo), status: 405, code: 'UNSUPPORTED', or: [403, 'DENIED'] },
    { method: G, path: '/v2/_catalogue', status: 404, code: 'NOT_FOUND' },
    { method: G, path: `/v2/${repo}/manifests/`, status: 404, code: 'NOT_FOUND' },
    { method: G, path: `${m(repo)}/`, status: 404, code: 'NOT_FOUND' },
    { method: G, path: `/v2/${repo}/whatever/v1`, status: 404, code: 'NOT_FOUND' },
    { method: G, path: '/v1/search?q=alpine', status: 404, code: 'NOT_FOUND' },
  ];
}

/** Malformed requests over a raw socket: any 4xx answer (Node's parser or stevedore) is right. */
function hostileRaw(base: SoakStartJob['hostileBase']): Array<{ what: string; bytes: Buffer }> {
  const p = `/v2/${base.repo}/manifests/${base.tag}`;
  const B = (s: string): Buffer => Buffer.from(s, 'latin1');
  return [
    { what: 'a 20 KiB header', bytes: B(`GET ${p} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`) },
    { what: 'no Host header', bytes: B(`GET ${p} HTTP/1.1\r\nAccept: */*\r\n\r\n`) },
    { what: 'Content-Length and Transfer-Encoding', bytes: B(`GET ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`) },
    { what: 'two Content-Lengths', bytes: B(`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`) },
    { what: 'a NUL in the path', bytes: B(`GET /v2/a\u0000b/manifests/x HTTP/1.1\r\nHost: x\r\n\r\n`) },
    { what: 'a control byte in a header value', bytes: B(`GET ${p} HTTP/1.1\r\nHost: x\r\nAccept: a\u0001b\r\n\r\n`) },
    { what: 'a space in a header name', bytes: B(`GET ${p} HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n`) },
    { what: 'an unknown HTTP version', bytes: B(`GET ${p} HTTP/7.3\r\nHost: x\r\n\r\n`) },
    { what: 'a garbage request line', bytes: B('\u00ff\u00fe GARBAGE\r\n\r\n') },
    { what: 'an absolute URI to elsewhere', bytes: B(`GET http://evil.com${p} HTTP/1.1\r\nHost: evil.com\r\n\r\n`) },
    { what: 'a path without leading slash', bytes: B('GET v2/ HTTP/1.1\r\nHost: x\r\n\r\n') },
    { what: 'a negative Content-Length', bytes: B(`PUT ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n`) },
    { what: 'a bad chunk size', bytes: B(`PUT ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n`) },
  ];
}

/** Sends `bytes` and returns the status of the first answer (0: none within 10 s or closed without one); rejects when it cannot connect. */
function rawStatus(port: number, host: string, bytes: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    let got = '';
    let connected = false;
    const done = (s: number): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(s);
    };
    const timer = setTimeout(() => done(0), 10_000);
    sock.on('error', (err) => {
      if (connected) done(Number(/^HTTP\/1\.[01] (\d{3})/.exec(got)?.[1] ?? 0));
      else {
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.on('close', () => done(Number(/^HTTP\/1\.[01] (\d{3})/.exec(got)?.[1] ?? 0)));
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got);
      if (m) done(Number(m[1]));
    });
    sock.on('connect', () => {
      connected = true;
      sock.write(bytes);
    });
  });
}

class Soak {
  private stats = emptyStats();
  private lat: number[] = [];
  private stopping = false;
  private readonly loops: Array<Promise<void>> = [];
  private readonly rand: () => number;
  private rangeData: Buffer | null = null;
  /** The newest cold layer (a hang-up target while it may still be downloading). */
  private newestCold: { path: string; size: number } | null = null;
  private readonly agents: Agent[] = [];

  constructor(private readonly job: SoakStartJob) {
    this.rand = prng(job.seed);
  }

  private agent(connections: number): Agent {
    const a = new Agent({ connections, pipelining: 1, keepAliveTimeout: 30_000 });
    this.agents.push(a);
    return a;
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.rand() * items.length)]!;
  }

  private origin(i: number): string {
    return this.job.origins[i % this.job.origins.length]!;
  }

  private async pause(ms: number): Promise<void> {
    // In slices, so that stop() is not held up by a long pause.
    const end = performance.now() + ms;
    while (!this.stopping && performance.now() < end) await sleep(Math.max(1, Math.min(250, end - performance.now())));
  }

  async start(): Promise<void> {
    const j = this.job;
    // The Range blob, verified once and kept.
    const first = this.agent(1);
    const r = await get(first, this.origin(0), j.rangeBlob.path, {}, true);
    if (r.status !== 200 || r.digest !== j.rangeBlob.digest) throw new Error(`soak: the range blob answered ${r.status} with ${r.bytes} bytes of ${r.digest}`);
    this.rangeData = r.body;
    const warm = this.agent(Math.max(1, Math.ceil(j.connections / j.origins.length)));
    for (let i = 0; i < j.connections; i++) this.loops.push(this.warmLoop(warm, i));
    this.loops.push(this.hangupLoop());
    const range = this.agent(j.rangeLoops);
    for (let i = 0; i < j.rangeLoops; i++) this.loops.push(this.rangeLoop(range, i));
    this.loops.push(this.hostileLoop());
    this.loops.push(this.coldLoop());
  }

  window(): SoakWindowStats {
    const s = this.stats;
    const lat = this.lat;
    this.stats = emptyStats();
    this.lat = [];
    s.warm.p50Ms = percentile(lat, 50);
    s.warm.p99Ms = percentile(lat, 99);
    s.warm.maxMs = lat.length ? lat.reduce((a, b) => Math.max(a, b), 0) : NaN;
    return s;
  }

  async stop(): Promise<SoakWindowStats> {
    this.stopping = true;
    // A cold pull in a stall can take a while: do not wait for it forever.
    await Promise.race([Promise.allSettled(this.loops), sleep(90_000)]);
    const s = this.window();
    await Promise.allSettled(this.agents.map((a) => a.destroy()));
    return s;
  }

  private async warmLoop(agent: Agent, i: number): Promise<void> {
    const j = this.job;
    const origin = this.origin(i);
    while (!this.stopping) {
      const kind = this.rand() < 0.5 ? 'blob' : 'manifest';
      const s = this.stats;
      try {
        if (kind === 'blob') {
          const b = this.pick(j.warmBlobs);
          const a = await get(agent, origin, b.path, {}, false);
          if (a.status !== 200) throw new Error(`GET ${b.path}: ${a.status}`);
          if (a.digest !== b.digest || a.bytes !== b.size) s.wrong.push(`warm blob ${b.path} from ${origin}: ${a.bytes} bytes of ${a.digest}`);
          s.warm.ok++;
          s.warm.bytes += a.bytes;
          s.warm.byKind.blob = (s.warm.byKind.blob ?? 0) + 1;
          this.lat.push(a.ms);
        } else {
          const m = this.pick(j.warmManifests);
          const a = await get(agent, origin, m.path, { accept: MANIFEST_ACCEPT }, false);
          if (a.status !== 200) throw new Error(`GET ${m.path}: ${a.status}`);
          const dcd = header(a.headers, 'docker-content-digest');
          if (a.digest !== m.digest || dcd !== m.digest) s.wrong.push(`warm manifest ${m.path} from ${origin}: body ${a.digest}, Docker-Content-Digest ${dcd}, expected ${m.digest}`);
          const k = m.path.includes('/manifests/sha256:') ? 'manifest by digest' : 'manifest by tag';
          s.warm.ok++;
          s.warm.bytes += a.bytes;
          s.warm.byKind[k] = (s.warm.byKind[k] ?? 0) + 1;
          this.lat.push(a.ms);
        }
      } catch (err) {
        s.warm.errors++;
        sample(s.errorSamples, `warm ${kind} on ${origin}: ${(err as Error).message}`);
        // A replica that is down (cluster): do not spin.
        await this.pause(200);
      }
      if (j.pauseMs > 0) await this.pause(j.pauseMs);
    }
  }

  private async hangupLoop(): Promise<void> {
    const j = this.job;
    let n = 0;
    while (!this.stopping) {
      await this.pause(j.hangupEveryMs);
      if (this.stopping) break;
      const round = Array.from({ length: j.hangupsAtOnce }, () => {
        const origin = new URL(this.origin(n++));
        const port = Number(origin.port);
        const targets: Array<{ what: string; path: string; size: number; headers?: Record<string, string> }> = [
          { what: 'warm blob', path: j.hangupBlob.path, size: j.hangupBlob.size },
          { what: 'manifest', path: j.warmManifests[0]!.path, size: 512, headers: { Accept: MANIFEST_ACCEPT } },
          ...(this.newestCold ? [{ what: 'cold blob', ...this.newestCold }] : []),
        ];
        const t = this.pick(targets);
        const stage = this.pick(['request', 'head', 'body'] as const);
        const head = requestHead('GET', t.path, t.headers ? { headers: t.headers } : {});
        const opts =
          stage === 'request'
            ? { afterSent: 1 + Math.floor(this.rand() * (head.length - 1)) }
            : stage === 'head'
              ? { afterReceived: 1 + Math.floor(this.rand() * 100) }
              : { afterReceived: 600 + Math.floor(this.rand() * Math.max(1, t.size - 1)) };
        const key = `${t.what}, ${stage}`;
        this.stats.hangups.total++;
        this.stats.hangups.byStage[key] = (this.stats.hangups.byStage[key] ?? 0) + 1;
        return hangUp(port, [head], { ...opts, reset: true, timeoutMs: 15_000 });
      });
      await Promise.all(round);
    }
  }

  private async rangeLoop(agent: Agent, i: number): Promise<void> {
    const j = this.job;
    const data = this.rangeData!;
    const origin = this.origin(i);
    while (!this.stopping) {
      for (const c of rangeCases(data.length, this.rand)) {
        if (this.stopping) break;
        const s = this.stats;
        try {
          const a = await get(agent, origin, j.rangeBlob.path, { range: c.range }, true);
          const body = a.body!;
          if (a.status !== c.status) {
            s.range.unexpected++;
            sample(s.unexpectedSamples, `Range "${c.range.slice(0, 60)}": ${a.status}, expected ${c.status}`);
          } else if (c.status === 206) {
            const want = data.subarray(c.start, c.end + 1);
            const cr = header(a.headers, 'content-range');
            if (!body.equals(want)) s.wrong.push(`Range "${c.range}" on ${j.rangeBlob.path}: ${body.length} bytes, not bytes ${c.start}-${c.end}`);
            else if (cr !== `bytes ${c.start}-${c.end}/${data.length}`) {
              s.range.unexpected++;
              sample(s.unexpectedSamples, `Range "${c.range}": Content-Range ${cr}`);
            } else s.range.ok++;
          } else if (c.status === 200) {
            if (a.digest !== j.rangeBlob.digest) s.wrong.push(`Range "${c.range}" answered 200 with ${body.length} bytes of ${a.digest}`);
            else s.range.ok++;
          } else s.range.ok++;
        } catch (err) {
          s.range.errors++;
          sample(s.errorSamples, `Range "${c.range.slice(0, 60)}" on ${origin}: ${(err as Error).message}`);
          await this.pause(200);
        }
        await this.pause(j.rangePauseMs);
      }
    }
  }

  private async hostileLoop(): Promise<void> {
    const j = this.job;
    const paths = hostilePaths(j.hostileBase);
    const raws = hostileRaw(j.hostileBase);
    const agent = this.agent(1);
    let n = 0;
    while (!this.stopping) {
      await this.pause(j.hostileEveryMs);
      if (this.stopping) break;
      const origin = this.origin(n);
      const s = this.stats;
      const i = n++ % (paths.length + raws.length);
      try {
        if (i < paths.length) {
          const c = paths[i]!;
          const a = await new Promise<{ status: number; body: string }>((resolve, reject) => {
            let status = 0;
            const chunks: Buffer[] = [];
            agent.dispatch(
              { origin, path: c.path, method: c.method, headers: { accept: MANIFEST_ACCEPT }, headersTimeout: 30_000, bodyTimeout: 30_000 },
              {
                onRequestStart() {},
                onResponseStart(_c, st) {
                  status = st;
                },
                onResponseData(_c, chunk) {
                  chunks.push(chunk);
                },
                onResponseEnd() {
                  resolve({ status, body: Buffer.concat(chunks).toString('utf8') });
                },
                onResponseError(_c, err) {
                  reject(err);
                },
              },
            );
          });
          let code = '';
          try {
            code = String((JSON.parse(a.body) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code ?? '');
          } catch {
            code = `(not JSON: ${a.body.slice(0, 60)})`;
          }
          if ((a.status === c.status && code === c.code) || (c.or && a.status === c.or[0] && code === c.or[1])) s.hostile.ok++;
          else {
            s.hostile.unexpected++;
            sample(s.unexpectedSamples, `${c.method} ${c.path.slice(0, 80)}: ${a.status} ${code}, expected ${c.status} ${c.code}`);
          }
        } else {
          const c = raws[i - paths.length]!;
          const u = new URL(origin);
          const status = await rawStatus(Number(u.port), u.hostname, c.bytes);
          if (status >= 400 && status < 500) s.hostile.ok++;
          else {
            s.hostile.unexpected++;
            sample(s.unexpectedSamples, `${c.what}: ${status === 0 ? 'no answer' : status}, expected a 4xx`);
          }
        }
      } catch (err) {
        s.hostile.errors++;
        sample(s.errorSamples, `hostile #${i} on ${origin}: ${(err as Error).message}`);
      }
    }
  }

  /** One client's pull of `img` (tag `tag`) from `origin`: every body hashed. Throws on an error; wrong bytes go to `wrong`. */
  private async pullImage(agent: Agent, origin: string, img: ImageSpec, tag: string): Promise<void> {
    const j = this.job;
    const s = this.stats;
    const byTag = await get(agent, origin, `/v2/${j.coldRepo}/manifests/${tag}`, { accept: MANIFEST_ACCEPT }, false);
    if (byTag.status !== 200) throw new Error(`manifest ${tag}: ${byTag.status}`);
    if (byTag.digest !== img.manifestDigest) s.wrong.push(`cold manifest ${j.coldRepo}:${tag} from ${origin}: ${byTag.digest}, expected ${img.manifestDigest}`);
    const byDigest = await get(agent, origin, `/v2/${j.coldRepo}/manifests/${img.manifestDigest}`, { accept: MANIFEST_ACCEPT }, false);
    if (byDigest.status !== 200) throw new Error(`manifest ${img.manifestDigest}: ${byDigest.status}`);
    if (byDigest.digest !== img.manifestDigest) s.wrong.push(`cold manifest by digest ${img.manifestDigest} from ${origin}: ${byDigest.digest}`);
    const blobs = [{ digest: img.configDigest, size: img.config.length }, ...img.layers];
    await Promise.all(
      blobs.map(async (b) => {
        const a = await get(agent, origin, `/v2/${j.coldRepo}/blobs/${b.digest}`, {}, false);
        if (a.status !== 200) throw new Error(`blob ${b.digest.slice(0, 19)}: ${a.status}`);
        if (a.digest !== b.digest || a.bytes !== b.size) s.wrong.push(`cold blob ${b.digest} from ${origin}: ${a.bytes} of ${b.size} bytes, ${a.digest}`);
      }),
    );
  }

  private async coldLoop(): Promise<void> {
    const j = this.job;
    const agent = this.agent(j.coldClients * 4 + 4);
    let prev: { img: ImageSpec; tag: string } | null = null;
    for (let n = 0; !this.stopping; n++) {
      // Round n pulls image n mod coldImages: pushed when first used, pulled again each cycle.
      const slot = j.coldImages > 0 ? n % j.coldImages : n;
      const tag = `c${j.seed}-${slot}`;
      const img = buildImage(`soak/${j.seed}/cold/${slot}`, j.coldLayers);
      try {
        if (slot === n) {
          await pushImage(j.upstreamDirect, j.coldRepo, tag, img);
          this.stats.cold.images++;
        } else {
          this.stats.cold.cycled++;
        }
      } catch (err) {
        this.stats.cold.pushFailed++;
        sample(this.stats.errorSamples, `push of cold image ${tag}: ${(err as Error).message}`);
        await this.pause(j.coldPauseMs);
        continue;
      }
      const biggest = img.layers.reduce((a, b) => (b.size > a.size ? b : a));
      this.newestCold = { path: `/v2/${j.coldRepo}/blobs/${biggest.digest}`, size: biggest.size };
      const pulls = Array.from({ length: j.coldClients }, async (_, i) => {
        const origin = this.origin(n + i);
        const s = this.stats;
        s.cold.pulls++;
        try {
          await this.pullImage(agent, origin, img, tag);
          s.cold.ok++;
        } catch (err) {
          s.cold.failed++;
          sample(s.errorSamples, `cold pull ${tag} from ${origin}: ${(err as Error).message}`);
        }
      });
      // One more client leaves the largest layer mid-body while it downloads.
      const leaver = (async () => {
        await sleep(20);
        const u = new URL(this.origin(n + j.coldClients));
        this.stats.hangups.total++;
        this.stats.hangups.byStage['cold blob while it downloads, body'] = (this.stats.hangups.byStage['cold blob while it downloads, body'] ?? 0) + 1;
        await hangUp(Number(u.port), [requestHead('GET', this.newestCold!.path)], { afterReceived: 600 + Math.floor(this.rand() * biggest.size), reset: true, timeoutMs: 15_000 });
      })();
      const again = prev
        ? (async (p) => {
            const s = this.stats;
            s.cold.repulls++;
            try {
              await this.pullImage(agent, this.origin(n + 1), p.img, p.tag);
              s.cold.repullsOk++;
            } catch (err) {
              sample(s.errorSamples, `re-pull ${p.tag}: ${(err as Error).message}`);
            }
          })(prev)
        : Promise.resolve();
      await Promise.all([...pulls, leaver, again]);
      prev = { img, tag };
      await this.pause(j.coldPauseMs);
    }
  }
}

let current: Soak | null = null;

export async function soakStart(job: SoakStartJob): Promise<{ started: true }> {
  if (current) throw new Error('a soak is already running');
  const s = new Soak(job);
  await s.start();
  current = s;
  return { started: true };
}

export function soakWindow(): SoakWindowStats {
  if (!current) throw new Error('no soak running');
  return current.window();
}

export async function soakStop(): Promise<SoakWindowStats> {
  if (!current) throw new Error('no soak running');
  const s = current;
  current = null;
  return s.stop();
}
