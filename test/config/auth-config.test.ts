import t from 'tap';
import { problems } from '../fixtures/config-problems.js';
import { parseConfig } from '../../lib/config/config.js';

function authProblems(auth: unknown): string[] {
  return problems(() => parseConfig({ auth }));
}

t.test('auth defaults: no users, anonymous pull, tokens for 5 minutes, every user may pull', async (t) => {
  t.same(parseConfig({}).auth, {
    htpasswd: null,
    token: { realm: null, service: 'stevedore', issuer: 'stevedore', ttl: 300_000, key: null },
    anonymousPull: true,
    trustedProxies: [],
    groups: {},
    rules: [{ repository: '**', users: ['*'], groups: [], actions: ['pull'] }],
  });
});

t.test('by default users push and delete only where repositories are hosted, never into an upstream namespace', async (t) => {
  const auth = parseConfig({ registry: { hosted: ['lab/**', 'team/*'] } }).auth;
  t.same(auth.rules, [
    { repository: '**', users: ['*'], groups: [], actions: ['pull'] },
    { repository: 'lab/**', users: ['*'], groups: [], actions: ['pull', 'push', 'delete'], hostedOnly: true },
    { repository: 'team/*', users: ['*'], groups: [], actions: ['pull', 'push', 'delete'], hostedOnly: true },
  ]);
});

t.test('a hosted pattern that can match a configured upstream\'s namespace is refused, naming the key and the upstream', async (t) => {
  const upstreams = { 'docker.io': { url: 'http://127.0.0.1:1' }, 'ghcr.io': { url: 'http://127.0.0.1:2' } };
  const found = problems(() => parseConfig({ upstreams, registry: { hosted: ['lab/**', '**', 'docker.io/**', '*/app', 'ghcr.io/org/*', '**/x'] } }));
  t.same(
    found.filter((p) => p.startsWith('registry.hosted')).map((p) => p.split(':')[0]),
    ['registry.hosted.1', 'registry.hosted.2', 'registry.hosted.3', 'registry.hosted.4', 'registry.hosted.5'],
    'every pattern that can reach <upstream>/... is reported, lab/** is not',
  );
  t.match(found.find((p) => p.startsWith('registry.hosted.1'))!, /"\*\*" can match docker\.io\/\.\.\. .*docker\.io/);
  t.match(found.find((p) => p.startsWith('registry.hosted.4'))!, /ghcr\.io/);
  t.doesNotThrow(() => parseConfig({ upstreams, defaultUpstream: 'docker.io', registry: { hosted: ['lab/**', 'team/*', '*', 'docker.io'] } }), 'names of one component, and lab/**, are not an upstream namespace');
});

t.test('rules given replace the default ones entirely', async (t) => {
  const auth = parseConfig({ registry: { hosted: ['lab/**'] }, auth: { rules: [{ repository: 'docker.io/**', users: ['seeder'], actions: ['pull', 'push'] }] } }).auth;
  t.same(auth.rules, [{ repository: 'docker.io/**', users: ['seeder'], groups: [], actions: ['pull', 'push'] }]);
});

t.test('trustedProxies takes addresses and CIDR ranges, IPv4 and IPv6', async (t) => {
  const list = ['10.0.0.1', '10.0.0.0/8', '192.168.1.0/24', 'fd00::/8', '::1', '::ffff:172.16.0.1'];
  t.same(parseConfig({ auth: { trustedProxies: list } }).auth.trustedProxies, list);
});

t.test('a trustedProxies entry that is not an address or range is reported at its key path', async (t) => {
  t.same(authProblems({ trustedProxies: ['10.0.0.0/8', 'proxy.example.com', '10.0.0.0/33', 'fd00::/129', '10.0.0.1/'] }), [
    'auth.trustedProxies.1: not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)',
    'auth.trustedProxies.2: not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)',
    'auth.trustedProxies.3: not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)',
    'auth.trustedProxies.4: not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)',
  ]);
});

t.test('a full auth section is read', async (t) => {
  const auth = parseConfig({
    auth: {
      htpasswd: '/etc/stevedore/htpasswd',
      token: { realm: 'https://registry.example.com/token', service: 'registry.example.com', issuer: 'stevedore-1', ttl: '15m', key: '/etc/stevedore/token.key' },
      anonymousPull: false,
      groups: { ci: ['jenkins'] },
      rules: [
        { repository: 'lab/*', groups: ['ci'], actions: ['pull', 'push'] },
        { repository: 'docker.io/**', users: ['anonymous', '*'], actions: ['pull'] },
      ],
    },
  }).auth;
  t.equal(auth.token.ttl, 900_000);
  t.equal(auth.token.realm, 'https://registry.example.com/token');
  t.same(auth.rules[0], { repository: 'lab/*', users: [], groups: ['ci'], actions: ['pull', 'push'] });
  t.ok(Object.isFrozen(auth.rules[0]), 'frozen like the rest of the config');
});

