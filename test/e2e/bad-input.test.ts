// Hostile and malformed requests against stevedore in front of a real CNCF distribution seeded
// with one image. Each is refused with the right status and OCI error code before anything is
// asked of the upstream (the counting proxy sees zero requests) or written to the store.
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { ociErrors, rawHead, rawRequest } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

interface Case {
  /** What is wrong, for the test name. */
  what: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  status: number;
  code: string;
}

t.test('bad input never reaches the upstream or the store', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('bad-input/seed', { layers: 1 });
  await pushImage(reg.url, 'library/alpine', 'v1', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, defaultUpstream: 'docker.io' });

  const layer = img.layers[0]!.digest;
  const hex = layer.slice('sha256:'.length);
  const m = (name: string, ref = 'v1'): string => `/v2/${name}/manifests/${ref}`;
  const b = (name: string, digest = layer): string => `/v2/${name}/blobs/${digest}`;

  const cases: Case[] = [
    // repository names
    { what: 'an uppercase name', path: m('Library/alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'an uppercase last component', path: m('library/ALPINE'), status: 400, code: 'NAME_INVALID' },
    { what: 'an uppercase name (blob)', path: b('library/Alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'a ".." component', path: m('library/../alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'a leading ".." component', path: m('../../etc/passwd'), status: 400, code: 'NAME_INVALID' },
    { what: 'a ".." component (blob)', path: b('library/..'), status: 400, code: 'NAME_INVALID' },
    { what: 'a "%2e%2e" component', path: m('library/%2e%2e/alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'a leading "%2e%2e" component', path: m('%2e%2e/%2e%2e/alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'a "%2F" inside a component', path: m('library%2Falpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'an empty component (a//b)', path: m('library//alpine'), status: 400, code: 'NAME_INVALID' },
    { what: 'a trailing "/" on the name', path: m('library/alpine/'), status: 400, code: 'NAME_INVALID' },
    { what: 'a name of 256 characters', path: m('a'.repeat(256)), status: 400, code: 'NAME_INVALID' },
    { what: 'a two-component name of 300 characters', path: m(`library/${'a'.repeat(292)}`), status: 400, code: 'NAME_INVALID' },
    // digests
    { what: 'a manifest digest "sha256:short"', path: m('library/alpine', 'sha256:short'), status: 400, code: 'DIGEST_INVALID' },
    { what: 'a blob digest "sha256:short"', path: b('library/alpine', 'sha256:short'), status: 400, code: 'DIGEST_INVALID' },
    { what: 'an md5 blob digest', path: b('library/alpine', 'md5:d41d8cd98f00b204e9800998ecf8427e'), status: 400, code: 'DIGEST_INVALID' },
    { what: 'an uppercase-hex blob digest', path: b('library/alpine', `sha256:${hex.toUpperCase()}`), status: 400, code: 'DIGEST_INVALID' },
    { what: 'an uppercase-hex manifest digest', path: m('library/alpine', `sha256:${img.manifest.digest.slice(7).toUpperCase()}`), status: 400, code: 'DIGEST_INVALID' },
    { what: 'an uppercase algorithm', path: b('library/alpine', `SHA256:${hex}`), status: 400, code: 'DIGEST_INVALID' },
    { what: 'a digest one hex digit short', path: b('library/alpine', `sha256:${hex.slice(1)}`), status: 400, code: 'DIGEST_INVALID' },
    { what: 'a tag where a blob digest belongs', path: b('library/alpine', 'latest'), status: 400, code: 'DIGEST_INVALID' },
    // tags
    { what: 'a tag starting with "-" (a tag that cannot exist is unknown)', path: m('library/alpine', '-bad'), status: 404, code: 'MANIFEST_UNKNOWN' },
    { what: 'a tag starting with "." (a tag that cannot exist is unknown)', path: m('library/alpine', '.bad'), status: 404, code: 'MANIFEST_UNKNOWN' },
    { what: 'a tag of 129 characters (a tag that cannot exist is unknown)', path: m('library/alpine', 'a'.repeat(129)), status: 404, code: 'MANIFEST_UNKNOWN' },
    // ns: only configured upstreams
    { what: 'ns naming an unconfigured registry', path: `${m('library/alpine')}?ns=evil.com`, status: 404, code: 'NAME_UNKNOWN' },
    { what: 'ns naming an unconfigured registry (blob)', path: `${b('library/alpine')}?ns=evil.com`, status: 404, code: 'NAME_UNKNOWN' },
    { what: "ns naming the upstream's own address", path: `${m('library/alpine')}?ns=${reg.host}`, status: 404, code: 'NAME_UNKNOWN' },
    { what: 'an empty ns', path: `${m('library/alpine')}?ns=`, status: 400, code: 'NAME_INVALID' },
    { what: 'ns with a path', path: `${m('library/alpine')}?ns=evil.com%2F..%2Fx`, status: 400, code: 'NAME_INVALID' },
    { what: 'ns with userinfo', path: `${m('library/alpine')}?ns=user%40evil.com`, status: 400, code: 'NAME_INVALID' },
    { what: 'ns with a scheme', path: `${m('library/alpine')}?ns=http%3A%2F%2Fevil.com`, status: 400, code: 'NAME_INVALID' },
    { what: 'ns in uppercase', path: `${m('library/alpine')}?ns=DOCKER.IO`, status: 400, code: 'NAME_INVALID' },
    { what: 'ns with a NUL byte', path: `${m('library/alpine')}?ns=docker.io%00.evil.com`, status: 400, code: 'NAME_INVALID' },
    // registry prefixes: only configured upstreams
    { what: 'an unconfigured registry prefix', path: m('evil.com/x'), status: 404, code: 'NAME_UNKNOWN' },
    { what: 'an unconfigured registry prefix (blob)', path: b('evil.com/library/alpine'), status: 404, code: 'NAME_UNKNOWN' },
    { what: 'a localhost prefix', path: m('localhost/x'), status: 404, code: 'NAME_UNKNOWN' },
    { what: 'a localhost:port prefix', path: m('localhost:5000/x'), status: 404, code: 'NAME_UNKNOWN' },
    { what: "the upstream's own address as prefix", path: m(`${reg.host}/library/alpine`), status: 404, code: 'NAME_UNKNOWN' },
    // writes: this proxy serves pulls
    { what: 'a manifest PUT', method: 'PUT', path: m('library/alpine'), headers: { 'content-type': img.manifest.mediaType }, body: img.manifest.data.toString(), status: 405, code: 'UNSUPPORTED' },
    { what: 'a manifest POST', method: 'POST', path: m('library/alpine'), body: '{}', status: 405, code: 'UNSUPPORTED' },
    { what: 'a manifest DELETE', method: 'DELETE', path: m('library/alpine', img.manifest.digest), status: 405, code: 'UNSUPPORTED' },
    { what: 'a blob DELETE', method: 'DELETE', path: b('library/alpine'), status: 405, code: 'UNSUPPORTED' },
    { what: 'an upload POST', method: 'POST', path: '/v2/library/alpine/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
    { what: 'an upload GET', path: '/v2/library/alpine/blobs/uploads/0b8c5a3e-1', status: 405, code: 'UNSUPPORTED' },
    // endpoints that do not exist
    { what: 'a catalog-like path that is no endpoint', path: '/v2/_catalogue', status: 404, code: 'NOT_FOUND' },
    { what: 'a manifest path without reference', path: '/v2/library/alpine/manifests/', status: 404, code: 'NOT_FOUND' },
    { what: 'a reference followed by "/"', path: `${m('library/alpine')}/`, status: 404, code: 'NOT_FOUND' },
    { what: 'an unknown /v2 endpoint', path: '/v2/library/alpine/whatever/v1', status: 404, code: 'NOT_FOUND' },
    { what: 'a v1 endpoint', path: '/v1/search?q=alpine', status: 404, code: 'NOT_FOUND' },
    { what: 'a POST to the dashboard', method: 'POST', path: '/', status: 405, code: 'UNSUPPORTED' },
    { what: 'a path under /ui that is no file', path: '/ui/index.html', status: 404, code: 'NOT_FOUND' },
  ];

  async function storedContent(): Promise<string[]> {
    return (await sd.storeFiles()).filter((f) => f.startsWith('blobs/') || f.startsWith('repositories/'));
  }

  for (const c of cases) {
    const method = c.method ?? 'GET';
    await t.test(`${c.what} is refused with ${c.status} ${c.code} (${method} ${c.path.length > 90 ? `${c.path.slice(0, 90)}...` : c.path})`, async (t) => {
      reg.resetCounts();
      const r = await rawRequest(`${sd.url}${c.path}`, {
        method,
        headers: { accept: MANIFEST_ACCEPT, ...c.headers },
        ...(c.body !== undefined ? { body: c.body } : {}),
      });
      t.equal(r.status, c.status, 'status');
      t.match(String(r.headers['content-type']), /^application\/json/, 'a JSON body');
      const errors = ociErrors(r);
      t.equal(errors?.[0]?.code, c.code, `code (body: ${r.body.toString('utf8').slice(0, 200)})`);
      t.equal(typeof errors?.[0]?.message, 'string', 'a message');
      // RFC 9110 §15.5.6: a 405 MUST carry Allow (the methods the resource supports, possibly none).
      if (c.status === 405) t.type(r.headers.allow, 'string', `an Allow header (got ${r.headers.allow})`);
      t.equal(reg.requests.length, 0, `no upstream request (saw: ${reg.requests.map((q) => `${q.method} ${q.path}`).join(', ')})`);
      t.same(await storedContent(), [], 'nothing under blobs/ or repositories/');
    });
  }

  const heads: Array<{ what: string; path: string; status: number }> = [
    { what: 'an invalid name', path: m('library/../alpine'), status: 400 },
    { what: 'an invalid blob digest', path: b('library/alpine', 'sha256:short'), status: 400 },
    { what: 'an unconfigured ns', path: `${b('library/alpine')}?ns=evil.com`, status: 404 },
    { what: 'an unconfigured registry prefix', path: m('evil.com/x'), status: 404 },
    { what: 'an unknown endpoint', path: '/v2/_catalogue', status: 404 },
  ];
  for (const h of heads) {
    await t.test(`HEAD with ${h.what} answers ${h.status} and no body`, async (t) => {
      reg.resetCounts();
      const port = Number(sd.host.split(':')[1]);
      const r = await rawHead('127.0.0.1', port, h.path);
      t.equal(r.status, h.status, 'status');
      t.equal(r.after.length, 0, `no bytes after the head (got ${JSON.stringify(r.after.toString('latin1').slice(0, 100))})`);
      t.equal(reg.requests.length, 0, 'no upstream request');
      t.same(await storedContent(), [], 'nothing under blobs/ or repositories/');
    });
  }

  // Control: the same proxy does reach the upstream for a valid request, so the zeros above mean something.
  await t.test('a valid request for the seeded image reaches the upstream and is answered', async (t) => {
    reg.resetCounts();
    const r = await rawRequest(`${sd.url}${m('library/alpine')}`, { headers: { accept: MANIFEST_ACCEPT } });
    t.equal(r.status, 200);
    t.ok(r.body.equals(img.manifest.data), 'the seeded manifest');
    t.equal(reg.count('GET', '/v2/library/alpine/manifests/v1'), 1, 'one upstream GET');
    const blob = await rawRequest(`${sd.url}${b('alpine')}`);
    t.equal(blob.status, 200);
    t.ok(blob.body.equals(img.layers[0]!.data), 'the seeded layer, by bare name (library/ added)');
  });
});
