// Tags the upstream deleted (issue 30, cache.gonePolicies), against a real CNCF distribution with
// deletion enabled: the test deletes the image through the registry's API (DELETE of the manifest
// by digest, which also drops its tags). By default the cached tag goes on being served from the
// store, marked (Warning: 110 ... deleted upstream since ...), recorded with when it went (ls
// --gone, stevedore_gone_tags), across a restart; skopeo and containerd still pull it; re-created
// upstream it is followed again and the record is gone. With `forget` the pull fails with
// MANIFEST_UNKNOWN as the upstream's did. A fake clock moves past the tag TTL.
import fsp from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { stevedoreCli } from '../fixtures/cli.js';
import { startCluster } from '../fixtures/cluster.js';
import type { StevedoreProcess } from '../fixtures/stevedore-process.js';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { FakeClock, startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { assertServes, getTag } from '../fixtures/tags.js';
import { tmpDir } from '../fixtures/util.js';

const TTL_MS = 5 * 60_000;
const GONE_WARNING = /^110 - "Response is Stale: deleted upstream since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"$/;

/** Deletes the manifest (and so every tag naming it) through the registry's API, as a publisher would. */
async function deleteUpstream(t: Test, reg: Registry, repo: string, img: BuiltImage): Promise<void> {
  const del = await fetch(`${reg.directUrl}/v2/${repo}/manifests/${img.manifest.digest}`, { method: 'DELETE' });
  t.equal(del.status, 202, 'the registry deleted the manifest');
  const head = await fetch(`${reg.directUrl}/v2/${repo}/manifests/${img.manifest.digest}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
  t.equal(head.status, 404, 'the registry no longer has it');
}

async function cliConfig(t: Test, sd: Stevedore, reg: Registry): Promise<string> {
  const file = path.join(await tmpDir(t, 'stevedore-gone-cli-'), 'stevedore.yaml');
  await fsp.writeFile(file, JSON.stringify({ log: { level: 'warn' }, storage: { path: sd.storagePath }, upstreams: { 'docker.io': { url: reg.url } } }));
  return file;
}

async function goneRows(t: Test, sd: Stevedore, reg: Registry): Promise<Array<{ repository: string; tag: string; digest: string; goneSince: string }>> {
  const r = await stevedoreCli(['ls', '--gone', '--json', '--config', await cliConfig(t, sd, reg)]);
  t.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Array<{ repository: string; tag: string; digest: string; goneSince: string }>;
}

async function goneMetric(sd: Stevedore): Promise<number | null> {
  const text = await (await fetch(`${sd.url}/metrics`)).text();
  const m = /^stevedore_gone_tags (\d+)$/m.exec(text);
  return m ? Number(m[1]) : null;
}

t.test('a tag deleted upstream (default: keep)', async (t) => {
  const top = t;
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('gone-upstream/v1', { layers: 2 });
  const again = buildDockerImage('gone-upstream/v2', { layers: 2 });
  await pushImage(reg.url, 'bitnami/redis', '7.2', img);
  const clock = new FakeClock();
  const store = path.join(await tmpDir(t, 'stevedore-gone-'), 'data');
  const options = { upstreams: { 'docker.io': { url: reg.url } }, clock, storagePath: store, config: { cache: { tagTTL: '5m' } } };
  let sd = await startStevedore(t, options);
  // Cached by a first pull, then deleted by its publisher; the tag's TTL runs out.
  const first = await skopeoCopy(`docker://${sd.host}/docker.io/bitnami/redis:7.2`, `dir:${path.join(await tmpDir(t), 'first')}`);
  t.equal(first.code, 0, first.stderr);
  await deleteUpstream(t, reg, 'bitnami/redis', img);
  clock.advance(TTL_MS + 1_000);
  let since = '';

  await t.test('a GET of the tag answers the stored manifest, marked with when it went upstream', async (t) => {
    reg.resetCounts();
    const r = await getTag(sd, 'bitnami/redis', '7.2');
    assertServes(t, r, img, 'stale');
    const m = GONE_WARNING.exec(String(r.headers.warning));
    t.ok(m, `Warning: ${String(r.headers.warning)}`);
    since = m?.[1] ?? '';
    t.equal(reg.count('HEAD', '/v2/bitnami/redis/manifests/7.2'), 1, 'the upstream was asked once (HEAD: 404)');
    t.ok(sd.logs.some((l) => l.msg === 'tag deleted upstream; serving stored tag' && l.tag === '7.2'), 'logged');
  });

  await t.test('skopeo still pulls it: the same manifest bytes and layers', async (t) => {
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/bitnami/redis:7.2`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(dir);
    t.ok(got.manifest.equals(img.manifest.data), 'manifest bytes');
    for (const l of img.layers) t.ok(got.blobs.get(l.digest)?.equals(l.data), `layer ${l.digest.slice(0, 19)}`);
  });

  await t.test('containerd still pulls it through the mirror', async (t) => {
    const ctrd = await ctrdP;
    const r = await ctrd.pull('docker.io/bitnami/redis:7.2', { hostsDir: ctrd.writeHostsToml('docker.io', sd.url) });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/bitnami/redis:7.2'), img.manifest.digest);
  });

  await t.test('ls --gone lists it with when it went', async (t) => {
    const rows = await goneRows(t, sd, reg);
    t.same(rows.map((r) => [r.repository, r.tag, r.digest, r.goneSince]), [['docker.io/bitnami/redis', '7.2', img.manifest.digest, since]]);
  });

  await t.test('stevedore_gone_tags counts it', async (t) => {
    t.equal(await goneMetric(sd), 1);
  });

  await t.test('doctor says how many tags are gone and since when the oldest is', async (t) => {
    const r = await stevedoreCli(['doctor', '--json', '--config', await cliConfig(t, sd, reg)]);
    const results = JSON.parse(r.stdout) as Array<{ check: string; detail: string; fix: string | null }>;
    const line = results.find((x) => x.check === 'store' && /deleted upstream/.test(x.detail));
    t.equal(line?.detail, `1 cached tag(s) deleted upstream, kept and served from the store (pinned while gone), the oldest gone since ${since}`);
    t.match(line?.fix ?? '', /stevedore ls --gone/);
  });

  await t.test('the dashboard lists it with when it went', async (t) => {
    const res = await fetch(`${sd.url}/ui/api/state`);
    t.equal(res.status, 200);
    const st = (await res.json()) as { gone: Array<{ repository: string; tag: string; digest: string; since: number }> };
    t.same(st.gone.map((g) => [g.repository, g.tag, g.digest, new Date(g.since).toISOString()]), [['docker.io/bitnami/redis', '7.2', img.manifest.digest, since]]);
  });

  await t.test('its manifest, config and layers are pinned while it is gone', async (t) => {
    const pins = (await sd.storeFiles()).filter((f) => f.startsWith(`pins${path.sep}`)).map((f) => f.split(path.sep).slice(1).join(':'));
    t.same(pins.sort(), [img.manifest, img.config, ...img.layers].map((b) => b.digest).sort());
  });

  await t.test('after a restart it is still served, marked with the same time', async (t) => {
    await sd.stop();
    sd = await startStevedore(top, options);
    const r = await getTag(sd, 'bitnami/redis', '7.2');
    assertServes(t, r, img, 'stale');
    t.equal(GONE_WARNING.exec(String(r.headers.warning))?.[1], since);
  });

  await t.test('re-created upstream with new content, the tag is followed again and its record is gone', async (t) => {
    await pushImage(reg.url, 'bitnami/redis', '7.2', again);
    clock.advance(TTL_MS + 1_000);
    const r = await getTag(sd, 'bitnami/redis', '7.2');
    assertServes(t, r, again, 'miss');
    t.equal(r.headers.warning, undefined, 'no Warning');
    t.same(await goneRows(t, sd, reg), [], 'ls --gone lists nothing');
    t.equal(await goneMetric(sd), 0, 'stevedore_gone_tags 0');
    const pins = (await sd.storeFiles()).filter((f) => f.startsWith(`pins${path.sep}`));
    t.same(pins, [], 'what it pinned is evictable again');
  });
});

t.test('a tag deleted upstream with cache.gonePolicies forget', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('gone-upstream/forget', { layers: 1 });
  await pushImage(reg.url, 'bitnami/nginx', '1.25', img);
  const clock = new FakeClock();
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    clock,
    config: { cache: { tagTTL: '5m', gonePolicies: [{ repository: 'docker.io/bitnami/**', action: 'forget' }] } },
  });
  assertServes(t, await getTag(sd, 'bitnami/nginx', '1.25'), img, 'miss');
  await deleteUpstream(t, reg, 'bitnami/nginx', img);
  clock.advance(TTL_MS + 1_000);

  await t.test('skopeo fails with manifest unknown', async (t) => {
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/bitnami/nginx:1.25`, `dir:${path.join(await tmpDir(t), 'img')}`);
    t.not(r.code, 0, 'the pull fails');
    t.match(r.stderr, /manifest unknown/);
  });

  await t.test('a GET of the tag answers 404 MANIFEST_UNKNOWN', async (t) => {
    const r = await getTag(sd, 'bitnami/nginx', '1.25');
    t.equal(r.status, 404);
    t.equal(ociErrors(r)?.[0]?.code, 'MANIFEST_UNKNOWN');
  });

  await t.test('the stored tag is forgotten: ls no longer lists it, ls --gone neither', async (t) => {
    const file = await cliConfig(t, sd, reg);
    const ls = await stevedoreCli(['ls', '--json', '--config', file]);
    t.equal(ls.code, 0, ls.stderr);
    t.same(JSON.parse(ls.stdout), []);
    t.same(await goneRows(t, sd, reg), []);
  });
});

