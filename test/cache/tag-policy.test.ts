// Which TTL a tag gets: the first tier (cache.tagTTLPolicies) matching `<upstream>/<name>` and the
// tag, else the upstream's tagTTL. Built from parsed configuration, as the server builds it.
import t from 'tap';
import { parseConfig, type UpstreamConfig } from '../../lib/config/config.js';
import { isSemverTag, tagTTLFor } from '../../lib/cache/tag-policy.js';
import { goneActionFor } from '../../lib/cache/gone-tags.js';
import { upstreamConfig } from '../fixtures/pull-parts.js';

const MIN = 60_000;

function upstreams(policies: unknown[], extra: Record<string, unknown> = {}): { hub: UpstreamConfig; ghcr: UpstreamConfig } {
  const c = parseConfig({
    cache: { tagTTL: '5m', tagTTLPolicies: policies },
    upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', ...extra }, 'ghcr.io': { url: 'https://ghcr.io' } },
  });
  return { hub: c.upstreams.get('docker.io')!, ghcr: c.upstreams.get('ghcr.io')! };
}

t.test('semver tags: three numbers, an optional v, an optional pre-release', async (t) => {
  for (const tag of ['1.2.3', 'v1.2.3', '0.0.0', '10.20.30', '1.2.3-rc1', '1.2.3-rc.1', 'v2.0.0-beta.2', '1.25.3-alpine', '1.2.3-0', '1.2.3-x-y-z.--']) {
    t.ok(isSemverTag(tag), `${tag} is semver`);
  }
  for (const tag of ['latest', '1', '1.2', 'v1.2', '1.2.3.4', '01.2.3', '1.02.3', '1.2.03', 'V1.2.3', '1.2.3-', '1.2.3-rc..1', '1.2.3-01', 'vv1.2.3', '1.2.3_build', 'x1.2.3', '3.19', 'stable']) {
    t.notOk(isSemverTag(tag), `${tag} is not semver`);
  }
});

t.test('with no tiers every tag has the upstream tagTTL', async (t) => {
  const { hub } = upstreams([]);
  t.equal(tagTTLFor(hub, 'library/alpine', 'latest'), 5 * MIN);
  t.equal(tagTTLFor(hub, 'library/alpine', '1.2.3'), 5 * MIN);
});

t.test('the example tiers: latest 1 minute, semver forever, the rest the default', async (t) => {
  const { hub, ghcr } = upstreams([
    { tag: 'latest', ttl: '1m' },
    { tag: 'semver', ttl: 'forever' },
  ]);
  t.equal(tagTTLFor(hub, 'library/alpine', 'latest'), MIN);
  t.equal(tagTTLFor(hub, 'library/alpine', 'v1.2.3'), 'forever');
  t.equal(tagTTLFor(ghcr, 'org/app', '1.2.3-rc1'), 'forever');
  t.equal(tagTTLFor(hub, 'library/alpine', '3.19'), 5 * MIN, 'a moving minor tag keeps the default');
  t.equal(tagTTLFor(hub, 'library/alpine', 'edge'), 5 * MIN);
});

t.test('the first matching tier wins, whatever comes after it', async (t) => {
  const { hub } = upstreams([
    { repository: 'docker.io/library/**', tag: '*', ttl: '1h' },
    { tag: 'latest', ttl: '1m' },
  ]);
  t.equal(tagTTLFor(hub, 'library/alpine', 'latest'), 60 * MIN, 'the broader tier listed first decides');
  t.equal(tagTTLFor(hub, 'bitnami/redis', 'latest'), MIN, 'outside it, the next tier');
});

t.test('repositories are matched as <upstream>/<name> with the auth rules grammar', async (t) => {
  const { hub, ghcr } = upstreams([
    { repository: 'docker.io/library/*', tag: 'latest', ttl: '10s' },
    { repository: 'ghcr.io/org/**', tag: 'latest', ttl: '20s' },
  ]);
  t.equal(tagTTLFor(hub, 'library/alpine', 'latest'), 10_000);
  t.equal(tagTTLFor(hub, 'library/a/b', 'latest'), 5 * MIN, '* stays within one component');
  t.equal(tagTTLFor(ghcr, 'org/a/b/c', 'latest'), 20_000, '** spans components');
  t.equal(tagTTLFor(ghcr, 'library/alpine', 'latest'), 5 * MIN, 'another upstream with the same name is not matched');
  t.equal(tagTTLFor(hub, 'org/app', 'latest'), 5 * MIN);
});

t.test('tag globs: * is any characters, everything else literal and case-sensitive', async (t) => {
  const { hub } = upstreams([
    { tag: 'main-*', ttl: '30s' },
    { tag: '*-alpine', ttl: '2m' },
    { tag: 'v1.*', ttl: '3m' },
  ]);
  t.equal(tagTTLFor(hub, 'library/x', 'main-abc123'), 30_000);
  t.equal(tagTTLFor(hub, 'library/x', 'main-'), 30_000, '* may be empty');
  t.equal(tagTTLFor(hub, 'library/x', 'Main-abc'), 5 * MIN, 'case-sensitive');
  t.equal(tagTTLFor(hub, 'library/x', '3.19-alpine'), 2 * MIN);
  t.equal(tagTTLFor(hub, 'library/x', 'v1.9'), 3 * MIN);
  t.equal(tagTTLFor(hub, 'library/x', 'v1x9'), 5 * MIN, '. is a literal dot');
});

t.test('the fallback is the upstream own tagTTL where it overrides cache.tagTTL', async (t) => {
  const { hub, ghcr } = upstreams([{ tag: 'latest', ttl: '1m' }], { tagTTL: '1h' });
  t.equal(tagTTLFor(hub, 'library/alpine', 'latest'), MIN, 'the tier first');
  t.equal(tagTTLFor(hub, 'library/alpine', 'stable'), 60 * MIN, 'then the upstream override');
  t.equal(tagTTLFor(ghcr, 'org/app', 'stable'), 5 * MIN, 'other upstreams keep cache.tagTTL');
});

// ---------------------------------------------------------------- cache.gonePolicies (gone-tags.ts)

t.test('goneActionFor: the first gone policy whose repository matches decides; none: keep', async (t) => {
  const u = upstreamConfig('docker.io', {}, { gonePolicies: [{ repository: 'docker.io/my-org/ci-*', action: 'forget' }, { repository: 'docker.io/my-org/**', action: 'keep' }] });
  t.equal(goneActionFor(u, 'my-org/ci-runner'), 'forget');
  t.equal(goneActionFor(u, 'my-org/app'), 'keep');
  t.equal(goneActionFor(u, 'bitnami/redis'), 'keep', 'no match: keep');
  t.equal(goneActionFor(upstreamConfig('docker.io'), 'my-org/ci-runner'), 'keep', 'no policies: keep');
});
