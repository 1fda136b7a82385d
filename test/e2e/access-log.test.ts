// The access log line of a request: its path is logged whole up to 512 characters, and a longer
// one (a client can send ~16 KB of path, on every request) is cut there and marked, with its length.
import t from 'tap';
import { rawRequest } from '../fixtures/http-client.js';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('a path of 15,000 characters is logged as its first 512, marked as cut, with its length', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { offline: true } });
  const long = `/v2/${'a/'.repeat(7_500)}manifests/latest`;
  t.ok(long.length > 15_000, `a path of ${long.length} characters`);
  const r = await rawRequest(`${sd.url}${long}`);
  t.equal(r.status, 400, 'the name is refused');
  const line = sd.requestLogs().find((l) => String(l.path).startsWith('/v2/a/a/'));
  t.ok(line, 'the request was logged');
  t.equal(line!.path, `${long.slice(0, 512)}…[truncated, ${long.length} chars]`);
  t.ok(JSON.stringify(line).length < 2048, `the whole line stays small (${JSON.stringify(line).length} bytes)`);
});

t.test('a path of 512 characters or fewer is logged whole', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { offline: true } });
  const path = `/v2/library/${'b'.repeat(512 - '/v2/library//manifests/1'.length)}/manifests/1`;
  t.equal(path.length, 512);
  await rawRequest(`${sd.url}${path}`);
  t.equal(sd.requestLogs().find((l) => String(l.path).startsWith('/v2/library/bbb'))?.path, path);
});
