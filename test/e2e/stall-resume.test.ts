// An upstream that stops sending in the middle of a blob, its connection open, is noticed after
// timeouts.stall (30 s by default: well before the 120 s idle timeout, and before a kubelet gives
// up after 60 s without progress), and the download resumes with Range: the client gets every byte.
import t from 'tap';
import { rawRequest } from '../fixtures/http-client.js';
import { notFound, sendFrom, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import { pseudoRandom, sha256 } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';

const UP = 'stall.test';

t.test('with the default timeouts, a blob body that stalls mid-way is resumed with Range once 30 s passed without progress, and the client gets every byte', async (t) => {
  const data = pseudoRandom('stall-resume', 256 * 1024);
  const digest = sha256(data);
  const half = 100 * 1024;
  let stalledAt = 0;
  let resumedAt = 0;
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${digest}`) return notFound(res);
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (!m) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      await writeAndWait(res, data.subarray(0, half));
      stalledAt = Date.now(); // then nothing, the connection open
      return;
    }
    resumedAt = Date.now();
    sendFrom(res, data, Number(m[1]));
  });
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null });
  t.equal(sd.config.timeouts.idle, 120_000, 'the idle timeout is the default 120 s');
  // A kubelet gives up after 60 s without progress: so does this client.
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${digest}?ns=${UP}`, { timeoutMs: 60_000 }).catch((err: Error) => err);
  t.ok(!(r instanceof Error), `the client got an answer before giving up (${r instanceof Error ? r.message : 'ok'})`);
  if (r instanceof Error) return;
  t.equal(r.status, 200);
  t.ok(r.complete && r.body.equals(data), 'every byte, exactly');
  const detectMs = resumedAt - stalledAt;
  t.comment(`stall noticed and resumed after ${detectMs} ms`);
  t.ok(resumedAt > 0 && detectMs <= 40_000, `resumed ${detectMs} ms after the stall (default timeouts.stall: 30 s)`);
  t.match(String(fake.requests.filter((q) => q.method === 'GET')[1]?.headers.range), /^bytes=\d+-$/, 'the resume asked for the rest with Range');
});
