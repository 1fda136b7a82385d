// The `Link: <url>; rel="next"` header of an upstream's paginated tags list (distribution spec,
// "Listing Tags"): a next page on the upstream's own origin is followed; anything else ends the list.
// Whatever an upstream writes there, listing its tags gives the tags or an UpstreamError, never
// another exception. Checked against a real HTTP server on 127.0.0.1.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import pino from 'pino';
import t from 'tap';
import { parseConfig } from '../../lib/config/config.js';
import { UpstreamError } from '../../lib/upstream/errors.js';
import { UpstreamSources } from '../../lib/upstream/upstream-sources.js';
import { charsFrom, holdsAsync } from '../fixtures/property.js';

/** What the fake upstream answers: the first page with `link` (if any), any other path as a last page. */
let link: string | null = null;
const server = http.createServer((req, res) => {
  const first = req.url === '/v2/x/tags/list';
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (first && link !== null) headers.link = link;
  res.writeHead(200, headers);
  res.end(JSON.stringify({ name: 'x', tags: [first ? 'one' : 'two'] }));
});
server.keepAliveTimeout = 100;
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const client = new UpstreamSources(parseConfig({ defaultUpstream: null, upstreams: { fake: { url: origin } } }).upstreams.get('fake')!, pino({ level: 'silent' }));
t.teardown(async () => {
  await client.close();
  server.close();
  server.closeAllConnections();
});

/** Header-safe text: visible ASCII and spaces (what Node lets a server send). */
const headerText = charsFrom(`${Array.from({ length: 0x7e - 0x20 + 1 }, (_, i) => String.fromCharCode(0x20 + i)).join('')}`, 0, 30);
const target = fc.oneof(
  fc.constantFrom('/v2/x/tags/list?page=2', `${origin}/v2/x/tags/list?page=2`, 'http://other.example/v2/x/tags/list?page=2', '//other.example/x', 'http://[', 'http://a b', 'http://:99999999/', 'ht!tp://x'),
  headerText.filter((s) => !s.includes('>')),
);
const linkValue = fc.oneof(
  fc.tuple(target, fc.constantFrom('; rel="next"', ';rel=next', ' ; rel="next"', '; rel="prev"', '')).map(([u, rel]) => `<${u}>${rel}`),
  headerText,
);

/** Far above what this fake sends: the caps are not what is tested here. */
const LIMITS = { maxTags: 1_000, maxBytes: 1024 * 1024 };

t.test('whatever Link an upstream sends, the tags list is its tags (following a same-origin next page) or an UpstreamError', async (t) => {
  await holdsAsync(
    t,
    fc.asyncProperty(linkValue, async (l) => {
      link = l;
      try {
        const tags = await client.listTags('x', LIMITS);
        return JSON.stringify(tags) === JSON.stringify(['one']) || JSON.stringify(tags) === JSON.stringify(['one', 'two']);
      } catch (err) {
        return err instanceof UpstreamError;
      }
    }),
    { numRuns: 150 },
  );
});

t.test('a next page on the same origin is followed, one on another origin is not', async (t) => {
  await holdsAsync(
    t,
    fc.asyncProperty(fc.boolean(), fc.boolean(), async (sameOrigin, absolute) => {
      const path = '/v2/x/tags/list?page=2';
      link = `<${sameOrigin ? (absolute ? origin + path : path) : `http://other.example${path}`}>; rel="next"`;
      const tags = await client.listTags('x', LIMITS);
      return JSON.stringify(tags) === JSON.stringify(sameOrigin ? ['one', 'two'] : ['one']);
    }),
    { numRuns: 8 },
  );
});
