// The policy keys: cache.tagTTLPolicies (tag TTL tiers) and upstreams.<name>.allow / deny.
// Each bad value is refused with the key path that holds it and a hint at what to write.
import t from 'tap';
import { problems } from '../fixtures/config-problems.js';
import { parseConfig } from '../../lib/config/config.js';

const HUB = { url: 'https://registry-1.docker.io' };
const policies = (list: unknown[]): unknown => parseConfig({ cache: { tagTTLPolicies: list } });
const hub = (extra: Record<string, unknown>): unknown => parseConfig({ upstreams: { 'docker.io': { ...HUB, ...extra } } });

// ---------------------------------------------------------------- defaults

t.test('by default there are no tiers: every tag has the upstream tagTTL', async (t) => {
  const c = parseConfig({});
  t.same(c.cache.tagTTLPolicies, []);
  for (const u of c.upstreams.values()) t.same(u.tagTTLPolicies, [], `${u.name}`);
});

t.test('by default every repository of every upstream is proxied: no allow list, an empty deny list', async (t) => {
  for (const u of parseConfig({}).upstreams.values()) {
    t.equal(u.allow, null, `${u.name} allow`);
    t.same(u.deny, [], `${u.name} deny`);
  }
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

// ---------------------------------------------------------------- upstreams.<name>.allow / deny

t.test('allow and deny are kept per upstream; a deny without a reason has reason null', async (t) => {
  const c = parseConfig({
    upstreams: {
      'docker.io': { ...HUB, allow: ['library/*', 'bitnami/**'], deny: [{ repository: 'bitnami/redis', reason: 'use library/redis' }, { repository: 'library/busybox' }] },
      'ghcr.io': { url: 'https://ghcr.io' },
    },
  });
  const d = c.upstreams.get('docker.io')!;
  t.same(d.allow, ['library/*', 'bitnami/**']);
  t.same(d.deny, [
    { repository: 'bitnami/redis', reason: 'use library/redis' },
    { repository: 'library/busybox', reason: null },
  ]);
  t.equal(c.upstreams.get('ghcr.io')!.allow, null, 'another upstream is not restricted');
});

t.test('an empty allow list is accepted: nothing of that upstream is proxied', async (t) => {
  t.same(parseConfig({ upstreams: { 'docker.io': { ...HUB, allow: [] } } }).upstreams.get('docker.io')!.allow, []);
});

t.test('a bad allow pattern is refused under its index', async (t) => {
  t.match(problems(() => hub({ allow: ['library/*', 'Bad Name'] })), [/^upstreams\.docker\.io\.allow\.1: not a repository pattern: "Bad Name"/]);
});

t.test('a bad deny pattern is refused under its key', async (t) => {
  t.match(problems(() => hub({ deny: [{ repository: 'a**/b', reason: 'x' }] })), [/^upstreams\.docker\.io\.deny\.0\.repository: not a repository pattern/]);
});

t.test('a deny entry needs a repository, and knows no other keys than repository and reason', async (t) => {
  t.match(problems(() => hub({ deny: [{ reason: 'x' }] })), [/^upstreams\.docker\.io\.deny\.0\.repository: /]);
  t.match(problems(() => hub({ deny: [{ repository: 'library/x', why: 'x' }] })), [/^upstreams\.docker\.io\.deny\.0: .*"why"/]);
});

t.test('a deny reason is one line of text', async (t) => {
  t.match(problems(() => hub({ deny: [{ repository: 'library/x', reason: 'two\nlines' }] })), [/^upstreams\.docker\.io\.deny\.0\.reason: .*one line/]);
  t.match(problems(() => hub({ deny: [{ repository: 'library/x', reason: '   ' }] })), [/^upstreams\.docker\.io\.deny\.0\.reason: /]);
  t.match(problems(() => hub({ deny: [{ repository: 'library/x', reason: 'x'.repeat(501) }] })), [/^upstreams\.docker\.io\.deny\.0\.reason: .*500/]);
});

t.test('allow and deny patterns that start with the upstream name are refused: they are names within it', async (t) => {
  t.match(problems(() => hub({ allow: ['docker.io/library/*'] })), [/^upstreams\.docker\.io\.allow\.0: "docker\.io\/library\/\*" never matches: .*write "library\/\*"$/]);
  t.match(problems(() => hub({ deny: [{ repository: 'docker.io/bitnami/**' }] })), [/^upstreams\.docker\.io\.deny\.0\.repository: .*write "bitnami\/\*\*"$/]);
});

t.test('on Docker Hub a one-component allow or deny pattern is refused with the library/ spelling', async (t) => {
  t.match(problems(() => hub({ allow: ['alpine'] })), [/^upstreams\.docker\.io\.allow\.0: "alpine" never matches: .*write library\/alpine$/]);
  t.match(problems(() => hub({ deny: [{ repository: '*' }] })), [/^upstreams\.docker\.io\.deny\.0\.repository: "\*" never matches: .*write library\/\*$/]);
});

t.test('on an upstream without the library rule a one-component pattern is fine', async (t) => {
  const c = parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', allow: ['app'], deny: [{ repository: '*' }] } } });
  t.same(c.upstreams.get('r.example.com')!.allow, ['app']);
  t.same(parseConfig({ upstreams: { 'docker.io': { ...HUB, library: false, allow: ['alpine'] } } }).upstreams.get('docker.io')!.allow, ['alpine']);
});

t.test('allow and deny are read-only once loaded', async (t) => {
  const u = parseConfig({ upstreams: { 'docker.io': { ...HUB, allow: ['library/*'], deny: [{ repository: 'library/x' }] } } }).upstreams.get('docker.io')!;
  t.throws(() => (u.allow as string[]).push('evil/**'));
  t.throws(() => ((u.deny[0] as { reason: string | null }).reason = 'changed'));
});

// ---------------------------------------------------------------- cache.gonePolicies

t.test('by default no gone policy is set: every upstream keeps what it deleted', async (t) => {
  const c = parseConfig({});
  t.same(c.cache.gonePolicies, []);
  for (const u of c.upstreams.values()) t.same(u.gonePolicies, [], `${u.name}`);
});

t.test('gone policies are kept in order, with ** as the default repository, and every upstream sees them', async (t) => {
  const c = parseConfig({ cache: { gonePolicies: [{ repository: 'docker.io/my-org/ci-*', action: 'forget' }, { action: 'keep' }] } });
  t.same(c.cache.gonePolicies, [
    { repository: 'docker.io/my-org/ci-*', action: 'forget' },
    { repository: '**', action: 'keep' },
  ]);
  t.same(c.upstreams.get('ghcr.io')!.gonePolicies, c.cache.gonePolicies);
});

t.test('a gone policy action other than keep or forget is refused under its key', async (t) => {
  t.match(problems(() => parseConfig({ cache: { gonePolicies: [{ repository: '**', action: 'delete' }] } })), [/^cache\.gonePolicies\.0\.action: /]);
});

t.test('a gone policy repository that names no configured upstream is refused, as for tag TTL tiers', async (t) => {
  t.match(problems(() => parseConfig({ cache: { gonePolicies: [{ repository: 'bitnami/**', action: 'forget' }] } })), [
    /^cache\.gonePolicies\.0\.repository: "bitnami\/\*\*" names no configured upstream/,
  ]);
});
