/**
 * The soak's fault proxy: a pass-through in front of the upstream (the link of upstream.ts, then
 * the real `docker-registry`) that does what a real registry will not on demand. It is the test
 * fixture's programmable server (test/fixtures/fake-upstream.ts, `startFake`) forwarding every
 * request, and, while faults are on, for a share of them:
 *
 *   - reset:      the connection is reset before the answer's head, or after a random share of a
 *                 blob's body (stevedore resumes a blob download with Range, or fails the request);
 *   - stall:      a blob's body stops for `stallMs` after a random share of it (beyond stevedore's
 *                 `timeouts.stall`: its stall path; shorter: it just waits), a manifest's head waits;
 *   - corrupt:    one byte of a blob's body changed (its length kept): wrong bytes, which stevedore
 *                 must never pass on as a whole answer (it verifies the digest before a last byte);
 *   - 429 window: for a while every request is answered 429 TOOMANYREQUESTS with Retry-After
 *                 (stevedore's cool-down: nothing to the upstream until it passes).
 *
 * Decisions come from a seeded generator (the soak's seed): a run can be repeated.
 */
import http, { type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sendJson, startFake, type Fake } from '../../test/fixtures/fake-upstream.js';
import { prng } from './stats.js';
import { answerHeaders } from './upstream.js';

export interface FaultPolicy {
  /** Share of blob GETs reset before the head / mid-body; share stalled mid-body. */
  blobResetBeforeHead: number;
  blobResetMidBody: number;
  blobStall: number;
  /** Share of blob GETs whose body has one byte changed mid-way (length kept): an upstream or middlebox sending wrong bytes. */
  blobCorrupt: number;
  /** Share of manifest GET/HEADs reset before the head, and delayed (head) by `stallMs`. */
  manifestReset: number;
  manifestStall: number;
  /** How long a stall lasts: uniform in [min, max] ms. */
  stallMs: [number, number];
}

export interface FaultCounts {
  requests: number;
  passed: number;
  resetBeforeHead: number;
  resetMidBody: number;
  stalls: number;
  corrupted: number;
  tooManyRequests: number;
}

export interface FaultProxy {
  url: string;
  /** Faults on (the policy) or off (a plain pass-through). */
  setFaults(on: boolean): void;
  /** Every request is answered 429 with `Retry-After: retryAfterS` for the next `ms`. */
  window429(ms: number, retryAfterS: number): void;
  /** What it did since the last call, then zeroes it. */
  take(): FaultCounts;
  stop(): Promise<void>;
}

const zero = (): FaultCounts => ({ requests: 0, passed: 0, resetBeforeHead: 0, resetMidBody: 0, stalls: 0, corrupted: 0, tooManyRequests: 0 });

interface Fault {
  headDelayMs: number;
  cutAt: number | null;
  stallAt: number | null;
  corruptAt: number | null;
  stallMs: number;
}

