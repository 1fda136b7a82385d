// What a person sees when stevedore answers an error (README, "What clients print for
// stevedore's errors"): every error row is produced for real and the real clients are run against
// it: skopeo (`inspect`, `copy`), podman (`pull` through a registries.conf mirror) and containerd's
// `ctr images pull` (through hosts.toml). Each must print the reason, not only a status line. Then
// ctr, given two hosts in hosts.toml, must still go on to the next host for the errors that say
// "not here, ask elsewhere".
//
// The upstreams are a real CNCF distribution registry, except where it cannot produce the fault on
// demand: a 429 with Retry-After, and an upstream that never answers (small programmable servers).
// Every registry name in these tests is an upstream name of a stevedore (offline.test, down.test,
// ...): skopeo and podman ask `/v2/<name>/...` (the path prefix), ctr sends `?ns=<name>`; ctr's and
// podman's last resort (`server`, the primary location) is a closed loopback port, so nothing leaves
// this machine.
import { writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { writeHostsTomls } from '../../lib/cli/containerd-config.js';
import { SAFE_FALLBACK_SERVER, startContainerd } from '../fixtures/containerd.js';
import { sendJson, startFake } from '../fixtures/fake-upstream.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { preparePodman, type Podman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { skopeoCopy, skopeoInspect } from '../fixtures/skopeo.js';
import { logsSettled, spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir, type RunResult } from '../fixtures/util.js';

const USERS = { alice: 'Al1ce-reads', bob: 'B0b-may-not' };
/** What the clients send: the users' passwords, and carol, who is no user at all, guessing. */
const PASSWORDS = { ...USERS, carol: 'guess-1' };
const DENY_REASON = 'use docker.io/library/app instead (SEC-7)';

/** A client's whole output, one line (podman and skopeo wrap nothing, ctr logs on stderr). */
const said = (r: RunResult): string => `${r.stdout}\n${r.stderr}`;

/** What each client is expected to print for one error row; null: the client cannot show it (README says why). */
interface Row {
  /** The error as README's table names it. */
  error: string;
  /** `<registry name>/<repository>:<tag>` as a client names the image. */
  image: string;
  /** Which stevedore answers: the main one or the one with client authentication. */
  sd: 'main' | 'auth';
  /** Credentials the clients use, if any. */
  user?: keyof typeof PASSWORDS;
  /** Run before the clients, to bring the error about. */
  before?: () => Promise<void>;
  /** containers/image shows no reason for this error, whatever stevedore sends: it prints its own words. */
  noReasonInContainersImage?: true;
  skopeoInspect: RegExp | null;
  skopeoCopy: RegExp;
  podman: RegExp;
  ctr: RegExp;
}

t.test('what skopeo, podman and ctr print for each error stevedore answers', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  // The next host in hosts.toml for the fallback tests: a registry holding what stevedore cannot serve.
  const next = await startRegistry();
  t.teardown(() => next.stop());
  const app = buildDockerImage('client-errors/app', { layers: 1 });
  // 40 layers: a manifest of about 7 KiB, over cache.manifestMaxSize below.
  const bigManifest = buildDockerImage('client-errors/big-manifest', { layers: 40, layerSize: 64 });
  const bigBlob = buildDockerImage('client-errors/big-blob', { layers: 1, layerSize: 256 * 1024 });
  await pushImage(reg.directUrl, 'library/app', '1.0', app);
  await pushImage(reg.directUrl, 'library/denied', '1.0', app);
  await pushImage(reg.directUrl, 'library/big-manifest', '1.0', bigManifest);
  await pushImage(reg.directUrl, 'library/big-blob', '1.0', bigBlob);
  await pushImage(next.directUrl, 'library/app', '1.0', app);
  await pushImage(next.directUrl, 'library/only-next', '1.0', app);

  // 429 with Retry-After, as Docker Hub answers over its quota.
  const limited = await startFake(t, (_req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    sendJson(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'You have reached your pull rate limit.' }] }, { 'Retry-After': '1' });
  });
  // An upstream that accepts the connection and never answers.
  const stalled = await startFake(t, (req) => {
    req.resume();
  });

  const work = await tmpDir(t, 'stevedore-client-errors-');
  const main = await spawnStevedore(t, {
    storage: { path: path.join(work, 'main') },
    cache: { manifestMaxSize: '4KiB', blobMaxSize: '128KiB' },
    upstreams: {
      'docker.io': { url: reg.url, deny: [{ repository: 'library/denied', reason: DENY_REASON }] },
      'offline.test': { url: reg.url, offline: true },
      'down.test': { url: 'http://127.0.0.1:1' },
      'slow.test': { url: stalled.url, timeouts: { connect: '1s', firstByte: '1s' } },
      'limited.test': { url: limited.url },
    },
  });
  const htpasswd = path.join(work, 'htpasswd');
  await writeFile(htpasswd, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}`).join('\n') + '\n');
  const authSd = await spawnStevedore(t, {
    storage: { path: path.join(work, 'auth') },
    defaultUpstream: null,
    upstreams: { 'auth.test': { url: reg.url } },
    auth: { htpasswd, anonymousPull: false, rules: [{ repository: 'auth.test/library/app', users: ['alice'], actions: ['pull'] }] },
  });
  const sds: Record<Row['sd'], StevedoreProcess> = { main, auth: authSd };
  const mainNames = ['docker.io', 'offline.test', 'down.test', 'slow.test', 'limited.test'];

  // podman: each registry name's primary location is a closed port, its mirror stevedore's path prefix.
  const mirrorConf = (names: string[], host: string): string =>
    names.map((n) => `[[registry]]\nprefix = "${n}"\nlocation = "127.0.0.1:1"\ninsecure = true\n[[registry.mirror]]\nlocation = "${host}/${n}"\ninsecure = true\n`).join('\n');
  const conf = `${mirrorConf(mainNames, main.host)}\n${mirrorConf(['auth.test'], authSd.host)}`;
  const podmen: Record<string, Podman> = {
    anonymous: await preparePodman(t, { registriesConf: conf }),
    bob: await preparePodman(t, { registriesConf: conf }),
    carol: await preparePodman(t, { registriesConf: conf }),
  };
  const bobLogin = await podmen.bob!.login(authSd.host, 'bob', USERS.bob);
  if (bobLogin.code !== 0) throw new Error(`podman login as bob: ${bobLogin.stderr}`);
  // `podman login` checks the password: carol's wrong one goes straight into the auth file.
  await writeFile(
    path.join(podmen.carol!.home, 'auth.json'),
    JSON.stringify({ auths: { [authSd.host]: { auth: Buffer.from(`carol:${PASSWORDS.carol}`).toString('base64') } } }),
  );

  const ctrd = await ctrdP;
  // ctr: one stevedore per registry name, then the closed port.
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsTomls(hostsDir, mainNames, [main.url], { server: SAFE_FALLBACK_SERVER });
  await writeHostsTomls(hostsDir, ['auth.test'], [authSd.url], { server: SAFE_FALLBACK_SERVER });

  // CLIENT_ERRORS_DUMP=FILE: every client's output is written there, to refresh README's table.
  const dump: Record<string, string> = {};
  const record = (key: string, r: RunResult): string => {
    dump[key] = said(r).trim();
    return said(r);
  };
  t.teardown(() => {
    if (process.env.CLIENT_ERRORS_DUMP) writeFileSync(process.env.CLIENT_ERRORS_DUMP, JSON.stringify(dump, null, 2));
  });

  const OFFLINE = /the proxy is offline for offline\.test \(offline: true\) and has no manifest library\/app:1\.0 stored; import it \(stevedore import\)/;
  // The first failures answer the cause; after enough of them the circuit breaker answers at once
  // (502 `... not contacted ...: circuit open after 5 consecutive failures (the last: CAUSE)`), the
  // cause by class: no repository (the request that failed may have been another client's).
  const SLOW =
    /upstream slow\.test (timed out \(UND_ERR_HEADERS_TIMEOUT, timeouts\.firstByte\) on manifest library\/app:1\.0|not contacted for manifest library\/app:1\.0: circuit open after \d+ consecutive failures \(the last: upstream slow\.test timed out \(UND_ERR_HEADERS_TIMEOUT, timeouts\.firstByte\)\))/;
  const DOWN =
    /upstream down\.test (unreachable \(ECONNREFUSED\) on manifest library\/app:1\.0|not contacted for manifest library\/app:1\.0: circuit open after \d+ consecutive failures \(the last: upstream down\.test unreachable \(ECONNREFUSED\)\))/;
  // The upstream's own 429, then stevedore's cool-down (which does not ask it until Retry-After).
  const LIMITED = /upstream limited\.test (is rate-limiting \(429\)|not contacted for manifest library\/app:1\.0: rate-limited \(429\))/;
  const POLICY = /docker\.io\/library\/denied is denied on this proxy: use docker\.io\/library\/app instead \(SEC-7\)/;
  const MANIFEST_SIZE = /sent a manifest of \d+ bytes for library\/big-manifest:1\.0, above the limit of 4096 \(cache\.manifestMaxSize\)/;
  // containers/image reads no body, and no reason phrase, of a failed blob GET: http.StatusText only.
  const BLOB_STATUS_ONLY = /Error fetching blob: invalid status code from registry 502 \(Bad Gateway\)/;
  const BLOB_SIZE = /upstream docker\.io announced \d+ bytes for blob sha256:[0-9a-f]{64}, above the limit of 131072 \(cache\.blobMaxSize\)/;
  const rows: Row[] = [
    { error: 'OFFLINE', image: 'offline.test/library/app:1.0', sd: 'main', skopeoInspect: OFFLINE, skopeoCopy: OFFLINE, podman: OFFLINE, ctr: /503 Service Unavailable - the proxy is offline for offline\.test/ },
    { error: 'UPSTREAM_UNAVAILABLE', image: 'down.test/library/app:1.0', sd: 'main', skopeoInspect: DOWN, skopeoCopy: DOWN, podman: DOWN, ctr: DOWN },
    { error: 'UPSTREAM_TIMEOUT', image: 'slow.test/library/app:1.0', sd: 'main', skopeoInspect: SLOW, skopeoCopy: SLOW, podman: SLOW, ctr: SLOW },
    { error: 'TOOMANYREQUESTS', image: 'limited.test/library/app:1.0', sd: 'main', skopeoInspect: LIMITED, skopeoCopy: LIMITED, podman: LIMITED, ctr: LIMITED },
    {
      error: 'MANIFEST_UNKNOWN (tag)',
      image: 'docker.io/library/app:nope',
      sd: 'main',
      skopeoInspect: /manifest unknown: manifest library\/app:nope not found at upstream docker\.io/,
      skopeoCopy: /manifest unknown: manifest library\/app:nope not found at upstream docker\.io/,
      podman: /manifest unknown: manifest library\/app:nope not found at upstream docker\.io/,
      // 404 is containerd's "try the next host": it says so, and prints the last host's error.
      ctr: /trying next host - response was http\.StatusNotFound/,
    },
    {
      error: 'MANIFEST_UNKNOWN (repository)',
      image: 'docker.io/library/nothing:1.0',
      sd: 'main',
      skopeoInspect: /manifest unknown: manifest library\/nothing:1\.0 not found at upstream docker\.io/,
      skopeoCopy: /manifest unknown: manifest library\/nothing:1\.0 not found at upstream docker\.io/,
      podman: /manifest unknown: manifest library\/nothing:1\.0 not found at upstream docker\.io/,
      ctr: /trying next host - response was http\.StatusNotFound/,
    },
    { error: 'DENIED (upstreams.*.deny)', image: 'docker.io/library/denied:1.0', sd: 'main', skopeoInspect: POLICY, skopeoCopy: POLICY, podman: POLICY, ctr: POLICY },
    { error: 'MANIFEST_INVALID (cache.manifestMaxSize)', image: 'docker.io/library/big-manifest:1.0', sd: 'main', skopeoInspect: MANIFEST_SIZE, skopeoCopy: MANIFEST_SIZE, podman: MANIFEST_SIZE, ctr: MANIFEST_SIZE },
    { error: 'blob over cache.blobMaxSize', image: 'docker.io/library/big-blob:1.0', sd: 'main', skopeoInspect: null, skopeoCopy: BLOB_STATUS_ONLY, podman: BLOB_STATUS_ONLY, ctr: BLOB_SIZE, noReasonInContainersImage: true },
    {
      error: 'UNAUTHORIZED',
      image: 'auth.test/library/app:1.0',
      sd: 'auth',
      skopeoInspect: /unauthorized: authentication required to pull on auth\.test\/library\/app/,
      skopeoCopy: /unauthorized: authentication required to pull on auth\.test\/library\/app/,
      podman: /unauthorized: authentication required to pull on auth\.test\/library\/app/,
      ctr: /401 Unauthorized - authentication required to pull on auth\.test\/library\/app/,
    },
    {
      error: 'DENIED (auth.rules)',
      image: 'auth.test/library/app:1.0',
      sd: 'auth',
      user: 'bob',
      skopeoInspect: /denied: user bob may not pull on auth\.test\/library\/app/,
      skopeoCopy: /denied: user bob may not pull on auth\.test\/library\/app/,
      podman: /denied: user bob may not pull on auth\.test\/library\/app/,
      ctr: /403 Forbidden - user bob may not pull on auth\.test\/library\/app/,
    },
    {
      // stevedore's own limit: 10 failed logins a minute for one user from one address, then 429 with
      // Retry-After. (Last: from here on 127.0.0.1 may not log in to this stevedore for a minute.)
      error: 'TOOMANYREQUESTS (failed logins)',
      noReasonInContainersImage: true,
      image: 'auth.test/library/app:1.0',
      sd: 'auth',
      user: 'carol',
      before: async () => {
        const url = `${authSd.url}/token?service=stevedore&scope=repository:auth.test/library/app:pull`;
        const authorization = `Basic ${Buffer.from(`carol:${PASSWORDS.carol}`).toString('base64')}`;
        for (let i = 0; ; i++) {
          const res = await fetch(url, { headers: { authorization } });
          await res.arrayBuffer();
          if (res.status === 429) break;
          if (res.status !== 401 || i > 20) throw new Error(`guessing carol's password: ${res.status}`);
        }
      },
      // containers/image turns a 429 from a token endpoint into its own words, without body or phrase.
      skopeoInspect: /too many requests to registry/,
      skopeoCopy: /too many requests to registry/,
      podman: /too many requests to registry/,
      ctr: /429 Too Many Requests - too many failed logins from this address; try again in \d+s/,
    },
  ];

  for (const row of rows) {
    const sd = sds[row.sd];
    const [registry, ...rest] = row.image.split('/');
    const skopeoRef = `docker://${sd.host}/${registry}/${rest.join('/')}`;
    const creds = row.user ? { creds: `${row.user}:${PASSWORDS[row.user]}` } : {};
    if (row.before) await row.before();
    const shows = row.noReasonInContainersImage ? 'prints only its own words for the status' : 'prints the reason';
    const inspectShows = row.skopeoInspect;
    if (inspectShows) {
      await t.test(`${row.error}: skopeo inspect ${shows}`, async (t) => {
        const r = await skopeoInspect(skopeoRef, creds);
        t.not(r.code, 0);
        t.match(record(`${row.error} skopeo inspect`, r), inspectShows);
      });
    }
    await t.test(`${row.error}: skopeo copy ${shows}`, async (t) => {
      const r = await skopeoCopy(skopeoRef, `dir:${path.join(await tmpDir(t), 'img')}`, creds);
      t.not(r.code, 0);
      t.match(record(`${row.error} skopeo copy`, r), row.skopeoCopy);
    });
    await t.test(`${row.error}: podman pull ${shows}`, async (t) => {
      const r = await podmen[row.user ?? 'anonymous']!.pull(row.image);
      t.not(r.code, 0);
      t.match(record(`${row.error} podman pull`, r), row.podman);
    });
    await t.test(`${row.error}: ctr images pull ${row.error.startsWith('MANIFEST_UNKNOWN') ? 'says it tries the next host' : 'prints the reason'}`, async (t) => {
      const r = await ctrd.pull(row.image, { hostsDir, ...(row.user ? { user: `${row.user}:${PASSWORDS[row.user]}` } : {}) });
      t.not(r.code, 0);
      t.match(record(`${row.error} ctr`, r), row.ctr);
    });
  }

  // hosts.toml naming stevedore first and another host second (the registry `next`, which has
  // library/app:1.0 and library/only-next:1.0): where stevedore cannot serve, ctr must go on.
  const fallbackDir = path.join(work, 'certs.d-fallback');
  await writeHostsTomls(fallbackDir, mainNames, [main.url, next.url], { server: SAFE_FALLBACK_SERVER });
  // `asks`: how many times ctr sends its HEAD to stevedore before going on: once, but a 429 six
  // times in a row (containerd 1.6 retries 429 and 408 at once, without reading Retry-After).
  const fallbacks: Array<{ error: string; image: string; answered: RegExp; asks: number }> = [
    { error: 'OFFLINE', image: 'offline.test/library/app:1.0', answered: /^OFFLINE$/, asks: 1 },
    { error: 'UPSTREAM_UNAVAILABLE', image: 'down.test/library/app:1.0', answered: /^UPSTREAM_UNAVAILABLE$/, asks: 1 },
    // (502 UPSTREAM_UNAVAILABLE once the breaker is open, as above)
    { error: 'UPSTREAM_TIMEOUT', image: 'slow.test/library/app:1.0', answered: /^UPSTREAM_(TIMEOUT|UNAVAILABLE)$/, asks: 1 },
    { error: 'TOOMANYREQUESTS', image: 'limited.test/library/app:1.0', answered: /^TOOMANYREQUESTS$/, asks: 6 },
    { error: 'MANIFEST_UNKNOWN', image: 'docker.io/library/only-next:1.0', answered: /^MANIFEST_UNKNOWN$/, asks: 1 },
  ];
  for (const f of fallbacks) {
    await t.test(`${f.error}: ctr goes on to the next host in hosts.toml and pulls the image from there`, async (t) => {
      const [registry, ...rest] = f.image.split('/');
      const tagPath = `/v2/${rest.join('/').replace(':', '/manifests/')}`;
      const from = main.logs.length;
      next.resetCounts();
      const r = await ctrd.pull(f.image, { hostsDir: fallbackDir });
      t.equal(r.code, 0, r.stderr);
      t.equal(await ctrd.imageDigest(f.image), app.manifest.digest, 'containerd has the image');
      await logsSettled(main);
      const asked = main.logs.slice(from).filter((l) => l.msg === 'request' && l.method === 'HEAD' && String(l.path) === `${tagPath}?ns=${registry}`);
      t.equal(asked.length, f.asks, 'stevedore was asked first');
      for (const line of asked) t.match((line.error as { code?: string } | undefined)?.code ?? '', f.answered, `stevedore answered ${String(line.status)}`);
      t.equal(next.count('HEAD', `${tagPath}`), 1, 'then the next host');
      await ctrd.removeImage(f.image);
    });
  }
});
