// Which repositories of an upstream are proxied (upstreams.<name>.allow / deny): names within the
// upstream, deny first, then allow; a refusal is an OCI DENIED error naming the repository.
import t from 'tap';
import { parseConfig, type UpstreamConfig } from '../../lib/config/config.js';
import { assertProxied, refusal } from '../../lib/cache/repository-filter.js';
import { OciError } from '../../lib/oci/errors.js';

function hub(extra: Record<string, unknown>): UpstreamConfig {
  return parseConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', ...extra } } }).upstreams.get('docker.io')!;
}

function deniedWith(fn: () => void): OciError {
  try {
    fn();
  } catch (err) {
    if (err instanceof OciError) return err;
    throw err;
  }
  throw new Error('expected an OciError, nothing was thrown');
}

t.test('without allow or deny every repository is proxied', async (t) => {
  const u = hub({});
  t.equal(refusal(u, 'library/alpine'), null);
  t.equal(refusal(u, 'a/b/c'), null);
});

t.test('a deny entry refuses matching repositories with its reason, and no others', async (t) => {
  const u = hub({ deny: [{ repository: 'bitnami/**', reason: 'use the official images' }] });
  t.same(refusal(u, 'bitnami/redis'), { list: 'deny', pattern: 'bitnami/**', reason: 'use the official images' });
  t.same(refusal(u, 'bitnami/charts/redis'), { list: 'deny', pattern: 'bitnami/**', reason: 'use the official images' });
  t.equal(refusal(u, 'library/redis'), null);
  t.equal(refusal(u, 'bitnamix/redis'), null, 'a longer first component is another name');
});

t.test('the first matching deny entry gives the reason', async (t) => {
  const u = hub({ deny: [{ repository: 'library/busybox', reason: 'first' }, { repository: 'library/*', reason: 'second' }] });
  t.equal(refusal(u, 'library/busybox')?.reason, 'first');
  t.equal(refusal(u, 'library/alpine')?.reason, 'second');
});

t.test('with allow, only matching repositories are proxied', async (t) => {
  const u = hub({ allow: ['library/*', 'my-org/**'] });
  t.equal(refusal(u, 'library/alpine'), null);
  t.equal(refusal(u, 'my-org/team/app'), null);
  t.same(refusal(u, 'evil/miner'), { list: 'allow', pattern: null, reason: null });
  t.same(refusal(u, 'library/a/b'), { list: 'allow', pattern: null, reason: null }, '* stays within one component');
});

t.test('deny wins over allow', async (t) => {
  const u = hub({ allow: ['library/*'], deny: [{ repository: 'library/busybox', reason: 'no shells' }] });
  t.equal(refusal(u, 'library/busybox')?.list, 'deny');
  t.equal(refusal(u, 'library/alpine'), null);
});

t.test('an empty allow list proxies nothing', async (t) => {
  t.equal(refusal(hub({ allow: [] }), 'library/alpine')?.list, 'allow');
});

t.test('a denied repository is a 403 DENIED naming the repository and the reason', async (t) => {
  const err = deniedWith(() => assertProxied(hub({ deny: [{ repository: 'bitnami/redis', reason: 'use docker.io/library/redis (SEC-142)' }] }), 'bitnami/redis'));
  t.equal(err.code, 'DENIED');
  t.equal(err.status, 403);
  t.equal(err.message, 'docker.io/bitnami/redis is denied on this proxy: use docker.io/library/redis (SEC-142)');
});

t.test('a denied repository without a reason names the list that denies it', async (t) => {
  const err = deniedWith(() => assertProxied(hub({ deny: [{ repository: 'bitnami/redis' }] }), 'bitnami/redis'));
  t.equal(err.message, 'docker.io/bitnami/redis is denied on this proxy: upstreams.docker.io.deny includes it');
});

t.test('a repository outside allow is a 403 DENIED saying so', async (t) => {
  const err = deniedWith(() => assertProxied(hub({ allow: ['library/*'] }), 'evil/miner'));
  t.equal(err.code, 'DENIED');
  t.equal(err.message, 'docker.io/evil/miner is not proxied here: upstreams.docker.io.allow does not include it');
});

t.test('a proxied repository passes', async (t) => {
  t.doesNotThrow(() => assertProxied(hub({ allow: ['library/*'], deny: [{ repository: 'library/busybox' }] }), 'library/alpine'));
});
