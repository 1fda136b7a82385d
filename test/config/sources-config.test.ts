// upstreams.*.sources and node mode (node.central, node.peers): what is accepted, what each
// upstream's sources resolve to, and the clear error for each mistake.
import t from 'tap';
import { ConfigError, parseConfig } from '../../lib/config/config.js';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

const REDIS = 'redis://127.0.0.1:6379';
const PEERS = { advertise: 'http://10.0.0.7:5001', token: 'a-shared-secret-of-32-characters' };

t.test('an upstream with a url has that url as its one source, named by its host', async (t) => {
  const c = parseConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', username: 'u', password: 'p' } } });
  const u = c.upstreams.get('docker.io')!;
  t.equal(u.sources.length, 1);
  t.match(u.sources[0], { kind: 'url', name: 'registry-1.docker.io', url: 'https://registry-1.docker.io', namespace: 'none', credentials: { username: 'u', password: 'p' } });
});

t.test('sources keep their order, their own credentials and timeouts; the last url is the upstream url', async (t) => {
  const c = parseConfig({
    timeouts: { connect: '10s' },
    upstreams: {
      'docker.io': {
        sources: [
          { url: 'http://central:5000', name: 'central', namespace: 'ns', username: 'node', password: 'pw', timeouts: { connect: '2s' } },
          { url: 'https://mirror.gcr.io' },
          { url: 'https://registry-1.docker.io' },
        ],
      },
    },
  });
  const u = c.upstreams.get('docker.io')!;
  t.same(
    u.sources.map((s) => (s.kind === 'url' ? [s.name, s.namespace, s.credentials?.username ?? null, s.timeouts.connect] : ['peers'])),
    [
      ['central', 'ns', 'node', 2_000],
      ['mirror.gcr.io', 'none', null, 10_000],
      ['registry-1.docker.io', 'none', null, 10_000],
    ],
  );
  t.equal(u.url, 'https://registry-1.docker.io');
});

t.test('node.central puts peers (when configured) and the central stevedore before every upstream url', async (t) => {
  const c = parseConfig({ metadata: { redis: REDIS }, node: { central: { url: 'http://central:5000' }, peers: PEERS } });
  for (const u of c.upstreams.values()) {
    t.same(
      u.sources.map((s) => (s.kind === 'url' ? `${s.name}:${s.namespace}` : 'peers')),
      ['peers', 'central:ns', `${new URL(u.url).host}:none`],
      u.name,
    );
  }
  const noPeers = parseConfig({ node: { central: { url: 'http://central:5000' } } });
  t.same(noPeers.upstreams.get('docker.io')!.sources.map((s) => s.kind), ['url', 'url'], 'without peers: central, then the registry');
});

t.test('node.peers defaults: group default, ttl 10m, badFor 1m, short timeouts over the global ones', async (t) => {
  const c = parseConfig({ metadata: { redis: REDIS }, node: { central: { url: 'http://central:5000' }, peers: PEERS } });
  t.match(c.node.peers, { advertise: 'http://10.0.0.7:5001', group: 'default', ttl: 600_000, badFor: 60_000, timeouts: { connect: 1_000, firstByte: 5_000, stall: 5_000, request: 120_000 } });
});

const refused: Array<[string, Record<string, unknown>, RegExp]> = [
  ['an upstream with neither url nor sources', { defaultUpstream: null, upstreams: { 'r.example.com': {} } }, /^upstreams\.r\.example\.com\.url: required/],
  [
    'an upstream with both url and sources',
    { defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', sources: [{ url: 'https://r.example.com' }] } } },
    /^upstreams\.r\.example\.com: give url or sources, not both/,
  ],
  [
    'credentials on an upstream with sources',
    { defaultUpstream: null, upstreams: { 'r.example.com': { username: 'u', password: 'p', sources: [{ url: 'https://r.example.com' }] } } },
    /^upstreams\.r\.example\.com: with sources, credentials go on the source/,
  ],
  ['an empty sources list', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [] } } }, /^upstreams\.r\.example\.com\.sources: /],
  ['sources of peers alone', { defaultUpstream: null, metadata: { redis: REDIS }, node: { peers: PEERS }, upstreams: { 'r.example.com': { sources: ['peers'] } } }, /sources: at least one source must be a url/],
  ['peers without node.peers', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: ['peers', { url: 'https://r.example.com' }] } } }, /peers needs node\.peers/],
  [
    'peers listed twice',
    { defaultUpstream: null, metadata: { redis: REDIS }, node: { peers: PEERS }, upstreams: { 'r.example.com': { sources: ['peers', 'peers', { url: 'https://r.example.com' }] } } },
    /peers is listed more than once/,
  ],
  [
    'two sources with one name',
    { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [{ url: 'https://a.example.com', name: 'x' }, { url: 'https://b.example.com', name: 'x' }] } } },
    /sources\.1: two sources are named x/,
  ],
  ['a source with a path', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [{ url: 'https://r.example.com/v2' }] } } }, /sources\.0\.url: must be an origin only/],
  ['a source with a username only', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [{ url: 'https://r.example.com', username: 'u' }] } } }, /sources\.0: username and password go together/],
  ['an unknown namespace mode', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [{ url: 'https://r.example.com', namespace: 'prefix' }] } } }, /sources\.0\.namespace: /],
  ['an unknown key in a source', { defaultUpstream: null, upstreams: { 'r.example.com': { sources: [{ url: 'https://r.example.com', token: 'x' }] } } }, /sources\.0: .*"token"/],
  ['node.peers without metadata.redis', { node: { central: { url: 'http://central:5000' }, peers: PEERS } }, /^node\.peers: needs metadata\.redis/],
  ['node.peers that no upstream asks', { metadata: { redis: REDIS }, node: { peers: PEERS } }, /^node\.peers: no upstream asks the peers/],
  ['a short peer token', { metadata: { redis: REDIS }, node: { central: { url: 'http://c:5000' }, peers: { ...PEERS, token: 'short' } } }, /^node\.peers\.token: at least 16 characters/],
  ['an advertise URL with a path', { metadata: { redis: REDIS }, node: { central: { url: 'http://c:5000' }, peers: { ...PEERS, advertise: 'http://10.0.0.7:5001/x' } } }, /^node\.peers\.advertise: must be an origin only/],
  ['an advertise URL that is not http', { metadata: { redis: REDIS }, node: { central: { url: 'http://c:5000' }, peers: { ...PEERS, advertise: 'ftp://10.0.0.7' } } }, /^node\.peers\.advertise: /],
  ['a bad peer group', { metadata: { redis: REDIS }, node: { central: { url: 'http://c:5000' }, peers: { ...PEERS, group: 'a b' } } }, /^node\.peers\.group: /],
  ['node.central with a username only', { node: { central: { url: 'http://c:5000', username: 'u' } } }, /^node\.central: username and password go together/],
];
for (const [what, doc, expected] of refused) {
  t.test(`refused: ${what}`, async (t) => {
    const got = problems(() => parseConfig(doc));
    t.ok(got.some((p) => expected.test(p)), `${expected} in ${JSON.stringify(got)}`);
  });
}
