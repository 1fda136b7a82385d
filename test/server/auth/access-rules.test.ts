import t from 'tap';
import { parseConfig } from '../../../lib/config/config.js';
import { defaultAuthRules } from '../../../lib/config/auth-schema.js';
import { AccessRules, compilePattern } from '../../../lib/server/auth/access-rules.js';

// ---------------------------------------------------------------- patterns

const PATTERNS: Array<[string, string[], string[]]> = [
  ['**', ['a', 'lab/app', 'docker.io/library/alpine'], []],
  ['lab/*', ['lab/app', 'lab/x-y.z'], ['lab', 'lab/a/b', 'labx/app', 'other/lab/app']],
  ['lab/**', ['lab', 'lab/app', 'lab/a/b/c'], ['labs/app', 'x/lab/app']],
  ['docker.io/**', ['docker.io/library/alpine', 'docker.io/x'], ['dockerxio/library/alpine', 'ghcr.io/docker.io/x']],
  ['docker.io/library/*', ['docker.io/library/alpine'], ['docker.io/library/a/b', 'docker.io/org/app']],
  ['team-*/app', ['team-a/app', 'team-/app'], ['team-a/b/app', 'teamx/app']],
  ['a/**/z', ['a/z', 'a/b/z', 'a/b/c/z'], ['a/zz', 'b/a/z']],
  ['**/cache', ['cache', 'x/cache', 'x/y/cache'], ['x/cached']],
  ['localhost:5000/*', ['localhost:5000/app'], ['localhost:5001/app']],
  ['exact/name', ['exact/name'], ['exact/names', 'exact/name/x']],
];

for (const [pattern, yes, no] of PATTERNS) {
  t.test(`pattern ${pattern} matches what it should and nothing else`, async (t) => {
    const re = compilePattern(pattern);
    for (const name of yes) t.ok(re.test(name), `${pattern} matches ${name}`);
    for (const name of no) t.notOk(re.test(name), `${pattern} does not match ${name}`);
  });
}

t.test('a dot in a pattern is a literal dot', async (t) => {
  t.notOk(compilePattern('a.b/*').test('axb/c'));
});

// ---------------------------------------------------------------- rules

const rulesFrom = (auth: Record<string, unknown>, hosted: string[] = ['lab/**']): AccessRules => {
  const c = parseConfig({ auth, registry: { hosted } }).auth;
  return new AccessRules({ rules: c.rules, groups: c.groups, anonymousPull: c.anonymousPull, upstreams: ['docker.io'] });
};
const set = (s: Set<string>): string[] => [...s].sort();

t.test('defaults: anonymous pulls anything, every user may pull anything, and push and delete only in hosted repositories', async (t) => {
  const r = rulesFrom({});
  t.same(set(r.allowed(null, 'docker.io/library/alpine')), ['pull']);
  t.same(set(r.allowed(null, 'lab/app')), ['pull']);
  t.same(set(r.allowed('alice', 'lab/app')), ['delete', 'pull', 'push']);
  t.same(set(r.allowed('alice', 'docker.io/library/alpine')), ['pull'], 'no user may seed an upstream namespace by default');
  t.ok(r.anonymousPullsEverything());
});

t.test('the default push grant applies only to hosted names: a proxied <upstream>/<name> gets pull, whatever the hosted patterns', async (t) => {
  // A hosted pattern of ** is refused at start-up (config.ts); the grant holds without that check too.
  const r = new AccessRules({ rules: defaultAuthRules(['**']), groups: {}, anonymousPull: true, upstreams: ['docker.io', 'ghcr.io'] });
  t.same(set(r.allowed('bob', 'docker.io/library/alpine')), ['pull'], 'no push under docker.io/');
  t.same(set(r.allowed('bob', 'ghcr.io/org/app')), ['pull'], 'nor under ghcr.io/');
  t.same(set(r.allowed('bob', 'lab/app')), ['delete', 'pull', 'push'], 'hosted names keep the grant');
  const explicit = new AccessRules({
    rules: [{ repository: 'docker.io/**', users: ['seeder'], groups: [], actions: ['pull', 'push'] }],
    groups: {},
    anonymousPull: false,
    upstreams: ['docker.io'],
  });
  t.same(set(explicit.allowed('seeder', 'docker.io/library/alpine')), ['pull', 'push'], 'a rule that names the upstream still seeds it');
});

t.test('anonymousPull false: anonymous clients get nothing unless a rule names them', async (t) => {
  const r = rulesFrom({ anonymousPull: false });
  t.same(set(r.allowed(null, 'docker.io/library/alpine')), []);
  t.notOk(r.anonymousPullsEverything());
  const r2 = rulesFrom({
    anonymousPull: false,
    rules: [{ repository: 'docker.io/**', users: ['anonymous'], actions: ['pull'] }],
  });
  t.same(set(r2.allowed(null, 'docker.io/library/alpine')), ['pull']);
  t.same(set(r2.allowed(null, 'lab/app')), []);
  t.same(set(r2.allowed('alice', 'docker.io/library/alpine')), [], 'a rule for anonymous does not cover users');
  t.notOk(r2.anonymousPullsEverything());
});

t.test('users and groups: rules add up, a user gets only what some rule names them for', async (t) => {
  const r = rulesFrom({
    groups: { ci: ['jenkins', 'gitlab'], admins: ['root'] },
    rules: [
      { repository: '**', users: ['*'], actions: ['pull'] },
      { repository: 'lab/**', groups: ['ci'], actions: ['push'] },
      { repository: 'lab/app', users: ['alice'], actions: ['push'] },
      { repository: '**', groups: ['admins'], actions: ['pull', 'push', 'delete'] },
    ],
  });
  t.same(set(r.allowed('jenkins', 'lab/app')), ['pull', 'push']);
  t.same(set(r.allowed('gitlab', 'lab/x/y')), ['pull', 'push']);
  t.same(set(r.allowed('jenkins', 'docker.io/library/alpine')), ['pull']);
  t.same(set(r.allowed('alice', 'lab/app')), ['pull', 'push']);
  t.same(set(r.allowed('alice', 'lab/other')), ['pull']);
  t.same(set(r.allowed('root', 'anything/at/all')), ['delete', 'pull', 'push']);
  t.same(set(r.allowed('stranger', 'lab/app')), ['pull'], '* covers any authenticated user');
  t.same(set(r.allowed(null, 'lab/app')), ['pull'], 'anonymousPull still on');
});

t.test('a user in no group and named by no rule gets nothing when no rule uses *', async (t) => {
  const r = rulesFrom({ anonymousPull: false, groups: { ci: ['bot'] }, rules: [{ repository: '**', groups: ['ci'], actions: ['pull'] }] });
  t.same(set(r.allowed('bot', 'x')), ['pull']);
  t.same(set(r.allowed('eve', 'x')), []);
});
