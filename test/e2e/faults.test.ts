// Faults a real registry will not produce on demand, from a small programmable upstream written
// here (node:http on 127.0.0.1:0): wrong bytes, truncated bodies, lying digests, oversized
// manifests, redirects to a CDN behind Bearer auth, error statuses, a closed port, slow bodies
// many clients wait for at once, and Range requests.
import type { ServerResponse } from 'node:http';
import t from 'tap';
import { buildDockerImage, makeBlob, pseudoRandom, sha256, type Blob } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { freePort, waitFor, type Teardownable } from '../fixtures/util.js';
import { sendJson, sendManifest, sleep, startFake, type FakeHandler } from '../fixtures/fake-upstream.js';

const UP = 'fault.test';

/** Sends `data` in `parts` writes, `delayMs` apart, after the head (Content-Length = declared). */
async function sendSlowly(
  res: ServerResponse,
  data: Buffer,
  opts: { parts: number; delayMs: number; status?: number; headers?: Record<string, string>; declared?: number },
): Promise<void> {
  res.writeHead(opts.status ?? 200, {
    'content-type': 'application/octet-stream',
    'content-length': String(opts.declared ?? data.length),
    ...opts.headers,
  });
  res.flushHeaders();
  const step = Math.ceil(data.length / opts.parts);
  for (let off = 0; off < data.length; off += step) {
    await sleep(opts.delayMs);
    if (res.destroyed) return;
    res.write(data.subarray(off, off + step));
  }
  if (opts.declared === undefined || opts.declared === data.length) res.end();
}

// ---------------------------------------------------------------------------------------------
// Helpers on the stevedore side

function startProxy(t: Teardownable, upstreamUrl: string, config?: Record<string, unknown>): Promise<Stevedore> {
  return startStevedore(t, { upstreams: { [UP]: { url: upstreamUrl } }, defaultUpstream: null, ...(config ? { config } : {}) });
}

const blobUrl = (sd: Stevedore, digest: string, repo = 'r'): string => `${sd.url}/v2/${repo}/blobs/${digest}?ns=${UP}`;
const manifestUrl = (sd: Stevedore, ref: string, repo = 'r'): string => `${sd.url}/v2/${repo}/manifests/${ref}?ns=${UP}`;

/** Files under blobs/, tmp/ and repositories/ once every download has settled. */
async function settledFiles(sd: Stevedore): Promise<{ blobs: string[]; tmp: string[]; repositories: string[] }> {
  await sd.app.pull.drain();
  const files = await sd.storeFiles();
  return {
    blobs: files.filter((f) => f.startsWith('blobs/')),
    tmp: files.filter((f) => f.startsWith('tmp/')),
    repositories: files.filter((f) => f.startsWith('repositories/')),
  };
}

