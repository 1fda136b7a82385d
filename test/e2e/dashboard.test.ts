// The dashboard at `/`: the page in headless Chromium after real pulls, the state it polls, who
// may see it and what each viewer is shown, and what it answers to requests it does not serve.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import type { DashboardState } from '../../lib/server/dashboard/dashboard.js';
import { launchChromium, openPage, screenshot } from '../fixtures/browser.js';
import { sendJson, sendManifest, sleep, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import { rawRequest } from '../fixtures/http-client.js';
import { buildDockerImage, buildOciImage, makeBlob, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { keyPair, pushCosignSig } from '../fixtures/signing.js';
import { skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

async function state(url: string, authorization?: string): Promise<DashboardState> {
  const res = await fetch(`${url}/ui/api/state`, authorization ? { headers: { authorization } } : {});
  if (res.status !== 200) throw new Error(`state: ${res.status} ${await res.text()}`);
  return (await res.json()) as DashboardState;
}

/**
 * The state once `settled` holds (or after 5 s, for the assertions to report): a client has its
 * last byte a moment before the server records its request, and a download's bytes are counted
 * once it is stored.
 */
async function stateWhen(url: string, settled: (st: DashboardState) => boolean, authorization?: string): Promise<DashboardState> {
  for (let i = 0; ; i++) {
    const st = await state(url, authorization);
    if (settled(st) || i === 100) return st;
    await sleep(50);
  }
}

t.test('in Chromium after a cold and a warm skopeo pull: the repository, a hit ratio above zero and the store size; a warm load under a second', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('dashboard/app', { layers: 2 });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { maxSize: '1GiB' } } });
  const host = sd.url.replace(/^http:\/\//, '');
  for (const round of ['cold', 'warm']) {
    const dest = await tmpDir(t);
    const r = await skopeoCopy(`docker://${host}/library/app:v1`, `dir:${dest}`);
    t.equal(r.code, 0, `${round} pull: ${r.stderr}`);
  }

  const browser = await launchChromium(t);
  const { page, problems } = await openPage(browser);
  await page.goto(`${sd.url}/`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });

  const top = await page.textContent('#top-pulls tbody');
  t.match(top, /docker\.io\/library\/app/, 'the pulled repository is in the top list');
  t.match(await page.textContent('#top-bytes tbody'), /docker\.io\/library\/app/);
  const ratio = Number((await page.textContent('#hit-ratio'))?.replace(/\s*%$/, ''));
  t.ok(ratio > 0 && ratio < 100, `hit ratio above zero (and not all hits after a cold pull): ${ratio} %`);

  const stats = sd.app.store.blobs.stats();
  const stored = stats.cachedBytes + stats.pinnedBytes;
  t.ok(stored >= img.layers.reduce((n, l) => n + l.size, 0), 'the store holds the layers');
  const layerBytes = img.layers.reduce((n, l) => n + l.size, 0);
  const st = await stateWhen(sd.url, (s) => s.hour.upstreamBytes >= layerBytes && s.hour.storeBytes > 0);
  t.equal(st.store.cachedBytes + st.store.pinnedBytes, stored, 'the state gives the store size the index has');
  t.equal(st.store.maxSize, 1024 ** 3);
  const shown = await page.textContent('#store-used');
  t.match(shown, / of 1\.00 GiB$/, `store used against its bound: ${shown}`);
  t.match(shown, stored < 1024 * 1024 ? /KiB of/ : /MiB of/, 'in the unit of its size');
  t.match(await page.textContent('#upstreams tbody'), /docker\.io.*ok/, 'the upstream is healthy');
  t.ok(st.hour.upstreamBytes >= img.layers.reduce((n, l) => n + l.size, 0), 'the cold pull fetched the layers upstream');
  t.ok(st.hour.storeBytes > 0, 'the warm pull was served from the store');
  t.equal(st.hour.buckets.length, 60, 'an hour of one-minute buckets');

  const file = await screenshot(page, 'dashboard');
  t.comment(`screenshot: ${file}`);

  // Warm server, page cached by ETag: from navigation to the first state drawn.
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    await page.goto(`${sd.url}/`);
    await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
    times.push(Date.now() - started);
  }
  times.sort((a, b) => a - b);
  t.comment(`page loads (ms): ${times.join(', ')}`);
  t.ok(times[1]! < 1000, `the page loads and shows its data in under a second (median ${times[1]} ms)`);
  t.same(problems, [], 'no script errors, no console errors (no CSP violation)');
});

