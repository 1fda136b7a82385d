// An upstream that keeps a blob body alive with a byte now and then never trips the idle timeout
// (the silence between bytes is shorter): minimum progress (timeouts.minProgress per
// timeouts.stall) notices it, and the download resumes with Range. The window is shortened here to
// keep the test short; test/upstream/progress.test.ts drives the default (30 s, 16 KiB) against a
// 1-byte-every-5-s drip on a fake clock, and test/e2e/stall-resume.test.ts runs the default live.
import t from 'tap';
import { rawRequest } from '../fixtures/http-client.js';
import { notFound, sendFrom, sleep, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import { pseudoRandom, sha256 } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';

const UP = 'drip.test';

t.test('a blob body dripping 1 byte every 500 ms, never silent for the 2 s idle timeout, is given up after timeouts.stall and resumed with Range', async (t) => {
  const data = pseudoRandom('drip-resume', 256 * 1024);
  const digest = sha256(data);
  const head = 100 * 1024;
  let dripFrom = 0;
  let resumedAt = 0;
  let dripped = 0;
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${digest}`) return notFound(res);
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (!m) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      await writeAndWait(res, data.subarray(0, head));
      dripFrom = Date.now();
      for (let at = head; at < data.length; at++) {
        await sleep(500);
        if (!(await writeAndWait(res, data.subarray(at, at + 1)))) return;
        dripped++;
      }
      return;
    }
    resumedAt = Date.now();
    sendFrom(res, data, Number(m[1]));
  });
  const sd = await startStevedore(t, {
    upstreams: { [UP]: { url: fake.url } },
    defaultUpstream: null,
    config: { timeouts: { idle: '2s', stall: '4s' } },
  });
  t.equal(sd.config.timeouts.minProgress, 16 * 1024, 'the default minimum progress: 16 KiB per window');
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${digest}?ns=${UP}`, { timeoutMs: 30_000 }).catch((err: Error) => err);
  t.ok(!(r instanceof Error), `the client got its answer (${r instanceof Error ? r.message : 'ok'})`);
  if (r instanceof Error) return;
  t.equal(r.status, 200);
  t.ok(r.complete && r.body.equals(data), 'every byte, exactly');
  const detectMs = resumedAt - dripFrom;
  t.comment(`drip (${dripped} bytes) given up and resumed after ${detectMs} ms`);
  t.ok(dripped >= 4, `the drip kept the body alive past the idle timeout (${dripped} bytes)`);
  t.ok(resumedAt > 0 && detectMs >= 3_000 && detectMs <= 12_000, `resumed ${detectMs} ms after the drip began (timeouts.stall: 4 s)`);
});
