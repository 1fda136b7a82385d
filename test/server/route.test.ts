import t from 'tap';
import { parseConfig } from '../../lib/config/config.js';
import { OciError } from '../../lib/oci/errors.js';
import { matchRoute, resolveRepo } from '../../lib/server/route.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;

// ---------------------------------------------------------------- matchRoute

t.test('/v2/ is the base endpoint', async (t) => {
  t.same(matchRoute('/v2/'), { kind: 'base' });
});

t.test('/v2 without the trailing slash is the base endpoint too', async (t) => {
  t.same(matchRoute('/v2'), { kind: 'base' });
});

t.test('/healthz and /readyz are the probes', async (t) => {
  t.same(matchRoute('/healthz'), { kind: 'healthz' });
  t.same(matchRoute('/readyz'), { kind: 'readyz' });
});

t.test('a manifest path by tag gives the name and the reference', async (t) => {
  t.same(matchRoute('/v2/library/alpine/manifests/3.20'), { kind: 'manifest', name: 'library/alpine', reference: '3.20' });
});

t.test('a manifest path by digest gives the digest as the reference', async (t) => {
  t.same(matchRoute(`/v2/alpine/manifests/${DIGEST}`), { kind: 'manifest', name: 'alpine', reference: DIGEST });
});

t.test('a manifest path with a registry prefix keeps the whole name', async (t) => {
  t.same(matchRoute('/v2/ghcr.io/org/app/manifests/latest'), { kind: 'manifest', name: 'ghcr.io/org/app', reference: 'latest' });
});

t.test('a blob path gives the name and the digest', async (t) => {
  t.same(matchRoute(`/v2/library/alpine/blobs/${DIGEST}`), { kind: 'blob', name: 'library/alpine', digest: DIGEST });
});

t.test('a blob path passes an invalid digest through for the handler to refuse', async (t) => {
  t.same(matchRoute('/v2/alpine/blobs/not-a-digest'), { kind: 'blob', name: 'alpine', digest: 'not-a-digest' });
});

t.test('the upload endpoint is recognised with and without a session id', async (t) => {
  t.same(matchRoute('/v2/alpine/blobs/uploads/'), { kind: 'upload', name: 'alpine' });
  t.same(matchRoute('/v2/alpine/blobs/uploads'), { kind: 'upload', name: 'alpine' });
  t.same(matchRoute('/v2/org/app/blobs/uploads/3f1c-uuid'), { kind: 'upload', name: 'org/app', session: '3f1c-uuid' });
});

t.test('/v2/_catalog is the catalog endpoint', async (t) => {
  t.same(matchRoute('/v2/_catalog'), { kind: 'catalog' });
});

t.test('the referrers endpoint gives the name and the digest', async (t) => {
  t.same(matchRoute(`/v2/org/app/referrers/${DIGEST}`), { kind: 'referrers', name: 'org/app', digest: DIGEST });
});

t.test('the tags list endpoint gives the name', async (t) => {
  t.same(matchRoute('/v2/library/alpine/tags/list'), { kind: 'tags', name: 'library/alpine' });
});

t.test('a name that itself contains "manifests" is split at the last /manifests/', async (t) => {
  t.same(matchRoute('/v2/a/manifests/b/manifests/c'), { kind: 'manifest', name: 'a/manifests/b', reference: 'c' });
});

t.test('the path is not decoded: percent escapes stay in the name', async (t) => {
  t.same(matchRoute('/v2/%2e%2e/manifests/latest'), { kind: 'manifest', name: '%2e%2e', reference: 'latest' });
  t.same(matchRoute('/v2/a%2Fb/blobs/x'), { kind: 'blob', name: 'a%2Fb', digest: 'x' });
});

t.test('".." segments are passed through as part of the name for the grammar to refuse', async (t) => {
  t.same(matchRoute('/v2/../../etc/manifests/latest'), { kind: 'manifest', name: '../../etc', reference: 'latest' });
});

for (const path of [
  '/',
  '',
  '/v1/',
  '/v2x',
  '/v3/alpine/manifests/latest',
  '/healthz/',
  '/readyz/x',
  '/v2/_catalogue',
  '/v2/alpine',
  '/v2/alpine/manifests',
  '/v2/alpine/manifests/',
  '/v2/alpine/manifests/latest/',
  '/v2/alpine/manifests/a/b',
  '/v2//manifests/latest',
  '/v2/alpine/blobs',
  '/v2/alpine/blobs/',
  '/v2/alpine/tags/list/',
  '/v2/alpine/tags',
  `/v2/alpine/referrers/${DIGEST}/`,
  '/metrics',
  'v2/alpine/manifests/latest',
]) {
  t.test(`${JSON.stringify(path)} is no endpoint`, async (t) => {
    t.equal(matchRoute(path), null);
  });
}

// ---------------------------------------------------------------- resolveRepo

const defaults = parseConfig({});