t.test('an undefined group in a rule is reported at its key path', async (t) => {
  t.same(authProblems({ groups: { ci: ['x'] }, rules: [{ repository: '**', groups: ['ci', 'ops'], actions: ['pull'] }] }), [
    'auth.rules.0.groups.1: group "ops" is not defined in auth.groups (ci)',
  ]);
});

t.test('bad patterns, actions and rules naming nobody are each reported', async (t) => {
  const p = authProblems({
    rules: [
      { repository: 'Lab/App', users: ['*'], actions: ['pull'] },
      { repository: 'lab/***', users: ['*'], actions: ['pull'] },
      { repository: 'lab//x', users: ['*'], actions: ['pull'] },
      { repository: 'lab/*', users: ['*'], actions: ['write'] },
      { repository: 'lab/*', actions: ['pull'] },
      { repository: 'lab/*', users: ['*'], actions: ['push'] },
      { repository: 'lab/*', users: ['*'], actions: [] },
      { repository: 'lab/*', users: ['*'], actions: ['pull'], verbs: ['x'] },
    ],
  });
  t.match(p, [
    /^auth\.rules\.0\.repository: not a repository pattern: "Lab\/App"/,
    /^auth\.rules\.1\.repository: not a repository pattern/,
    /^auth\.rules\.2\.repository: not a repository pattern/,
    /^auth\.rules\.3\.actions\.0: /,
    /^auth\.rules\.6\.actions: /,
    /^auth\.rules\.7: .*verbs/,
  ]);
  t.equal(p.length, 6, 'the refinement (4) waits until the shapes are right');
  const q = authProblems({ rules: [{ repository: 'lab/*', actions: ['pull'] }] });
  t.same(q, ['auth.rules.0: a rule names at least one user or group (`*`: every user, `anonymous`: no credentials)']);
});

t.test('anonymous clients may be granted push explicitly (an open registry)', async (t) => {
  const auth = parseConfig({ auth: { rules: [{ repository: '**', users: ['anonymous'], actions: ['pull', 'push', 'delete'] }] } }).auth;
  t.same(auth.rules[0]!.actions, ['pull', 'push', 'delete']);
});

t.test('token: ttl bounds, realm must be an http(s) URL, service free of quotes', async (t) => {
  t.match(authProblems({ token: { ttl: '30s' } }), [/^auth\.token\.ttl: must be between 1m and 24h/]);
  t.match(authProblems({ token: { ttl: '2d' } }), [/^auth\.token\.ttl: must be between 1m and 24h/]);
  t.match(authProblems({ token: { ttl: 'soon' } }), [/^auth\.token\.ttl: not a duration/]);
  t.match(authProblems({ token: { realm: 'ftp://x/token' } }), [/^auth\.token\.realm: must be http/]);
  t.match(authProblems({ token: { realm: 'token' } }), [/^auth\.token\.realm: not a URL/]);
  t.match(authProblems({ token: { realm: 'https://u:p@x/token' } }), [/^auth\.token\.realm: must be a plain URL/]);
  t.match(authProblems({ token: { service: 'my "registry"' } }), [/^auth\.token\.service: printable ASCII/]);
  t.match(authProblems({ token: { secret: 'x' } }), [/^auth\.token: .*secret/]);
});

t.test('groups: user names without ":" and no special names as members', async (t) => {
  t.match(authProblems({ groups: { ci: ['a:b'] } }), [/^auth\.groups\.ci\.0: a user name/]);
  t.match(authProblems({ groups: { ci: ['*'] } }), [/^auth\.groups\.ci\.0: "\*" is not a user name/]);
  t.match(authProblems({ groups: { 'bad group': ['a'] } }), [/^auth\.groups\.bad group: a group name/]);
  t.match(authProblems({ htpasswd: '' }), [/^auth\.htpasswd: /]);
  t.match(authProblems({ anonymousPull: 'yes' }), [/^auth\.anonymousPull: /]);
});

t.test('rules and groups name client certificate identities as cn:, dns:, uri: or email: and the value', async (t) => {
  const auth = parseConfig({
    auth: {
      groups: { nodes: ['cn:node-1', 'dns:node-2.nodes.example'] },
      rules: [{ repository: 'docker.io/**', users: ['uri:spiffe://cluster.local/ns/ci/sa/builder', 'email:ops@example.com', 'cn:Build Robot'], groups: ['nodes'], actions: ['pull'] }],
    },
  }).auth;
  t.same(auth.groups, { nodes: ['cn:node-1', 'dns:node-2.nodes.example'] });
  t.same(auth.rules[0]!.users, ['uri:spiffe://cluster.local/ns/ci/sa/builder', 'email:ops@example.com', 'cn:Build Robot']);
});

t.test('any other name with a ":" is refused: only the certificate kinds have one', async (t) => {
  t.match(authProblems({ rules: [{ repository: '**', users: ['user:alice', 'cn:', 'cn: padded'], actions: ['pull'] }] }), [
    /^auth\.rules\.0\.users\.0: .*cn:, dns:, uri: or email:/,
    /^auth\.rules\.0\.users\.1: /,
    /^auth\.rules\.0\.users\.2: /,
  ]);
});