t.test('a tag never cached that the upstream deleted answers MANIFEST_UNKNOWN, nothing recorded', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('gone-upstream/never', { layers: 1 });
  await pushImage(reg.url, 'bitnami/mysql', '8.0', img);
  await deleteUpstream(t, reg, 'bitnami/mysql', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const r = await rawRequest(`${sd.url}/v2/docker.io/bitnami/mysql/manifests/8.0`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(r.status, 404);
  t.equal(ociErrors(r)?.[0]?.code, 'MANIFEST_UNKNOWN');
  t.equal(await goneMetric(sd), 0);
});

t.test('cluster mode: a tag one replica found deleted upstream is served by another, marked with the same time', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('gone-upstream/cluster', { layers: 1 });
  await pushImage(reg.url, 'bitnami/kafka', '3.7', img);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url, config: { cache: { tagTTL: '1s', refreshAhead: { enabled: false } } } });
  const [a, b] = c.replicas as [StevedoreProcess, StevedoreProcess];
  const tagUrl = (p: StevedoreProcess): string => `${p.url}/v2/docker.io/bitnami/kafka/manifests/3.7`;
  const first = await rawRequest(tagUrl(a), { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(first.status, 200, 'cached through replica a');
  await deleteUpstream(t, reg, 'bitnami/kafka', img);
  await new Promise((r) => setTimeout(r, 1_500));
  const onA = await rawRequest(tagUrl(a), { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(onA.status, 200, 'replica a serves it');
  const since = GONE_WARNING.exec(String(onA.headers.warning))?.[1];
  t.ok(since, `replica a marks it: ${String(onA.headers.warning)}`);
  if (!since) return;
  const onB = await rawRequest(tagUrl(b), { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(onB.status, 200, 'replica b serves it');
  t.equal(onB.headers['docker-content-digest'], img.manifest.digest);
  t.equal(GONE_WARNING.exec(String(onB.headers.warning))?.[1], since, 'replica b marks it with the time replica a recorded');
  const text = await (await fetch(`${b.url}/metrics`)).text();
  t.match(text, /^stevedore_gone_tags 1$/m, 'replica b counts it');
});