t.test('a download in flight: its progress and the three clients following it, then the fetched bytes', async (t) => {
  const img = buildDockerImage('dashboard/slow', { layers: 1, layerSize: 256 * 1024 });
  const layer = img.layers[0]!;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    if (url.pathname.endsWith('/manifests/v1')) return sendManifest(res, img.manifest);
    if (url.pathname.endsWith(`/blobs/${layer.digest}`)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(layer.size) });
      await writeAndWait(res, layer.data.subarray(0, 64 * 1024));
      await released;
      res.end(layer.data.subarray(64 * 1024));
      return;
    }
    sendJson(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
  });
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: fake.url } } });
  await (await fetch(`${sd.url}/v2/library/slow/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } })).arrayBuffer();
  const clients = [0, 1, 2].map(() => fetch(`${sd.url}/v2/library/slow/blobs/${layer.digest}`).then(async (r) => Buffer.from(await r.arrayBuffer())));
  let st = await state(sd.url);
  for (let i = 0; i < 100 && (st.downloads.length !== 1 || st.downloads[0]!.followers !== 3 || st.downloads[0]!.written < 64 * 1024); i++) {
    await sleep(50);
    st = await state(sd.url);
  }
  t.equal(st.downloads.length, 1, 'one download');
  const d = st.downloads[0]!;
  t.equal(d.repository, 'docker.io/library/slow');
  t.equal(d.digest, layer.digest);
  t.equal(d.followers, 3, 'three clients follow it');
  t.equal(d.size, layer.size);
  t.equal(d.written, 64 * 1024, 'the bytes written so far');
  t.equal(d.attempts, 1);
  release();
  const bodies = await Promise.all(clients);
  for (const b of bodies) t.ok(b.equals(layer.data), 'each client got the layer');
  st = await stateWhen(sd.url, (s) => s.downloads.length === 0 && s.hour.upstreamBytes > 0);
  t.same(st.downloads, [], 'nothing in flight once it is stored');
  t.equal(st.hour.upstreamBytes, layer.size, 'fetched once, counted once');
  t.equal(fake.count('GET', /\/blobs\//), 1);
});

t.test('upstream health: an offline upstream, an open breaker, a cool-down and the quota remaining', async (t) => {
  const quota = await startFake(t, (_req, res, url) => {
    const headers = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '7;w=21600' };
    if (url.pathname.endsWith('/manifests/v1')) return sendJson(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] }, headers);
    sendJson(res, 200, {}, headers);
  });
  const limited = await startFake(t, (_req, res) => sendJson(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }, { 'retry-after': '600' }));
  const sd = await startStevedore(t, {
    upstreams: {
      'quota.example': { url: quota.url },
      'limited.example': { url: limited.url },
      'dead.example': { url: 'http://127.0.0.1:1' },
      'lab.example': { url: 'http://127.0.0.1:1', offline: true },
    },
    config: { upstreamPolicy: { breakerFailures: 1, breakerOpenFor: '10m' } },
  });
  for (const ns of ['quota.example', 'limited.example', 'dead.example', 'lab.example']) {
    await (await fetch(`${sd.url}/v2/team/app/manifests/v1?ns=${ns}`)).arrayBuffer();
  }
  const st = await state(sd.url);
  const of = (name: string): DashboardState['upstreams'][number]['sources'][number] => st.upstreams.find((u) => u.name === name)!.sources[0]!;
  t.equal(of('quota.example').state, 'ok');
  t.same(of('quota.example').health.quota, { remaining: 7, limit: 100, low: of('quota.example').health.quota?.low }, 'the quota remaining');
  t.equal(of('limited.example').state, 'cooling down');
  t.ok(of('limited.example').health.coolDown!.until > st.now + 500_000, 'cool-down for the Retry-After it was given');
  t.equal(of('dead.example').state, 'breaker open');
  t.equal(of('dead.example').health.breaker.failures, 1);
  t.equal(of('lab.example').state, 'offline');
  t.equal(limited.count('*', /./), 1, 'the cool-down kept further requests away');

  const browser = await launchChromium(t);
  const { page, problems } = await openPage(browser);
  await page.goto(`${sd.url}/`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
  const rows = await page.$$eval('#upstreams tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
  t.match(rows.find((r) => r.startsWith('quota.example')), /ok.*7 of 100/);
  t.match(rows.find((r) => r.startsWith('limited.example')), /cooling down.*rate-limited \(429\)/);
  t.match(rows.find((r) => r.startsWith('dead.example')), /breaker open/);
  t.match(rows.find((r) => r.startsWith('lab.example')), /offline/);
  t.match(await page.textContent('#errors tbody'), /UPSTREAM_UNAVAILABLE|TOOMANYREQUESTS/, 'the failures are among the recent errors');
  t.same(problems, []);
});

const USERS = { admin: 'adm1n-pw', alice: 'al1ce-pw' };
const basic = (u: keyof typeof USERS, pw: string = USERS[u]): string => `Basic ${Buffer.from(`${u}:${pw}`).toString('base64')}`;

t.test('without anonymous pull: a Basic challenge for browsers, and each user sees only the repositories it may pull', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  for (const name of ['open', 'secret']) await pushImage(reg.directUrl, `library/${name}`, 'v1', buildDockerImage(`dashboard/${name}`, { layers: 1 }));
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n'));
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: {
      auth: {
        htpasswd,
        anonymousPull: false,
        rules: [
          { repository: 'docker.io/library/open', users: ['alice'], actions: ['pull'] },
          { repository: '**', users: ['admin'], actions: ['pull'] },
        ],
      },
    },
  });

  for (const p of ['/', '/ui/api/state', '/ui/app.js']) {
    const r = await rawRequest(`${sd.url}${p}`);
    t.equal(r.status, 401, `${p} without credentials`);
    t.equal(r.headers['www-authenticate'], 'Basic realm="stevedore dashboard", charset="UTF-8"', 'a challenge a browser answers, in a realm of its own');
  }
  const wrong = await rawRequest(`${sd.url}/`, { headers: { authorization: basic('alice', 'nope') } });
  t.equal(wrong.status, 401, 'a wrong password');
  t.equal(wrong.headers['www-authenticate'], 'Basic realm="stevedore dashboard", charset="UTF-8"');

  for (const name of ['open', 'secret']) {
    const r = await fetch(`${sd.url}/v2/library/${name}/manifests/v1`, { headers: { authorization: basic('admin'), accept: MANIFEST_ACCEPT } });
    t.equal(r.status, 200);
    await r.arrayBuffer();
  }
  const missing = await fetch(`${sd.url}/v2/library/secret/manifests/nope`, { headers: { authorization: basic('admin'), accept: MANIFEST_ACCEPT } });
  t.equal(missing.status, 404);
  await missing.arrayBuffer();

  const admin = await stateWhen(sd.url, (s) => s.errors.length > 0, basic('admin'));
  t.equal(admin.viewer, 'admin');
  t.same(admin.topByPulls.map((r) => r.repository).sort(), ['docker.io/library/open', 'docker.io/library/secret']);
  t.ok(admin.errors.some((e) => e.repository === 'docker.io/library/secret' && e.code === 'MANIFEST_UNKNOWN'), "admin sees the 404 on secret");

  const alice = await state(sd.url, basic('alice'));
  t.equal(alice.viewer, 'alice');
  t.same(alice.topByPulls.map((r) => r.repository), ['docker.io/library/open']);
  t.notMatch(JSON.stringify(alice), /secret/, 'no trace of a repository alice may not pull');

  const page = await fetch(`${sd.url}/`, { headers: { authorization: basic('alice') } });
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html/);
});

t.test('text from requests stays text: markup in an error message is shown, never run', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { offline: true } });
  const hostile = '/v2/library/app/manifests/<img/src=x/onerror=document.title="pwned">';
  const r = await rawRequest(`${sd.url}${hostile}`);
  t.equal(r.status, 404, 'no endpoint there');
  t.match(r.body.toString(), /<img\/src=x/, 'its message quotes the path');
  const browser = await launchChromium(t);
  const { page, problems } = await openPage(browser);
  await page.goto(`${sd.url}/`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
  t.match(await page.textContent('#errors tbody'), /<img\/src=x\/onerror=/, 'the markup is shown as text');
  t.equal(await page.$$eval('#errors img', (imgs) => imgs.length), 0, 'no element was made from it');
  t.equal(await page.title(), 'stevedore');
  t.same(problems, []);
});

t.test('what the dashboard answers besides the page', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { offline: true } });

  const page = await rawRequest(`${sd.url}/`);
  t.equal(page.status, 200);
  t.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'self'/, 'only its own script runs');
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.equal(page.headers['cache-control'], 'no-cache');
  const etag = page.headers.etag as string;
  t.match(etag, /^"[A-Za-z0-9_-]{22}"$/);

  const again = await rawRequest(`${sd.url}/`, { headers: { 'if-none-match': etag } });
  t.equal(again.status, 304, 'unchanged: 304');
  t.equal(again.body.length, 0);

  const head = await rawRequest(`${sd.url}/ui/app.js`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.match(head.headers['content-type'], /^text\/javascript/);
  t.equal(head.body.length, 0);

  const ui = await rawRequest(`${sd.url}/ui`);
  t.equal(ui.status, 308);
  t.equal(ui.headers.location, '/');

  const post = await rawRequest(`${sd.url}/`, { method: 'POST', body: Buffer.from('x') });
  t.equal(post.status, 405);
  t.equal(post.headers.allow, 'GET, HEAD');
  t.equal(JSON.parse(post.body.toString()).errors[0].code, 'UNSUPPORTED');

  for (const p of ['/ui/nope', '/ui/../lib/server/app.ts', '/ui/%2e%2e/package.json', '/ui/api/state/x']) {
    const r = await rawRequest(`${sd.url}${p}`);
    t.equal(r.status, 404, p);
    t.equal(JSON.parse(r.body.toString()).errors[0].code, 'NOT_FOUND', p);
  }

  const st = await rawRequest(`${sd.url}/ui/api/state`);
  t.equal(st.headers['cache-control'], 'no-store');
  t.equal(JSON.parse(st.body.toString()).mode, 'single');
});

t.test('in Chromium, a signature policy in warn mode: the unsigned and the wrongly signed images it served are listed with digest, policy, reason, time and count', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const key = await keyPair(t, 'ec');
  const other = await keyPair(t, 'ec');
  const images = Object.fromEntries(['unsigned', 'wrong', 'signed'].map((n) => [n, buildOciImage(`dashboard/${n}`, { layers: 1, layerSize: 64 })]));
  for (const [name, img] of Object.entries(images)) await pushImage(reg.url, `lab/${name}`, 'v1', img);
  await pushCosignSig(reg.url, 'lab/wrong', images.wrong!.manifest.digest, other.privateKey);
  await pushCosignSig(reg.url, 'lab/signed', images.signed!.manifest.digest, key.privateKey);
  const sd = await startStevedore(t, {
    upstreams: { 'ghcr.io': { url: reg.url } },
    defaultUpstream: 'ghcr.io',
    config: { verify: { policies: [{ repository: 'ghcr.io/lab/**', mode: 'warn', keys: [key.publicKeyFile] }] } },
  });
  const before = Date.now();
  for (const [name, times] of [['unsigned', 3], ['wrong', 1], ['signed', 2]] as const) {
    for (let i = 0; i < times; i++) {
      const r = await rawRequest(`${sd.url}/v2/lab/${name}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
      t.equal(r.status, 200, `lab/${name} is served (warn)`);
    }
  }
  const st = await state(sd.url);
  const rows = [...st.unverified!].sort((a, b) => a.repository.localeCompare(b.repository));
  t.same(
    rows.map((u) => [u.repository, u.digest, u.policy, u.result, u.count]),
    [
      ['ghcr.io/lab/unsigned', images.unsigned!.manifest.digest, 'verify.policies[0] (ghcr.io/lab/**)', 'unsigned', 3],
      ['ghcr.io/lab/wrong', images.wrong!.manifest.digest, 'verify.policies[0] (ghcr.io/lab/**)', 'invalid', 1],
    ],
    'each image served unverified once, with how often; the signed one is not listed',
  );
  t.match(rows[0]!.reason, /^no signature/);
  t.match(rows[1]!.reason, /signed by another key/);
  for (const u of rows) t.ok(u.firstAt >= before && u.lastAt >= u.firstAt && u.lastAt <= st.now, 'when it was served');

  const browser = await launchChromium(t);
  const { page, problems } = await openPage(browser);
  await page.goto(`${sd.url}/`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
  t.equal(await page.isVisible('#unverified-section'), true, 'the list is shown');
  const shown = (await page.$$eval('#unverified tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')))).sort((a, b) => a[0]!.localeCompare(b[0]!));
  t.equal(shown.length, 2);
  t.same(shown.map((r) => [r[0], r[2], r[5]]), [['ghcr.io/lab/unsigned', 'verify.policies[0] (ghcr.io/lab/**)', '3'], ['ghcr.io/lab/wrong', 'verify.policies[0] (ghcr.io/lab/**)', '1']]);
  t.equal(shown[0]![1], `${images.unsigned!.manifest.digest.slice(0, 19)}…`, 'the digest, shortened');
  t.match(shown[0]![3], /^no signature/);
  t.match(shown[1]![3], /signed by another key/);
  t.comment(`screenshot: ${await screenshot(page, 'dashboard-unverified')}`);
  t.same(problems, []);

  const plain = await startStevedore(t, { upstreams: { 'ghcr.io': { url: reg.url } }, defaultUpstream: 'ghcr.io' });
  t.equal((await state(plain.url)).unverified, null, 'without a warn policy there is no such list');
});

