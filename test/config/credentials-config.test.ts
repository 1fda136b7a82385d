// upstreams.*.credentials and passwordFile (and the same on each source), and cache.refreshAhead:
// what each resolves to, and the clear error for each mistake, named by its key.
import t from 'tap';
import { GCP_METADATA_URL, parseConfig } from '../../lib/config/config.js';
import { problems } from '../fixtures/config-problems.js';

const URL_ = 'https://r.example.com';
const upstream = (u: Record<string, unknown>) => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: URL_, ...u } } }).upstreams.get('r.example.com')!;

t.test('username with passwordFile is a credential source read from the file; no password in the configuration', async (t) => {
  const u = upstream({ username: 'robot', passwordFile: '/run/secrets/registry-password' });
  t.equal(u.credentials, null, 'no static credentials');
  t.same(u.credentialSource, { type: 'basic', username: 'robot', passwordFile: '/run/secrets/registry-password' });
  t.match(u.sources[0], { credentialSource: { type: 'basic', passwordFile: '/run/secrets/registry-password' } });
});

t.test('each kind of credentials resolves with its defaults', async (t) => {
  t.same(upstream({ credentials: { type: 'helper', helper: 'ecr-login' } }).credentialSource, { type: 'helper', helper: 'ecr-login', serverURL: null, cacheFor: null });
  t.same(upstream({ credentials: { type: 'helper', helper: 'gcr', cacheFor: '10m' } }).credentialSource, { type: 'helper', helper: 'gcr', serverURL: null, cacheFor: 600_000 });
  t.same(upstream({ credentials: { type: 'ecr' } }).credentialSource, { type: 'ecr', region: null, registryId: null, endpoint: null });
  t.same(upstream({ credentials: { type: 'ecr', region: 'eu-west-1', registryId: '123456789012', endpoint: 'https://api.ecr.eu-west-1.amazonaws.com' } }).credentialSource, {
    type: 'ecr',
    region: 'eu-west-1',
    registryId: '123456789012',
    endpoint: 'https://api.ecr.eu-west-1.amazonaws.com',
  });
  t.same(upstream({ credentials: { type: 'gcp' } }).credentialSource, { type: 'gcp', keyFile: null, tokenFile: null, metadataUrl: GCP_METADATA_URL }, 'the metadata server by default');
  t.equal(GCP_METADATA_URL, 'http://metadata.google.internal');
  t.same(upstream({ credentials: { type: 'gcp', keyFile: '/k.json' } }).credentialSource, { type: 'gcp', keyFile: '/k.json', tokenFile: null, metadataUrl: GCP_METADATA_URL });
  t.same(upstream({ credentials: { type: 'acr', tokenFile: '/t' } }).credentialSource, { type: 'acr', tokenFile: '/t', token: null, tenant: null, authorityHost: null });
});

t.test('${VAR} gives an ACR token from the environment', async (t) => {
  const c = parseConfig({ defaultUpstream: null, upstreams: { 'x.azurecr.io': { url: 'https://x.azurecr.io', credentials: { type: 'acr', token: '${AZURE_TOKEN}' } } } }, { env: { AZURE_TOKEN: 'aad-token' } });
  t.match(c.upstreams.get('x.azurecr.io')!.credentialSource, { type: 'acr', token: 'aad-token' });
});

t.test('each source has its own credentials; the upstream has none of its own', async (t) => {
  const c = parseConfig({
    upstreams: {
      'docker.io': {
        sources: [
          { url: 'https://mirror.example.com', credentials: { type: 'gcp', tokenFile: '/token' } },
          { url: 'https://registry-1.docker.io', username: 'me', passwordFile: '/pw' },
        ],
      },
    },
  });
  const u = c.upstreams.get('docker.io')!;
  t.equal(u.credentialSource, null);
  t.match(u.sources, [{ credentialSource: { type: 'gcp', tokenFile: '/token' } }, { credentialSource: { type: 'basic', username: 'me', passwordFile: '/pw' } }]);
});

t.test('mistakes are reported under their key, all at once', async (t) => {
  const p = problems(() =>
    parseConfig({
      upstreams: {
        a: { url: URL_, username: 'u', password: 'p', passwordFile: '/pw' },
        b: { url: URL_, passwordFile: '/pw' },
        c: { url: URL_, username: 'u', password: 'p', credentials: { type: 'ecr' } },
        d: { url: URL_, credentials: { type: 'gcp', keyFile: '/k', tokenFile: '/t' } },
        e: { url: URL_, credentials: { type: 'acr', token: 't', tokenFile: '/t' } },
        f: { url: URL_, credentials: { type: 'vault' } },
        g: { url: URL_, credentials: { type: 'ecr', registryId: 'me' } },
        h: { sources: [{ url: URL_ }], credentials: { type: 'ecr' } },
        i: { sources: [{ url: URL_, username: 'u' }] },
      },
      defaultUpstream: null,
    }),
  );
  t.ok(p.includes('upstreams.a: give password or passwordFile, not both'), p.join('\n'));
  t.ok(p.includes('upstreams.b: username and passwordFile go together'));
  t.ok(p.includes('upstreams.c: give credentials or username/password, not both'));
  t.ok(p.includes('upstreams.d.credentials: give keyFile or tokenFile (or neither: the metadata server), not both'));
  t.ok(p.includes('upstreams.e.credentials: give tokenFile or token (or neither: AAD from the environment), not both'));
  t.ok(p.some((x) => x.startsWith('upstreams.f.credentials.type:')), 'an unknown type');
  t.ok(p.includes('upstreams.g.credentials.registryId: a 12-digit AWS account id'));
  t.ok(p.some((x) => x.startsWith('upstreams.h: with sources, credentials go on the source they are for')));
  t.ok(p.includes('upstreams.i.sources.0: username and password go together'));
});

t.test('cache.refreshAhead: on by default, each key overridable', async (t) => {
  t.same(parseConfig({}).cache.refreshAhead, { enabled: true, before: 30_000, minRequests: 10, perUpstream: 16 });
  t.same(parseConfig({ cache: { refreshAhead: { enabled: false, before: '1m', minRequests: 2, perUpstream: 4 } } }).cache.refreshAhead, {
    enabled: false,
    before: 60_000,
    minRequests: 2,
    perUpstream: 4,
  });
  t.match(problems(() => parseConfig({ cache: { refreshAhead: { before: 'soon', minRequests: 0 } } })), [/^cache\.refreshAhead\.before: not a duration/, /^cache\.refreshAhead\.minRequests:/]);
});
