// An upstream whose tag list never ends (or whose pages are huge) costs stevedore a bounded amount
// of memory and requests: the list is capped in tags and bytes (cache.tagsListMaxTags,
// cache.tagsListMaxBytes), fetching stops when the client leaves, and shutdown stops it.
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import t from 'tap';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { notFound, sendJson, sleep, startFake, type Fake } from '../fixtures/fake-upstream.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const UP = 'tags.test';
const tagsUrl = (base: string, repo = 'r'): string => `${base}/v2/${repo}/tags/list?ns=${UP}`;
const pages = (fake: Fake): number => fake.count('GET', /\/tags\/list/);

/** Page `k` of an endless list: `perPage` tags, and a Link to page k+1 (until `lastPage`). */
function sendPage(res: ServerResponse, url: URL, opts: { perPage: number; lastPage?: number; padding?: number }): void {
  const k = Number(url.searchParams.get('page') ?? '0');
  const tags = Array.from({ length: opts.perPage }, (_, i) => `p${k}-t${i}`);
  const headers: Record<string, string> = {};
  if (opts.lastPage === undefined || k < opts.lastPage) headers.link = `</v2/r/tags/list?page=${k + 1}>; rel="next"`;
  if (!opts.padding) return sendJson(res, 200, { name: 'r', tags }, headers);
  // Valid JSON made large with whitespace.
  const body = Buffer.from(`{"name":"r","tags":${JSON.stringify(tags)}${' '.repeat(opts.padding)}}`);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

function startProxy(tt: Parameters<typeof startStevedore>[0], url: string, config?: Record<string, unknown>): Promise<Stevedore> {
  return startStevedore(tt, { upstreams: { [UP]: { url } }, defaultUpstream: null, ...(config ? { config } : {}) });
}

t.test('a tag list longer than cache.tagsListMaxTags is refused with 502 naming the limit, and no page past it is fetched', async (t) => {
  const fake = await startFake(t, (_req, res, url) => (url.pathname === '/v2/r/tags/list' ? sendPage(res, url, { perPage: 1000 }) : notFound(res)));
  const sd = await startProxy(t, fake.url, { cache: { tagsListMaxTags: 5000 } });
  const r = await rawRequest(tagsUrl(sd.url), { timeoutMs: 60_000 });
  t.equal(r.status, 502);
  const e = ociErrors(r)?.[0];
  t.equal(e?.code, 'UPSTREAM_UNAVAILABLE');
  t.match(e?.message ?? '', /cache\.tagsListMaxTags/, 'the message names the setting');
  t.match(e?.message ?? '', /5000/, 'and the limit');
  t.ok(pages(fake) <= 6, `at most 6 pages of 1000 tags fetched (${pages(fake)})`);
});

t.test('a tag list larger than cache.tagsListMaxBytes is refused with 502 naming the limit, and no page past it is fetched', async (t) => {
  const fake = await startFake(t, (_req, res, url) =>
    url.pathname === '/v2/r/tags/list' ? sendPage(res, url, { perPage: 1, padding: 256 * 1024 }) : notFound(res),
  );
  const sd = await startProxy(t, fake.url, { cache: { tagsListMaxBytes: '1MiB' } });
  const r = await rawRequest(tagsUrl(sd.url), { timeoutMs: 60_000 });
  t.equal(r.status, 502);
  t.match(ociErrors(r)?.[0]?.message ?? '', /cache\.tagsListMaxBytes/, 'the message names the setting');
  t.ok(pages(fake) <= 5, `at most 5 pages of 256 KiB fetched (${pages(fake)})`);
});

t.test('a tag list within the limits is served whole, every page fetched once', async (t) => {
  const fake = await startFake(t, (_req, res, url) =>
    url.pathname === '/v2/r/tags/list' ? sendPage(res, url, { perPage: 100, lastPage: 4 }) : notFound(res),
  );
  const sd = await startProxy(t, fake.url, { cache: { tagsListMaxTags: 500 } });
  const r = await rawRequest(tagsUrl(sd.url));
  t.equal(r.status, 200);
  const doc = JSON.parse(r.body.toString('utf8')) as { tags: string[] };
  t.equal(doc.tags.length, 500, 'all 5 pages of 100 tags');
  t.equal(pages(fake), 5, 'five upstream pages');
});

t.test('fetching tag list pages stops when the client hangs up', async (t) => {
  const fake = await startFake(t, async (_req, res, url) => {
    if (url.pathname !== '/v2/r/tags/list') return notFound(res);
    await sleep(100);
    sendPage(res, url, { perPage: 1 });
  });
  const sd = await startProxy(t, fake.url);
  // The client gives up after a second (rawRequest destroys its request and rejects).
  await t.rejects(rawRequest(tagsUrl(sd.url), { timeoutMs: 1_000 }), /timed out/);
  await sleep(500); // the page in flight when it left may still be answered
  const atLeave = pages(fake);
  t.ok(atLeave >= 3, `pages were being fetched while the client waited (${atLeave})`);
  await sleep(2_000);
  t.equal(pages(fake), atLeave, 'no page requested after the client left');
  const line = sd.requestLogs().find((l) => String(l.path).includes('/tags/list'));
  t.equal(line?.status, 499, 'logged as a client that closed the request');
});

t.test('closing the app stops fetching tag list pages for a client still waiting', async (t) => {
  const fake = await startFake(t, async (_req, res, url) => {
    if (url.pathname !== '/v2/r/tags/list') return notFound(res);
    await sleep(100);
    sendPage(res, url, { perPage: 1 });
  });
  const sd = await startProxy(t, fake.url);
  const waiting = rawRequest(tagsUrl(sd.url), { timeoutMs: 30_000 }).catch((err: Error) => err);
  await sleep(800);
  const started = Date.now();
  await sd.app.close(500);
  const closeMs = Date.now() - started;
  t.ok(closeMs < 5_000, `close() returned in ${closeMs} ms (grace 500 ms)`);
  await waiting;
  await sleep(300);
  const atClose = pages(fake);
  await sleep(1_500);
  t.equal(pages(fake), atClose, 'no page requested after close');
});

/** Peak resident memory of a process (VmHWM), in MiB. */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

t.test('one anonymous request for a hostile tag list grows the process\'s peak RSS by less than 128 MiB', async (t) => {
  // 300 pages of 20,000 tags (6 million, ~90 MB of JSON) unless something stops stevedore first.
  const fake = await startFake(t, (_req, res, url) =>
    url.pathname === '/v2/r/tags/list' ? sendPage(res, url, { perPage: 20_000, lastPage: 299 }) : notFound(res),
  );
  const p = await spawnStevedore(t, { defaultUpstream: null, upstreams: { [UP]: { url: fake.url } }, storage: { path: `${await tmpDir(t, 'stevedore-tags-')}/data` } });
  const before = peakRssMiB(p.pid);
  const r = await rawRequest(tagsUrl(p.url), { timeoutMs: 120_000 });
  const peak = peakRssMiB(p.pid);
  t.comment(`peak RSS ${before.toFixed(0)} MiB at start, ${peak.toFixed(0)} MiB after the request; ${pages(fake)} pages fetched; status ${r.status}`);
  t.equal(r.status, 502, 'refused: above the default cache.tagsListMaxTags');
  t.ok(pages(fake) <= 6, `at most 6 pages fetched (${pages(fake)})`);
  // Before the caps the same request took the process from ~280 MiB to ~1.8 GiB (and 8.4 GiB with
  // 1,000 pages); a start-up peak of a few hundred MiB is the TypeScript loader's, not ours.
  t.ok(peak - before < 128, `peak RSS grew by ${(peak - before).toFixed(0)} MiB, less than 128 MiB`);
  await p.kill('SIGTERM');
});