t.test('dashboard.enabled: false: / is no endpoint', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { offline: true, dashboard: { enabled: false } } });
  for (const p of ['/', '/ui/api/state']) {
    const r = await rawRequest(`${sd.url}${p}`);
    t.equal(r.status, 404, p);
    t.equal(JSON.parse(r.body.toString()).errors[0].code, 'NOT_FOUND');
  }
});

// Security review 2 (issue 25, item 6): a browser logged in to the dashboard sends alice's Basic
// credentials with a form another site makes it submit. The form mounted alice's private blob into
// lab/pub (201), where bob read it. Now stevedore refuses the write (cross-site.ts).
t.test("in Chromium logged in to the dashboard as alice, a page on another site submitting a mount form is refused: bob reads nothing", async (t) => {
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, `alice:${bcrypt.hashSync(USERS.alice, 4)}\nbob:${bcrypt.hashSync('b0b-pw', 4)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      offline: true,
      registry: { hosted: ['lab/**', 'priv/**'] },
      auth: {
        htpasswd,
        anonymousPull: false,
        rules: [
          { repository: '**', users: ['alice'], actions: ['pull', 'push'] },
          { repository: 'lab/**', users: ['bob'], actions: ['pull'] },
        ],
      },
    },
  });
  const secret = makeBlob(Buffer.from(`alice's private bytes ${Date.now()}`), 'application/octet-stream');
  const pushed = await rawRequest(`${sd.url}/v2/priv/secret/blobs/uploads/?digest=${secret.digest}`, {
    method: 'POST',
    headers: { authorization: basic('alice'), 'content-type': 'application/octet-stream' },
    body: secret.data,
  });
  t.equal(pushed.status, 201, 'alice pushed a private blob');
  // The other site: localhost is another site than 127.0.0.1 (a form from another port of
  // 127.0.0.1 is same-site, refused alike; cross-site-writes.test.ts).
  const target = `${sd.url}/v2/lab/pub/blobs/uploads/?mount=${secret.digest}&from=priv/secret`;
  const evil = await startFake(t, (_req, res) => {
    const html = `<!doctype html><form id=f method=POST enctype=text/plain action="${target}"><input name=x value=y></form><script>document.getElementById('f').submit()</script>`;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': String(Buffer.byteLength(html)) });
    res.end(html);
  });
  const browser = await launchChromium(t);
  const context = await browser.newContext({ httpCredentials: { username: 'alice', password: USERS.alice } });
  t.teardown(() => context.close());
  const page = await context.newPage();
  await page.goto(`${sd.url}/`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
  t.ok(sd.logs.some((l) => l.msg === 'request' && l.path === '/ui/api/state' && l.user === 'alice' && l.status === 200), 'alice is logged in to the dashboard');

  const answered = page.waitForResponse((r) => r.url().startsWith(`${sd.url}/v2/lab/pub/blobs/uploads/`), { timeout: 10_000 });
  await page.goto(`http://localhost:${evil.port}/`);
  const answer = await answered;
  const line = sd.logs.find((l) => l.msg === 'request' && l.method === 'POST' && String(l.path).startsWith('/v2/lab/pub/blobs/uploads/'));
  t.comment(`the form's POST: ${answer.status()} ${JSON.stringify(line)}`);
  t.equal(answer.status(), 403, 'the form POST is refused');
  t.match(await answer.text(), /"code":"DENIED"/);
  t.match(
    sd.logs.find((l) => l.msg === 'cross-site write refused'),
    { origin: `http://localhost:${evil.port}`, secFetchSite: 'cross-site', contentType: 'text/plain' },
    "the refusal is logged with the browser's Origin, Sec-Fetch-Site and the form's type",
  );
  const read = await rawRequest(`${sd.url}/v2/lab/pub/blobs/${secret.digest}`, { headers: { authorization: `Basic ${Buffer.from('bob:b0b-pw').toString('base64')}` } });
  t.equal(read.status, 404, 'bob cannot read the private blob from lab/pub');
  t.notOk(read.body.includes(secret.data), 'no private byte reached bob');
});
