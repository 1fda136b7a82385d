// The policy keys: cache.tagTTLPolicies (tag TTL tiers).
// Each bad value is refused with the key path that holds it and a hint at what to write.
import t from 'tap';
import { ConfigError, parseConfig } from '../../lib/config/config.js';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

const HUB = { url: 'https://registry-1.docker.io' };
const policies = (list: unknown[]): unknown => parseConfig({ cache: { tagTTLPolicies: list } });

// ---------------------------------------------------------------- defaults

t.test('by default there are no tiers: every tag has the upstream tagTTL', async (t) => {
  const c = parseConfig({});
  t.same(c.cache.tagTTLPolicies, []);
  for (const u of c.upstreams.values()) t.same(u.tagTTLPolicies, [], `${u.name}`);
});

// ---------------------------------------------------------------- cache.tagTTLPolicies

t.test('tiers are kept in order, with durations in ms, forever as the keyword, and ** as the default repository', async (t) => {
  const c = parseConfig({
    cache: {
      tagTTLPolicies: [
        { tag: 'latest', ttl: '1m' },
        { repository: 'docker.io/library/**', tag: 'semver', ttl: 'forever' },
        { repository: 'ghcr.io/org/*', tag: 'main-*', ttl: 30 },
        { repository: '**', tag: '*', ttl: '0s' },
      ],
    },
  });
  t.same(c.cache.tagTTLPolicies, [
    { repository: '**', tag: 'latest', ttl: 60_000 },
    { repository: 'docker.io/library/**', tag: 'semver', ttl: 'forever' },
    { repository: 'ghcr.io/org/*', tag: 'main-*', ttl: 30_000 },
    { repository: '**', tag: '*', ttl: 0 },
  ]);
  t.same(c.upstreams.get('ghcr.io')!.tagTTLPolicies, c.cache.tagTTLPolicies, 'every upstream sees the same tiers');
});

t.test('an upstream tagTTL stays the fallback beside the tiers', async (t) => {
  const c = parseConfig({ cache: { tagTTL: '5m', tagTTLPolicies: [{ tag: 'latest', ttl: '1m' }] }, upstreams: { 'docker.io': { ...HUB, tagTTL: '1h' } } });
  t.equal(c.upstreams.get('docker.io')!.tagTTL, 3_600_000);
  t.equal(c.upstreams.get('docker.io')!.tagTTLPolicies.length, 1);
});

t.test('a bad ttl is refused under its key with the duration hint and the forever keyword', async (t) => {
  t.match(problems(() => policies([{ tag: 'latest', ttl: 'soon' }])), [
    /^cache\.tagTTLPolicies\.0\.ttl: not a duration: "soon" \(use e\.g\. 30s, 5m, 1h, 7d, or forever: never revalidated\)$/,
  ]);
});

for (const keyword of ['never', 'Forever', 'infinite', 'always']) {
  t.test(`the unknown ttl keyword ${JSON.stringify(keyword)} is refused`, async (t) => {
    t.match(problems(() => policies([{ tag: 'latest', ttl: keyword }])), [new RegExp(`^cache\\.tagTTLPolicies\\.0\\.ttl: not a duration: "${keyword}" .*or forever`)]);
  });
}

t.test('a negative ttl is refused', async (t) => {
  t.match(problems(() => policies([{ tag: 'latest', ttl: -5 }])), [/^cache\.tagTTLPolicies\.0\.ttl: not a duration/]);
});

for (const keyword of ['SemVer', 'SEMVER']) {
  t.test(`the tag keyword written ${keyword} is refused as an unknown keyword, naming the right one`, async (t) => {
    t.match(problems(() => policies([{ tag: keyword, ttl: '1h' }])), [new RegExp(`^cache\\.tagTTLPolicies\\.0\\.tag: unknown keyword "${keyword}": the keyword is semver`)]);
  });
}

for (const bad of ['', 'a/b', '.hidden', '-x', 'v1.2.3+build', 'semver()', '$semver', 'x'.repeat(129), 'with space']) {
  t.test(`the tag pattern ${JSON.stringify(bad.slice(0, 20))} is refused under its key`, async (t) => {
    t.match(problems(() => policies([{ tag: bad, ttl: '1h' }])), [/^cache\.tagTTLPolicies\.0\.tag: not a tag pattern: .*or the keyword semver\)$/]);
  });
}

t.test('a policy without a tag or a ttl is refused, naming the missing key', async (t) => {
  const p = problems(() => policies([{ ttl: '1m' }, { tag: 'latest' }]));
  t.ok(p.some((x) => x.startsWith('cache.tagTTLPolicies.0.tag: ')), p.join('\n'));
  t.ok(p.some((x) => x.startsWith('cache.tagTTLPolicies.1.ttl: ')), p.join('\n'));
});

t.test('a misspelt key in a policy is refused and named', async (t) => {
  const p = problems(() => policies([{ tag: 'latest', TTL: '1m' }]));
  t.ok(p.some((x) => /^cache\.tagTTLPolicies\.0: .*"TTL"/.test(x)), p.join('\n'));
});

for (const bad of ['Docker.io/**', 'docker.io//x', 'docker.io/a**', '/x', 'docker.io/Library/alpine']) {
  t.test(`the repository pattern ${JSON.stringify(bad)} is refused under its key`, async (t) => {
    t.match(problems(() => policies([{ repository: bad, tag: 'latest', ttl: '1m' }])), [/^cache\.tagTTLPolicies\.0\.repository: /]);
  });
}

t.test('a policy repository that names no configured upstream is refused: policies match <upstream>/<name>', async (t) => {
  t.match(problems(() => policies([{ repository: 'library/*', tag: 'latest', ttl: '1m' }])), [
    /^cache\.tagTTLPolicies\.0\.repository: "library\/\*" names no configured upstream \(docker\.io, .*\): policies match <upstream>\/<name>/,
  ]);
});

t.test('a policy for a one-component Docker Hub name is refused with the library/ spelling', async (t) => {
  t.match(problems(() => policies([{ repository: 'docker.io/alpine', tag: 'latest', ttl: '1m' }])), [
    /^cache\.tagTTLPolicies\.0\.repository: "docker\.io\/alpine" never matches: .*write docker\.io\/library\/alpine$/,
  ]);
});

t.test('patterns starting with a wildcard are accepted for any upstream', async (t) => {
  t.equal(parseConfig({ cache: { tagTTLPolicies: [{ repository: '*/library/**', tag: 'latest', ttl: '1m' }] } }).cache.tagTTLPolicies.length, 1);
});

t.test('every bad policy is reported at once, with the other errors of the document', async (t) => {
  const p = problems(() => parseConfig({ listen: 'x', cache: { tagTTLPolicies: [{ tag: 'a/b', ttl: '1m' }, { tag: 'latest', ttl: 'soon' }] } }));
  t.equal(p.length, 3, p.join('\n'));
  t.match(p, [/^listen: /, /^cache\.tagTTLPolicies\.0\.tag: /, /^cache\.tagTTLPolicies\.1\.ttl: /]);
});
