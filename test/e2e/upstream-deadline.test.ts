// Upstream requests other than blob bodies (manifests, HEADs, tag lists with all their pages,
// tokens) have an overall deadline, timeouts.request: an upstream that keeps answering slowly
// cannot hold a client, or stevedore's memory, past it.
import t from 'tap';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { notFound, sendJson, sleep, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import { buildDockerImage } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';

const UP = 'deadline.test';

t.test('a manifest whose body trickles past timeouts.request is answered 504 UPSTREAM_TIMEOUT naming the setting', async (t) => {
  const img = buildDockerImage('deadline/manifest', { layers: 1 });
  const fake = await startFake(t, async (_req, res, url) => {
    if (url.pathname !== '/v2/r/manifests/v1') return notFound(res, 'MANIFEST_UNKNOWN');
    res.writeHead(200, { 'content-type': img.manifest.mediaType, 'content-length': String(img.manifest.size) });
    for (let at = 0; at < img.manifest.size; at++) {
      if (!(await writeAndWait(res, img.manifest.data.subarray(at, at + 1)))) return;
      await sleep(200); // never silent long enough for the idle timeout
    }
    res.end();
  });
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null, config: { timeouts: { request: '2s', idle: '1s' } } });
  const started = Date.now();
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`, { timeoutMs: 60_000 });
  const ms = Date.now() - started;
  t.equal(r.status, 504);
  const e = ociErrors(r)?.[0];
  t.equal(e?.code, 'UPSTREAM_TIMEOUT');
  t.match(e?.message ?? '', /timeouts\.request/, 'the message names the setting');
  t.ok(ms < 8_000, `answered in ${ms} ms (deadline 2 s)`);
});

t.test('a tag list whose pages keep coming is answered 504 UPSTREAM_TIMEOUT after timeouts.request, and its pages stop', async (t) => {
  const fake = await startFake(t, async (_req, res, url) => {
    if (url.pathname !== '/v2/r/tags/list') return notFound(res);
    const k = Number(url.searchParams.get('page') ?? '0');
    await sleep(250);
    sendJson(res, 200, { name: 'r', tags: [`t${k}`] }, { link: `</v2/r/tags/list?page=${k + 1}>; rel="next"` });
  });
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null, config: { timeouts: { request: '2s' } } });
  const started = Date.now();
  const r = await rawRequest(`${sd.url}/v2/r/tags/list?ns=${UP}`, { timeoutMs: 60_000 });
  const ms = Date.now() - started;
  t.equal(r.status, 504);
  t.equal(ociErrors(r)?.[0]?.code, 'UPSTREAM_TIMEOUT');
  t.ok(ms < 8_000, `answered in ${ms} ms (deadline 2 s)`);
  await sleep(500);
  const pages = fake.count('GET', /\/tags\/list/);
  await sleep(1_000);
  t.equal(fake.count('GET', /\/tags\/list/), pages, 'no page requested after the answer');
});