function blobFile(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

/** Waits until the blob is in the store and linked to repository `r`. */
async function waitStored(sd: Stevedore, digest: string, repo = 'r'): Promise<void> {
  const link = `repositories/${UP}/${repo}/_links/sha256/${digest.slice('sha256:'.length)}`;
  await waitFor(`${digest} stored and linked`, async () => {
    const files = await sd.storeFiles();
    return files.includes(blobFile(digest)) && files.includes(link);
  }, 10_000);
}

type Tap = Pick<typeof t, 'equal' | 'ok' | 'match' | 'same' | 'notOk'>;

/** Asserts an OCI error answer: status, code, and a JSON body. Returns the first error. */
function assertOciError(tt: Tap, r: RawResponse, status: number, code: string): { code: string; message: string } | undefined {
  tt.equal(r.status, status, `status ${status}`);
  tt.match(String(r.headers['content-type']), /^application\/json/, 'JSON body');
  const errors = ociErrors(r);
  tt.ok(errors && errors.length >= 1, `an OCI error document: ${r.body.toString('utf8').slice(0, 300)}`);
  tt.equal(errors?.[0]?.code, code, `code ${code}`);
  return errors?.[0];
}

// ---------------------------------------------------------------------------------------------

t.test('blob bytes that do not verify', async (t) => {
  const good = pseudoRandom('faults/wrong-bytes/good', 96 * 1024);
  const bad = pseudoRandom('faults/wrong-bytes/bad', good.length);
  const digest = sha256(good);

  await t.test('a blob whose bytes do not match its digest fails the client transfer and is not stored', async (t) => {
    const fake = await startFake(t, async (req, res, url) => {
      if (url.pathname === `/v2/r/blobs/${digest}`) return sendSlowly(res, bad, { parts: 3, delayMs: 10 });
      sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
    });
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(blobUrl(sd, digest));
    t.notOk(r.status === 200 && r.complete, `the answer is not a complete 200 (status ${r.status}, ${r.body.length} of ${good.length} bytes, error: ${r.error?.message})`);
    t.notOk(r.complete && r.body.equals(bad), 'the wrong bytes never arrive as a whole body');
    const files = await settledFiles(sd);
    t.same(files.blobs, [], 'nothing under blobs/');
    t.same(files.tmp, [], 'no temp file left under tmp/');
    t.same(files.repositories, [], 'no link under repositories/');
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET');

    const again = await rawRequest(blobUrl(sd, digest));
    t.notOk(again.status === 200 && again.complete, 'the second answer fails too');
    t.equal(fake.count('GET', /\/blobs\//), 2, 'the second request went to the upstream again');
    const after = await settledFiles(sd);
    t.same([...after.blobs, ...after.tmp], [], 'still nothing stored');
  });

  await t.test('clients that hang up while such a download runs leave nothing stored and the proxy serving', async (t) => {
    // The download fails its digest after every client but one has gone: the senders that stopped
    // listening must not see that failure as an unhandled rejection (tap fails the file if they do).
    const fake = await startFake(t, async (req, res, url) => {
      if (url.pathname === `/v2/r/blobs/${digest}`) return sendSlowly(res, bad, { parts: 8, delayMs: 30 });
      sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
    });
    const sd = await startProxy(t, fake.url);
    const cuts = [1, 4096, 20_000, 50_000, 90_000].map((n) => rawRequest(blobUrl(sd, digest), { abortAfterBytes: n }));
    const stayer = rawRequest(blobUrl(sd, digest));
    await Promise.all(cuts);
    const r = await stayer;
    t.notOk(r.complete && r.body.equals(bad), 'the client that stayed never gets the wrong bytes as a whole body');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp], [], 'nothing stored, no temp file');
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET for all of them');
    t.equal((await rawRequest(`${sd.url}/v2/`)).status, 200, 'the proxy still answers');
  });
});

t.test('truncated blob bodies', async (t) => {
  const data = pseudoRandom('faults/truncated', 128 * 1024);
  const digest = sha256(data);
  const half = 50 * 1024;

  await t.test('a blob body cut short by the upstream fails the client transfer and is not stored', async (t) => {
    const fake = await startFake(t, async (_req, res, url) => {
      if (url.pathname !== `/v2/r/blobs/${digest}`) return sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
      // Declares every byte, sends fewer, then drops the connection.
      await sendSlowly(res, data.subarray(0, half), { parts: 2, delayMs: 10, declared: data.length });
      await sleep(20);
      res.socket?.destroy();
    });
    const sd = await startProxy(t, fake.url, { cache: { downloadResumes: 0 } });
    const r = await rawRequest(blobUrl(sd, digest));
    t.notOk(r.status === 200 && r.complete, `the answer is not a complete 200 (status ${r.status}, ${r.body.length} bytes, error: ${r.error?.message})`);
    t.ok(r.body.length < data.length, 'fewer bytes than the blob arrived');
    t.ok(data.subarray(0, r.body.length).equals(r.body), 'what arrived is a prefix of the blob');
    const files = await settledFiles(sd);
    t.same(files.blobs, [], 'nothing under blobs/');
    t.same(files.tmp, [], 'no temp file left under tmp/');
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET (resumes switched off)');
  });

  await t.test('a blob body cut short is resumed with Range and the client gets every byte', async (t) => {
    let calls = 0;
    const fake = await startFake(t, async (req, res, url) => {
      if (url.pathname !== `/v2/r/blobs/${digest}`) return sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
      calls++;
      const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
      if (calls === 1 || !m) {
        await sendSlowly(res, data.subarray(0, half), { parts: 2, delayMs: 10, declared: data.length });
        await sleep(20);
        res.socket?.destroy();
        return;
      }
      const from = Number(m[1]);
      await sendSlowly(res, data.subarray(from), {
        parts: 2,
        delayMs: 10,
        status: 206,
        headers: { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` },
      });
    });
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(blobUrl(sd, digest));
    t.equal(r.status, 200);
    t.ok(r.complete, 'complete transfer');
    t.ok(r.body.equals(data), 'exact bytes');
    t.equal(fake.count('GET', /\/blobs\//), 2, 'two upstream GETs');
    const resume = fake.requests.filter((q) => q.method === 'GET')[1];
    t.match(String(resume?.headers.range), /^bytes=[1-9]\d*-$/, 'the second asked for the rest with Range');
    await waitStored(sd, digest);
    t.same((await settledFiles(sd)).tmp, [], 'no temp file left');
  });

  // The resume answer is unusable: 206 whose Content-Range starts elsewhere than asked, or
  // announces another total size. The download must fail cleanly, and the proxy keep serving.
  const badResumes: Array<[string, (from: number) => string]> = [
    ['starts at another offset than asked', (from) => `bytes ${from + 1}-${data.length - 1}/${data.length}`],
    ['announces another total size', (from) => `bytes ${from}-${data.length}/${data.length + 1}`],
  ];
  for (const [what, contentRange] of badResumes) {
    await t.test(`a resume whose Content-Range ${what} fails the client transfer, stores nothing, and the proxy keeps serving`, async (t) => {
      let calls = 0;
      const fake = await startFake(t, async (req, res, url) => {
        if (url.pathname !== `/v2/r/blobs/${digest}`) return sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
        calls++;
        const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
        if (calls === 1 || !m) {
          await sendSlowly(res, data.subarray(0, half), { parts: 2, delayMs: 10, declared: data.length });
          await sleep(20);
          res.socket?.destroy();
          return;
        }
        const from = Number(m[1]);
        await sendSlowly(res, data.subarray(from), { parts: 2, delayMs: 10, status: 206, headers: { 'content-range': contentRange(from) } });
      });
      const sd = await startProxy(t, fake.url, { cache: { downloadResumes: 1 } });
      const r = await rawRequest(blobUrl(sd, digest));
      t.notOk(r.status === 200 && r.complete, `the answer is not a complete 200 (status ${r.status}, ${r.body.length} bytes, error: ${r.error?.message})`);
      t.equal(fake.count('GET', /\/blobs\//), 2, 'the first GET and one resume');
      const files = await settledFiles(sd);
      t.same([...files.blobs, ...files.tmp], [], 'nothing stored, no temp file left');
      const ping = await rawRequest(`${sd.url}/v2/`);
      t.equal(ping.status, 200, 'the proxy still answers');
    });
  }
});

t.test('manifests that do not verify', async (t) => {
  const img = buildDockerImage('faults/manifest', { layers: 1 });
  const other = buildDockerImage('faults/manifest-other', { layers: 1 });

  await t.test('a manifest by digest whose bytes do not match is refused with 502 MANIFEST_INVALID and not stored', async (t) => {
    const fake = await startFake(t, (_req, res, url) => {
      if (url.pathname === `/v2/r/manifests/${img.manifest.digest}`) {
        // Other bytes, claiming nothing about their digest.
        res.writeHead(200, { 'content-type': other.manifest.mediaType, 'content-length': String(other.manifest.size) });
        res.end(other.manifest.data);
        return;
      }
      sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] });
    });
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(manifestUrl(sd, img.manifest.digest));
    assertOciError(t, r, 502, 'MANIFEST_INVALID');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
    t.equal(fake.count('GET', /\/manifests\//), 1, 'asked the upstream once');
  });

  await t.test('a manifest by tag whose Docker-Content-Digest disagrees with its bytes is refused with 502 MANIFEST_INVALID and not stored', async (t) => {
    const fake = await startFake(t, (_req, res, url) => {
      if (url.pathname === '/v2/r/manifests/v1') return sendManifest(res, img.manifest, { 'docker-content-digest': other.manifest.digest });
      sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] });
    });
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(manifestUrl(sd, 'v1'));
    assertOciError(t, r, 502, 'MANIFEST_INVALID');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored: no manifest, no tag');
  });

  await t.test('a manifest above cache.manifestMaxSize (declared by Content-Length) is refused with an OCI error and not stored', async (t) => {
    const big = buildDockerImage('faults/big-manifest', { layers: 12, layerSize: 16 });
    t.ok(big.manifest.size > 1024, `the manifest is ${big.manifest.size} bytes`);
    const fake = await startFake(t, (_req, res, url) => {
      if (url.pathname === '/v2/r/manifests/v1') return sendManifest(res, big.manifest);
      sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] });
    });
    const sd = await startProxy(t, fake.url, { cache: { manifestMaxSize: '1KiB' } });
    const r = await rawRequest(manifestUrl(sd, 'v1'));
    t.equal(r.status, 502, 'status 502');
    const errors = ociErrors(r);
    t.ok(errors?.[0]?.code, `an OCI error document: ${r.body.toString('utf8').slice(0, 300)}`);
    t.match(errors?.[0]?.message ?? '', /manifestMaxSize/, 'the message names the limit');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });

  await t.test('a manifest above the default 4 MiB, sent chunked without Content-Length, is refused with an OCI error and not stored', async (t) => {
    // Valid JSON padded with whitespace past 4 MiB.
    const huge = Buffer.concat([img.manifest.data, Buffer.alloc(4 * 1024 * 1024 + 1, 0x20)]);
    const fake = await startFake(t, async (_req, res, url) => {
      if (url.pathname !== '/v2/r/manifests/v1') return sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] });
      res.writeHead(200, { 'content-type': img.manifest.mediaType, 'docker-content-digest': sha256(huge) });
      for (let off = 0; off < huge.length && !res.destroyed; off += 512 * 1024) {
        res.write(huge.subarray(off, off + 512 * 1024));
        await sleep(1);
      }
      if (!res.destroyed) res.end();
    });
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(manifestUrl(sd, 'v1'));
    t.equal(r.status, 502, 'status 502');
    const errors = ociErrors(r);
    t.ok(errors?.[0]?.code, `an OCI error document: ${r.body.toString('utf8').slice(0, 300)}`);
    t.match(errors?.[0]?.message ?? '', /manifestMaxSize/, 'the message names the limit');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });
});

t.test('redirects and Bearer tokens', async (t) => {
  const img = buildDockerImage('faults/redirect', { layers: 2 });
  const blobs = new Map<string, Blob>([img.config, ...img.layers].map((b) => [b.digest, b]));
  const tokenRequests: URLSearchParams[] = [];
  const cdn = await startFake(t, (_req, res, url) => {
    const m = /^\/cdn\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    const b = m && blobs.get(m[1]!);
    if (!b || url.searchParams.get('sig') !== 'signed') return sendJson(res, 404, { error: 'no such object' });
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(b.size) });
    res.end(b.data);
  });
  let upstreamUrl = '';
  const up = await startFake(t, (req, res, url) => {
    if (url.pathname === '/token') {
      tokenRequests.push(url.searchParams);
      return sendJson(res, 200, { token: 'abc', expires_in: 300 });
    }
    const repo = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(url.pathname)?.[1] ?? 'r';
    if (req.headers.authorization !== 'Bearer abc') {
      return sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
        'www-authenticate': `Bearer realm="${upstreamUrl}/token",service="x",scope="repository:${repo}:pull"`,
      });
    }
    if (url.pathname === `/v2/${repo}/manifests/v1`) return sendManifest(res, img.manifest);
    const m = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (m && blobs.has(m[1]!)) {
      res.writeHead(307, { location: `${cdn.url}/cdn/${m[1]}?sig=signed`, 'content-length': '0' });
      res.end();
      return;
    }
    sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
  });
  upstreamUrl = up.url;

  await t.test('a blob redirected to a CDN on another origin arrives byte for byte, with the token sent upstream and not to the CDN', async (t) => {
    const sd = await startProxy(t, up.url);
    const layer = img.layers[0]!;
    const r = await rawRequest(blobUrl(sd, layer.digest));
    t.equal(r.status, 200);
    t.ok(r.complete && r.body.equals(layer.data), 'exact bytes');
    t.equal(r.headers['docker-content-digest'], layer.digest);
    const cdnGets = cdn.requests.filter((q) => q.path.startsWith(`/cdn/${layer.digest}`));
    t.equal(cdnGets.length, 1, 'the CDN was asked once');
    t.equal(cdnGets[0]?.headers.authorization, undefined, 'the CDN request carried no Authorization header');
    const redirected = up.requests.filter((q) => q.method === 'GET' && q.path === `/v2/r/blobs/${layer.digest}` && q.headers.authorization !== undefined);
    t.equal(redirected.length, 1, 'the upstream blob request was authenticated once');
    t.equal(redirected[0]?.headers.authorization, 'Bearer abc', 'the upstream blob request carried Authorization: Bearer abc');
  });

  await t.test('one token request serves every request of a repository (tokens cached per scope)', async (t) => {
    tokenRequests.length = 0;
    const sd = await startProxy(t, up.url);
    const m = await rawRequest(manifestUrl(sd, 'v1'));
    t.equal(m.status, 200);
    t.ok(m.body.equals(img.manifest.data), 'manifest bytes');
    for (const b of [img.config, ...img.layers]) {
      const r = await rawRequest(blobUrl(sd, b.digest));
      t.equal(r.status, 200);
      t.ok(r.complete && r.body.equals(b.data), `blob ${b.digest.slice(0, 19)} bytes`);
    }
    t.equal(tokenRequests.length, 1, 'one token request for the manifest and three blobs');
    t.equal(tokenRequests[0]?.get('scope'), 'repository:r:pull', 'scope');
    t.equal(tokenRequests[0]?.get('service'), 'x', 'service from the challenge');
  });

  await t.test('another repository gets a token of its own scope', async (t) => {
    tokenRequests.length = 0;
    const sd = await startProxy(t, up.url);
    for (const repo of ['r', 'q']) {
      const r = await rawRequest(manifestUrl(sd, 'v1', repo));
      t.equal(r.status, 200, `manifest of ${repo}`);
      const again = await rawRequest(blobUrl(sd, img.config.digest, repo));
      t.equal(again.status, 200, `blob of ${repo}`);
    }
    t.same(
      tokenRequests.map((q) => q.get('scope')),
      ['repository:r:pull', 'repository:q:pull'],
      'one token per scope',
    );
  });
});

t.test('upstream errors become OCI errors', async (t) => {
  const digest = sha256('faults/errors/blob');

  await t.test('an upstream 404 for a manifest answers 404 MANIFEST_UNKNOWN', async (t) => {
    const fake = await startFake(t, (_req, res) => sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
    const sd = await startProxy(t, fake.url);
    assertOciError(t, await rawRequest(manifestUrl(sd, 'v1')), 404, 'MANIFEST_UNKNOWN');
    assertOciError(t, await rawRequest(manifestUrl(sd, sha256('faults/errors/m'))), 404, 'MANIFEST_UNKNOWN');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });

  await t.test('an upstream 404 for a blob answers 404 BLOB_UNKNOWN', async (t) => {
    const fake = await startFake(t, (_req, res) => {
      res.writeHead(404, { 'content-length': '0' });
      res.end();
    });
    const sd = await startProxy(t, fake.url);
    assertOciError(t, await rawRequest(blobUrl(sd, digest)), 404, 'BLOB_UNKNOWN');
    const head = await rawRequest(blobUrl(sd, digest), { method: 'HEAD' });
    t.equal(head.status, 404, 'HEAD: 404 too');
    t.equal(head.body.length, 0, 'HEAD: no body');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });

  await t.test('an upstream 500 answers 502 with a message naming the upstream', async (t) => {
    const fake = await startFake(t, (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/html' });
      res.end('<html>Internal Server Error: secret stack trace</html>');
    });
    const sd = await startProxy(t, fake.url);
    for (const url of [manifestUrl(sd, 'v1'), blobUrl(sd, digest)]) {
      const r = await rawRequest(url);
      const e = assertOciError(t, r, 502, 'UPSTREAM_UNAVAILABLE');
      t.match(e?.message ?? '', UP, 'the message names the upstream');
      t.notMatch(r.body.toString('utf8'), /secret stack trace/, 'the upstream body is not leaked');
    }
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });

  await t.test('an upstream 429 with Retry-After on a never-stored manifest answers 429 TOOMANYREQUESTS with Retry-After', async (t) => {
    const fake = await startFake(t, (_req, res) =>
      sendJson(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'You have reached your pull rate limit' }] }, { 'retry-after': '17' }),
    );
    const sd = await startProxy(t, fake.url);
    const r = await rawRequest(manifestUrl(sd, 'v1'));
    assertOciError(t, r, 429, 'TOOMANYREQUESTS');
    t.equal(r.headers['retry-after'], '17', 'Retry-After passed through');
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });

  await t.test('an upstream that refuses connections answers 502 naming the upstream, never a bare 500', async (t) => {
    const port = await freePort(); // closed again: connecting is refused
    const sd = await startProxy(t, `http://127.0.0.1:${port}`);
    for (const url of [manifestUrl(sd, 'v1'), manifestUrl(sd, sha256('faults/refused/m')), blobUrl(sd, digest)]) {
      const r = await rawRequest(url);
      const e = assertOciError(t, r, 502, 'UPSTREAM_UNAVAILABLE');
      t.match(e?.message ?? '', UP, 'the message names the upstream');
    }
    const files = await settledFiles(sd);
    t.same([...files.blobs, ...files.tmp, ...files.repositories], [], 'nothing stored');
  });
});

t.test('coalescing', async (t) => {
  const data = pseudoRandom('faults/coalesce', 256 * 1024);
  const digest = sha256(data);
  const slowBlob: FakeHandler = async (_req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${digest}`) return sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
    await sendSlowly(res, data, { parts: 8, delayMs: 40 });
  };

  await t.test('10 concurrent GETs of a cold blob cause exactly one upstream GET and each client gets the exact bytes', async (t) => {
    const fake = await startFake(t, slowBlob);
    const sd = await startProxy(t, fake.url);
    const answers = await Promise.all(Array.from({ length: 10 }, () => rawRequest(blobUrl(sd, digest))));
    for (const [i, r] of answers.entries()) {
      t.equal(r.status, 200, `client ${i}: 200`);
      t.ok(r.complete && r.body.equals(data), `client ${i}: exact bytes`);
    }
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET');
    await waitStored(sd, digest);
  });

  await t.test('a client that disconnects midway does not break the others, and the blob is still stored', async (t) => {
    const fake = await startFake(t, slowBlob);
    const sd = await startProxy(t, fake.url);
    const quitter = rawRequest(blobUrl(sd, digest), { abortAfterBytes: 40 * 1024 });
    const others = Array.from({ length: 5 }, () => rawRequest(blobUrl(sd, digest)));
    const q = await quitter;
    t.equal(q.error?.message, 'client aborted', 'the quitter left early');
    t.ok(q.body.length < data.length, 'the quitter got part of the blob');
    for (const [i, r] of (await Promise.all(others)).entries()) {
      t.equal(r.status, 200, `client ${i}: 200`);
      t.ok(r.complete && r.body.equals(data), `client ${i}: exact bytes`);
    }
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET');
    await waitStored(sd, digest);

    const before = fake.requests.length;
    const hit = await rawRequest(blobUrl(sd, digest));
    t.equal(hit.status, 200);
    t.equal(hit.headers['x-cache'], 'hit', 'X-Cache: hit');
    t.ok(hit.complete && hit.body.equals(data), 'exact bytes from the store');
    t.equal(fake.requests.length, before, 'no new upstream request');
  });
});

t.test('Range requests', async (t) => {
  const data = pseudoRandom('faults/range', 200 * 1024);
  const digest = sha256(data);
  const SIZE = data.length;
  const handler: FakeHandler = async (_req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${digest}`) return sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
    await sendSlowly(res, data, { parts: 5, delayMs: 40 });
  };
  const fake = await startFake(t, handler);
  const sd = await startProxy(t, fake.url);

  await t.test('a malformed Range answers 416 with an OCI error, and nothing is fetched', async (t) => {
    const r = await rawRequest(blobUrl(sd, digest), { headers: { range: 'lines=1-2' } });
    assertOciError(t, r, 416, 'RANGE_INVALID');
    t.equal(fake.requests.length, 0, 'no upstream request');
  });

  await t.test('a Range on a cold blob is served from the download in progress', async (t) => {
    const r = await rawRequest(blobUrl(sd, digest), { headers: { range: 'bytes=150000-150099' } });
    t.equal(r.status, 206);
    t.equal(r.headers['content-range'], `bytes 150000-150099/${SIZE}`);
    t.equal(r.headers['content-length'], '100');
    t.ok(r.complete && r.body.equals(data.subarray(150000, 150100)), 'those bytes');
    t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream GET');
    await waitStored(sd, digest);
  });

  await t.test('Range bytes=10-19 on a stored blob answers 206 with those bytes', async (t) => {
    const before = fake.requests.length;
    const r = await rawRequest(blobUrl(sd, digest), { headers: { range: 'bytes=10-19' } });
    t.equal(r.status, 206);
    t.equal(r.headers['content-range'], `bytes 10-19/${SIZE}`);
    t.equal(r.headers['content-length'], '10');
    t.equal(r.headers['x-cache'], 'hit');
    t.ok(r.complete && r.body.equals(data.subarray(10, 20)), 'those bytes');
    t.equal(fake.requests.length, before, 'no upstream request');
  });

  await t.test('a Range starting at the size answers 416 with Content-Range bytes */SIZE and an OCI error', async (t) => {
    const r = await rawRequest(blobUrl(sd, digest), { headers: { range: `bytes=${SIZE}-` } });
    assertOciError(t, r, 416, 'RANGE_INVALID');
    t.equal(r.headers['content-range'], `bytes */${SIZE}`);
  });
});

// A blob made of a real image is served whole after all the faults above (sanity of the fixtures).
t.test('the programmable upstream serves a good blob through stevedore', async (t) => {
  const b = makeBlob(pseudoRandom('faults/good', 10_000), 'application/octet-stream');
  const fake = await startFake(t, async (_req, res) => sendSlowly(res, b.data, { parts: 2, delayMs: 5 }));
  const sd = await startProxy(t, fake.url);
  const r = await rawRequest(blobUrl(sd, b.digest));
  t.equal(r.status, 200);
  t.ok(r.complete && r.body.equals(b.data), 'exact bytes');
  t.equal(r.headers['x-cache'], 'miss');
  await waitStored(sd, b.digest);
});