export async function startFaultProxy(target: string, policy: FaultPolicy, seed: number): Promise<FaultProxy> {
  const rand = prng(seed);
  const t = new URL(target);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const teardowns: Array<() => unknown> = [];
  let faults = false;
  let tooManyUntil = 0;
  let retryAfter = 1;
  let counts = zero();
  let fake: Fake | null = null;

  const forward = (req: IncomingMessage, res: ServerResponse, fault: Fault): void => {
    const headers: OutgoingHttpHeaders = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const lk = req.rawHeaders[i]!.toLowerCase();
      if (lk === 'connection' || lk === 'keep-alive' || lk === 'host') continue;
      headers[req.rawHeaders[i]!] = req.rawHeaders[i + 1]!;
    }
    const up = http.request({ host: t.hostname, port: Number(t.port), method: req.method, path: req.url, headers, agent }, (upRes) => {
      const go = (): void => {
        if (res.destroyed) {
          upRes.destroy();
          return;
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, answerHeaders(upRes));
        let sent = 0;
        let cut = false;
        const shaper = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            // After the cut nothing more goes out (the reset follows): a gap, then more bytes, is no fault a real network makes.
            if (cut) {
              cb();
              return;
            }
            const from = sent;
            sent += chunk.length;
            if (fault.cutAt !== null && sent > fault.cutAt) {
              const keep = Math.max(0, fault.cutAt - from);
              if (keep > 0) this.push(chunk.subarray(0, keep));
              fault.cutAt = null;
              cut = true;
              counts.resetMidBody++;
              // Let what was pushed go out, then reset the connection.
              setTimeout(() => res.socket?.resetAndDestroy(), 5);
              cb();
              return;
            }
            if (fault.corruptAt !== null && sent > fault.corruptAt) {
              const copy = Buffer.from(chunk);
              const i = fault.corruptAt - from;
              copy[i] = copy[i]! ^ 0xff;
              fault.corruptAt = null;
              counts.corrupted++;
              cb(null, copy);
              return;
            }
            if (fault.stallAt !== null && sent > fault.stallAt) {
              fault.stallAt = null;
              counts.stalls++;
              // The chunk that crosses `stallAt` waits (what came before it went out).
              setTimeout(() => cb(null, chunk), fault.stallMs);
              return;
            }
            cb(null, chunk);
          },
        });
        pipeline(upRes, shaper, res).catch(() => {
          if (!res.destroyed) res.destroy();
        });
      };
      if (fault.headDelayMs > 0) setTimeout(go, fault.headDelayMs);
      else go();
    });
    up.on('error', (e) => {
      if (!res.headersSent) sendJson(res, 502, { errors: [{ code: 'UNKNOWN', message: `fault proxy: ${e.message}` }] });
      else res.destroy();
    });
    req.pipe(up);
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
  };

  fake = await startFake({ teardown: (fn) => teardowns.push(fn) }, (req, res) => {
    counts.requests++;
    // The fixture records every request: keep only the last few (a soak runs for hours).
    if (fake && fake.requests.length > 1000) fake.requests.splice(0, fake.requests.length - 100);
    const now = Date.now();
    if (now < tooManyUntil) {
      counts.tooManyRequests++;
      sendJson(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'fault proxy: a 429 window' }] }, { 'retry-after': String(retryAfter) });
      return;
    }
    const stallMs = policy.stallMs[0] + rand() * (policy.stallMs[1] - policy.stallMs[0]);
    const fault: Fault = { headDelayMs: 0, cutAt: null, stallAt: null, corruptAt: null, stallMs };
    if (faults && req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')) {
      const r = rand();
      if (r < policy.blobResetBeforeHead) {
        counts.resetBeforeHead++;
        req.socket.resetAndDestroy();
        return;
      }
      // Where in the body: the size is not known before the head, so a share of a typical layer.
      const at = Math.floor(rand() * 1024 * 1024);
      if (r < policy.blobResetBeforeHead + policy.blobResetMidBody) fault.cutAt = at;
      else if (r < policy.blobResetBeforeHead + policy.blobResetMidBody + policy.blobStall) fault.stallAt = at;
      else if (r < policy.blobResetBeforeHead + policy.blobResetMidBody + policy.blobStall + policy.blobCorrupt) fault.corruptAt = Math.floor(rand() * 16 * 1024);
    } else if (faults && /\/manifests\//.test(req.url ?? '')) {
      const r = rand();
      if (r < policy.manifestReset) {
        counts.resetBeforeHead++;
        req.socket.resetAndDestroy();
        return;
      }
      if (r < policy.manifestReset + policy.manifestStall) {
        counts.stalls++;
        fault.headDelayMs = stallMs;
      }
    }
    if (fault.cutAt === null && fault.stallAt === null && fault.corruptAt === null && fault.headDelayMs === 0) counts.passed++;
    forward(req, res, fault);
  });
  return {
    url: fake.url,
    setFaults(on) {
      faults = on;
    },
    window429(ms, retryAfterS) {
      tooManyUntil = Date.now() + ms;
      retryAfter = retryAfterS;
    },
    take() {
      const c = counts;
      counts = zero();
      return c;
    },
    async stop() {
      for (const fn of teardowns) await fn();
      agent.destroy();
    },
  };
}