function refused(t: Tap, fn: () => unknown, code: 'NAME_INVALID' | 'NAME_UNKNOWN'): void {
  try {
    fn();
    t.fail(`expected ${code}, nothing was thrown`);
  } catch (err) {
    t.ok(err instanceof OciError, 'an OciError');
    t.equal((err as OciError).code, code);
    t.equal((err as OciError).status, code === 'NAME_INVALID' ? 400 : 404);
  }
}
type Tap = Pick<typeof t, 'ok' | 'equal' | 'fail'>;

t.test('ns=docker.io selects Docker Hub and applies the library/ rule', async (t) => {
  const r = resolveRepo('alpine', 'docker.io', defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.upstream.url, 'https://registry-1.docker.io');
  t.equal(r.name, 'library/alpine');
  t.equal(r.clientName, 'alpine');
});

t.test('ns=docker.io leaves a two-segment name alone', async (t) => {
  t.equal(resolveRepo('bitnami/redis', 'docker.io', defaults).name, 'bitnami/redis');
});

t.test('ns=docker.io does not double an explicit library/ prefix', async (t) => {
  t.equal(resolveRepo('library/alpine', 'docker.io', defaults).name, 'library/alpine');
});

t.test('ns=ghcr.io selects GHCR and never adds library/', async (t) => {
  const r = resolveRepo('app', 'ghcr.io', defaults);
  t.equal(r.upstream.name, 'ghcr.io');
  t.equal(r.name, 'app');
});

t.test('with ns the name is used as written, even if it looks like a registry prefix', async (t) => {
  const r = resolveRepo('quay.io/org/app', 'ghcr.io', defaults);
  t.equal(r.upstream.name, 'ghcr.io');
  t.equal(r.name, 'quay.io/org/app');
});

t.test('an ns that is a valid host name but not configured is NAME_UNKNOWN', async (t) => {
  refused(t, () => resolveRepo('x', 'evil.com', defaults), 'NAME_UNKNOWN');
  refused(t, () => resolveRepo('x', 'localhost', defaults), 'NAME_UNKNOWN');
  refused(t, () => resolveRepo('x', '169.254.169.254', defaults), 'NAME_UNKNOWN');
  refused(t, () => resolveRepo('x', 'localhost:5000', defaults), 'NAME_UNKNOWN');
});

t.test('an unknown ns never falls back to the default upstream', async (t) => {
  refused(t, () => resolveRepo('alpine', 'registry.example.com', defaults), 'NAME_UNKNOWN');
});

for (const ns of ['', 'DOCKER.IO', 'docker.io/', 'docker.io/x', '../docker.io', '.docker.io', 'docker.io.', 'docker_io', 'http://docker.io', 'docker.io:port', 'a b', '%2e%2e']) {
  t.test(`the ns ${JSON.stringify(ns)} is NAME_INVALID`, async (t) => {
    refused(t, () => resolveRepo('alpine', ns, defaults), 'NAME_INVALID');
  });
}

t.test('a configured upstream prefix is stripped: docker.io/library/alpine', async (t) => {
  const r = resolveRepo('docker.io/library/alpine', null, defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.name, 'library/alpine');
  t.equal(r.clientName, 'docker.io/library/alpine');
});

t.test('a docker.io prefix with a single-segment name gets library/', async (t) => {
  t.equal(resolveRepo('docker.io/alpine', null, defaults).name, 'library/alpine');
});

t.test('a configured upstream prefix is stripped: ghcr.io/org/app', async (t) => {
  const r = resolveRepo('ghcr.io/org/app', null, defaults);
  t.equal(r.upstream.name, 'ghcr.io');
  t.equal(r.name, 'org/app');
});

t.test('a prefix of an upstream with library off keeps a single-segment name as is', async (t) => {
  t.equal(resolveRepo('quay.io/app', null, defaults).name, 'app');
});

t.test('a prefix with a port selects an upstream configured with that port', async (t) => {
  const c = parseConfig({ defaultUpstream: null, upstreams: { 'localhost:5001': { url: 'http://127.0.0.1:5001' } } });
  const r = resolveRepo('localhost:5001/team/app', null, c);
  t.equal(r.upstream.name, 'localhost:5001');
  t.equal(r.name, 'team/app');
});

for (const [name, why] of [
  ['evil.com/x', 'a dotted host'],
  ['evil.com/library/alpine', 'a dotted host with a library path'],
  ['localhost/x', 'localhost'],
  ['localhost:5000/x', 'localhost with a port'],
  ['registry:5000/x', 'a host with a port'],
  ['10.0.0.1/x', 'an IP address'],
  ['169.254.169.254/latest', 'the cloud metadata address'],
  ['ghcr.io.evil.com/org/app', 'a configured name as a prefix of another host'],
  ['docker.io:443/library/alpine', 'a configured host with a port that is not configured'],
]) {
  t.test(`a first segment that names an unconfigured registry (${why}) is NAME_UNKNOWN, never the default`, async (t) => {
    refused(t, () => resolveRepo(name!, null, defaults), 'NAME_UNKNOWN');
  });
}

