// The dashboard's memory of requests (lib/server/dashboard/activity.ts), on a clock the test moves.
import t from 'tap';
import { Activity, MAX_UNVERIFIED, MINUTES, type AnsweredRequest } from '../../lib/server/dashboard/activity.js';
import type { ServedUnverified } from '../../lib/verify/signature-gate.js';

const MIN = 60_000;

function setup(): { a: Activity; clock: { now: number }; fetched: { n: number } } {
  const clock = { now: 100 * MIN };
  const fetched = { n: 0 };
  return { a: new Activity(() => clock.now, () => fetched.n), clock, fetched };
}

const req = (over: Partial<AnsweredRequest> = {}): AnsweredRequest => ({
  method: 'GET',
  path: '/v2/library/app/blobs/sha256:aa',
  route: 'blob',
  status: 200,
  cache: 'hit',
  bytes: 100,
  repository: 'docker.io/library/app',
  error: undefined,
  credentials: false,
  ...over,
});

t.test('an hour of minutes: answers from the store and fetched, bytes each way, in the minute they happened', async (t) => {
  const { a, clock, fetched } = setup();
  a.record(req({ cache: 'miss', bytes: 1000 }));
  fetched.n = 1000;
  clock.now += MIN;
  a.record(req({ cache: 'hit', bytes: 1000 }));
  a.record(req({ cache: 'revalidated', route: 'manifest', bytes: 10 }));
  const h = a.history();
  t.equal(h.length, MINUTES);
  t.same(h.slice(-2).map((b) => [b.fromStore, b.fetched, b.storeBytes, b.requests]), [[0, 1, 0, 1], [2, 0, 1010, 2]]);
  t.equal(h.reduce((n, b) => n + b.upstreamBytes, 0), 1000, 'the fetched bytes counted once');
  t.equal(h.at(-1)!.at - h[0]!.at, (MINUTES - 1) * MIN, 'sixty consecutive minutes');
});

t.test('minutes older than an hour are forgotten', async (t) => {
  const { a, clock } = setup();
  a.record(req());
  clock.now += MINUTES * MIN;
  a.record(req({ cache: 'miss' }));
  const h = a.history();
  t.equal(h.reduce((n, b) => n + b.requests, 0), 1, 'only the recent request');
  t.equal(h.reduce((n, b) => n + b.fromStore, 0), 0);
});

t.test("the dashboard's own polling, scrapes and probes are not registry requests", async (t) => {
  const { a } = setup();
  for (const route of ['dashboard', 'metrics', 'healthz', 'readyz']) a.record(req({ route, cache: undefined, repository: null }));
  a.record(req());
  t.equal(a.history().at(-1)!.requests, 1);
});

t.test('errors shown: 5xx and 4xx, not the routine ones (a challenge, a HEAD probe, a client hanging up)', async (t) => {
  const { a } = setup();
  const err = (status: number, over: Partial<AnsweredRequest> = {}): AnsweredRequest =>
    req({ status, cache: undefined, error: { code: `E${status}`, message: `m${status}` }, ...over });
  a.record(err(401)); // no credentials: the challenge
  a.record(err(404, { method: 'HEAD' }));
  a.record(err(499));
  a.record(err(401, { credentials: true }));
  a.record(err(404));
  a.record(err(503));
  t.same(a.recentErrors(() => true).map((e) => e.code), ['E503', 'E404', 'E401'], 'newest first');
});

t.test('a recorded error keeps its path without the query (a scope may name another repository)', async (t) => {
  const { a } = setup();
  a.record(req({ route: 'token', path: '/token?scope=repository:secret/db:pull', status: 401, credentials: true, repository: null, error: { code: 'UNAUTHORIZED', message: 'bad password' } }));
  t.equal(a.recentErrors(() => true)[0]!.path, '/token');
});

t.test('the last 50 errors are kept', async (t) => {
  const { a } = setup();
  for (let i = 0; i < 60; i++) a.record(req({ status: 500, error: { code: 'UNKNOWN', message: String(i) } }));
  const e = a.recentErrors(() => true);
  t.equal(e.length, 50);
  t.equal(e[0]!.message, '59');
  t.equal(e.at(-1)!.message, '10');
});

t.test('top repositories: by manifest pulls or by bytes, only those the viewer may see', async (t) => {
  const { a } = setup();
  for (let i = 0; i < 3; i++) a.record(req({ route: 'manifest', repository: 'docker.io/library/many', bytes: 1 }));
  a.record(req({ route: 'blob', repository: 'docker.io/library/big', bytes: 10_000 }));
  a.record(req({ route: 'manifest', method: 'HEAD', repository: 'docker.io/library/head', bytes: 0 }));
  a.record(req({ route: 'manifest', repository: 'docker.io/library/failed', status: 404, cache: undefined }));
  const all = (): boolean => true;
  t.same(a.topRepositories('pulls', 10, all).map((r) => [r.repository, r.pulls]), [['docker.io/library/many', 3]], 'a HEAD or a failure is no pull');
  t.same(a.topRepositories('bytes', 10, all).map((r) => r.repository), ['docker.io/library/big', 'docker.io/library/many']);
  t.same(a.topRepositories('bytes', 10, (r) => r !== 'docker.io/library/big').map((r) => r.repository), ['docker.io/library/many']);
  t.same(a.recentErrors((r) => r !== 'docker.io/library/failed'), [], 'an error naming a hidden repository is hidden');
});

const unverified = (repository: string, digest = 'sha256:aa', reason = 'no signature'): ServedUnverified => ({
  repository,
  digest,
  policy: 'verify.policies[0] (docker.io/**)',
  result: 'unsigned',
  reason,
});

t.test('a manifest served without a valid signature is listed once: first and last served, how often, the reason last given', async (t) => {
  const { a, clock } = setup();
  a.recordUnverified(unverified('docker.io/library/app'));
  clock.now += MIN;
  a.recordUnverified(unverified('docker.io/library/other', 'sha256:bb'));
  clock.now += MIN;
  a.recordUnverified({ ...unverified('docker.io/library/app'), result: 'invalid', reason: 'signed by another key' });
  const list = a.unverifiedImages(() => true);
  t.same(
    list.map((u) => [u.repository, u.digest, u.count, u.firstAt, u.lastAt, u.result, u.reason]),
    [
      ['docker.io/library/app', 'sha256:aa', 2, 100 * MIN, 102 * MIN, 'invalid', 'signed by another key'],
      ['docker.io/library/other', 'sha256:bb', 1, 101 * MIN, 101 * MIN, 'unsigned', 'no signature'],
    ],
    'last served first',
  );
  t.equal(list[0]!.policy, 'verify.policies[0] (docker.io/**)');
  t.same(a.unverifiedImages((r) => r !== 'docker.io/library/app').map((u) => u.repository), ['docker.io/library/other'], 'only what the viewer may see');
});

t.test(`at most ${MAX_UNVERIFIED} manifests served unverified are kept, the least recently served forgotten`, async (t) => {
  const { a, clock } = setup();
  for (let i = 0; i < MAX_UNVERIFIED + 10; i++) {
    clock.now += 1000;
    a.recordUnverified(unverified(`docker.io/library/app${i}`));
  }
  const list = a.unverifiedImages(() => true);
  t.equal(list.length, MAX_UNVERIFIED);
  t.equal(list[0]!.repository, `docker.io/library/app${MAX_UNVERIFIED + 9}`);
  t.equal(list.at(-1)!.repository, 'docker.io/library/app10');
});