t.test('a host-like first segment that is not even a host name is NAME_INVALID', async (t) => {
  refused(t, () => resolveRepo('Evil.com/x', null, defaults), 'NAME_INVALID');
  refused(t, () => resolveRepo('under_score.io/x', null, defaults), 'NAME_INVALID');
});

t.test('a bare name goes to the default upstream with library/', async (t) => {
  const r = resolveRepo('alpine', null, defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.name, 'library/alpine');
  t.equal(r.clientName, 'alpine');
});

t.test('library/alpine from Docker registry-mirrors goes to the default upstream unchanged', async (t) => {
  const r = resolveRepo('library/alpine', null, defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.name, 'library/alpine');
});

t.test('a two-segment name without a host-like first segment goes to the default upstream', async (t) => {
  const r = resolveRepo('bitnami/redis', null, defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.name, 'bitnami/redis');
});

t.test('a single dotted segment is a repository name on the default upstream, not a host', async (t) => {
  const r = resolveRepo('evil.com', null, defaults);
  t.equal(r.upstream.name, 'docker.io');
  t.equal(r.name, 'library/evil.com');
});

t.test('a default upstream without library keeps bare names as they are', async (t) => {
  const c = parseConfig({ defaultUpstream: 'ghcr.io' });
  const r = resolveRepo('app', null, c);
  t.equal(r.upstream.name, 'ghcr.io');
  t.equal(r.name, 'app');
});

t.test('library/ is added on any upstream configured with library: true', async (t) => {
  const c = parseConfig({ defaultUpstream: 'mirror.gcr.io', upstreams: { 'mirror.gcr.io': { url: 'https://mirror.gcr.io', library: true } } });
  t.equal(resolveRepo('alpine', null, c).name, 'library/alpine');
  t.equal(resolveRepo('alpine', 'mirror.gcr.io', c).name, 'library/alpine');
});

t.test('library/ is not added on docker.io when it is configured with library: false', async (t) => {
  const c = parseConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', library: false } } });
  t.equal(resolveRepo('alpine', null, c).name, 'alpine');
});

t.test('a bare name with no default upstream is NAME_UNKNOWN', async (t) => {
  const c = parseConfig({ defaultUpstream: null });
  refused(t, () => resolveRepo('alpine', null, c), 'NAME_UNKNOWN');
  refused(t, () => resolveRepo('library/alpine', null, c), 'NAME_UNKNOWN');
});

t.test('with no default upstream, ns and registry prefixes still work', async (t) => {
  const c = parseConfig({ defaultUpstream: null });
  t.equal(resolveRepo('alpine', 'docker.io', c).name, 'library/alpine');
  t.equal(resolveRepo('ghcr.io/org/app', null, c).name, 'org/app');
});

for (const [name, why] of [
  ['../etc/passwd', 'a leading ".."'],
  ['..', 'only ".."'],
  ['library/../../etc', 'a ".." in the middle'],
  ['library/alpine/..', 'a trailing ".."'],
  ['%2e%2e/etc', 'an encoded ".."'],
  ['library/%2e%2e/x', 'an encoded ".." in the middle'],
  ['docker.io/../x', 'a ".." after a configured prefix'],
  ['docker.io/%2e%2e/x', 'an encoded ".." after a configured prefix'],
  ['docker.io/', 'a configured prefix and nothing else'],
  ['docker.io//alpine', 'an empty segment after a prefix'],
  ['library//alpine', 'an empty segment'],
  ['/alpine', 'a leading slash'],
  ['Alpine', 'an uppercase letter'],
  ['a%2fb', 'an encoded slash'],
  ['', 'nothing'],
]) {
  t.test(`a name with ${why} (${JSON.stringify(name)}) is NAME_INVALID`, async (t) => {
    refused(t, () => resolveRepo(name!, null, defaults), 'NAME_INVALID');
  });
}

t.test('a path-traversal name is NAME_INVALID also when ns is given', async (t) => {
  refused(t, () => resolveRepo('../../etc', 'docker.io', defaults), 'NAME_INVALID');
  refused(t, () => resolveRepo('%2e%2e', 'ghcr.io', defaults), 'NAME_INVALID');
});

t.test('the upstream name is a valid repository name whatever route was taken', async (t) => {
  for (const [name, ns] of [
    ['alpine', null],
    ['docker.io/alpine', null],
    ['ghcr.io/org/app', null],
    ['alpine', 'docker.io'],
  ] as Array<[string, string | null]>) {
    t.match(resolveRepo(name, ns, defaults).name, /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/);
  }
});

t.test('resolveRepo accepts any object with upstreams and defaultUpstream', async (t) => {
  const { upstreams } = parseConfig({});
  t.equal(resolveRepo('alpine', null, { upstreams, defaultUpstream: 'quay.io' }).upstream.name, 'quay.io');
});
