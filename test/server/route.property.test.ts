// The request path and the choice of upstream (distribution spec endpoints end-1 … end-13):
//
//   /v2/<name>/manifests/<reference>   /v2/<name>/blobs/<digest>   /v2/<name>/blobs/uploads/[<session>]
//   /v2/<name>/tags/list               /v2/<name>/referrers/<digest>
//
// <name> may itself hold components called "manifests", "blobs", "uploads", "tags"...: the route is
// read from the end of the path. Then `?ns=`, a configured upstream's prefix, or the default upstream
// chooses where the name is looked up; a host-like first component that is not configured is refused.
// Pagination (`n`, `last`) is parsed here too.
import fc from 'fast-check';
import t from 'tap';
import { parseConfig } from '../../lib/config/config.js';
import { isValidName } from '../../lib/oci/name.js';
import { paginate } from '../../lib/server/registry-handlers.js';
import { matchRoute, resolveRepo } from '../../lib/server/route.js';
import { anyString, attempt, charsFrom, digestString, holds, nameComponent, tag } from '../fixtures/property.js';

/** Names whose components are often the words of the routes themselves. */
const routeWord = fc.constantFrom('v2', 'manifests', 'blobs', 'uploads', 'tags', 'list', 'referrers', '_catalog');
const trickyName = fc.array(fc.oneof(nameComponent, routeWord), { minLength: 1, maxLength: 5 }).map((c) => c.join('/'));
const session = charsFrom('abcdef0123456789-_ABCXYZ', 1, 36);

t.test('every endpoint path gives back its name and its reference, digest or session, whatever the name holds', async (t) => {
  holds(
    t,
    fc.property(trickyName, fc.oneof(tag, digestString), digestString, session, (name, ref, digest, s) => {
      const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
      return (
        same(matchRoute(`/v2/${name}/manifests/${ref}`), { kind: 'manifest', name, reference: ref }) &&
        same(matchRoute(`/v2/${name}/blobs/${digest}`), { kind: 'blob', name, digest }) &&
        same(matchRoute(`/v2/${name}/blobs/uploads/`), { kind: 'upload', name }) &&
        same(matchRoute(`/v2/${name}/blobs/uploads`), { kind: 'upload', name }) &&
        same(matchRoute(`/v2/${name}/blobs/uploads/${s}`), { kind: 'upload', name, session: s }) &&
        same(matchRoute(`/v2/${name}/tags/list`), { kind: 'tags', name }) &&
        same(matchRoute(`/v2/${name}/referrers/${digest}`), { kind: 'referrers', name, digest })
      );
    }),
    { numRuns: 300 },
  );
});

t.test('any path gives null or a route whose name is not empty, and nothing throws', async (t) => {
  const pathLike = fc.oneof(
    anyString,
    anyString.map((s) => `/v2/${s}`),
    fc.array(fc.oneof(routeWord, charsFrom('a/.%', 0, 3)), { maxLength: 6 }).map((p) => `/v2/${p.join('/')}`),
  );
  holds(
    t,
    fc.property(pathLike, (p) => {
      const r = matchRoute(p);
      return r === null || !('name' in r) || r.name.length > 0;
    }),
    { numRuns: 500 },
  );
});

// ---- choosing the upstream ------------------------------------------------------------------------

const config = parseConfig({});
const upstreamName = fc.constantFrom(...config.upstreams.keys());
/** Names whose first component does not look like a host (no "."), so no prefix is read into them. */
const plainName = fc.array(nameComponent.filter((c) => !c.includes('.')), { minLength: 1, maxLength: 4 }).map((c) => c.join('/'));

function lookedUpAs(upstream: string, name: string): string {
  return config.upstreams.get(upstream)!.library && !name.includes('/') ? `library/${name}` : name;
}

t.test('a configured upstream, named by ?ns= or by a path prefix, looks the rest of the name up there', async (t) => {
  holds(
    t,
    fc.property(upstreamName, plainName, (u, name) => {
      const byNs = resolveRepo(name, u, config);
      const byPrefix = resolveRepo(`${u}/${name}`, null, config);
      return (
        byNs.upstream.name === u &&
        byNs.name === lookedUpAs(u, name) &&
        byNs.clientName === name &&
        byPrefix.upstream.name === u &&
        byPrefix.name === lookedUpAs(u, name) &&
        byPrefix.clientName === `${u}/${name}`
      );
    }),
  );
});

t.test('a name without a host-like first component goes to the default upstream', async (t) => {
  holds(
    t,
    fc.property(plainName, (name) => {
      const r = resolveRepo(name, null, config);
      return r.upstream.name === config.defaultUpstream && r.name === lookedUpAs(config.defaultUpstream!, name);
    }),
  );
});

t.test('a host that is not configured is never chosen: NAME_UNKNOWN (404), or NAME_INVALID (400) when it is no host at all', async (t) => {
  const host = fc
    .tuple(fc.array(charsFrom('abcxyz019-', 1, 6), { minLength: 1, maxLength: 3 }), fc.option(fc.integer({ min: 1, max: 99999 }), { nil: undefined }), fc.boolean())
    .map(([labels, port, dot]) => `${labels.join('.')}${dot && labels.length === 1 ? '.example' : ''}${port !== undefined ? `:${port}` : ''}`)
    .filter((h) => /[.:]/.test(h) && !config.upstreams.has(h));
  holds(
    t,
    fc.property(host, plainName, fc.boolean(), (h, name, asNs) => {
      const outcome = attempt(() => (asNs ? resolveRepo(name, h, config) : resolveRepo(`${h}/${name}`, null, config)));
      return !outcome.ok && (outcome.code === 'NAME_UNKNOWN' ? outcome.status === 404 : outcome.code === 'NAME_INVALID' && outcome.status === 400);
    }),
  );
});

t.test('whatever the name and ns, the answer is a valid name on a configured upstream or NAME_INVALID / NAME_UNKNOWN', async (t) => {
  const rawName = fc.oneof(anyString, trickyName, fc.tuple(upstreamName, anyString).map(([u, s]) => `${u}/${s}`));
  const ns = fc.oneof(fc.constant(null), upstreamName, anyString);
  holds(
    t,
    fc.property(rawName, ns, (name, n) => {
      const outcome = attempt(() => resolveRepo(name, n, config));
      if (!outcome.ok) return outcome.code === 'NAME_INVALID' || outcome.code === 'NAME_UNKNOWN';
      return config.upstreams.get(outcome.value.upstream.name) === outcome.value.upstream && isValidName(outcome.value.name);
    }),
    { numRuns: 500 },
  );
});

// ---- pagination -----------------------------------------------------------------------------------

const sortedTags = fc.uniqueArray(tag, { maxLength: 30 }).map((tags) => tags.sort());

t.test('following the Link from page to page lists every tag once, in order, n at a time', async (t) => {
  holds(
    t,
    fc.property(sortedTags, fc.integer({ min: 1, max: 12 }), (tags, n) => {
      const seen: string[] = [];
      let query = new URLSearchParams({ n: String(n) });
      for (let pages = 0; pages <= tags.length + 1; pages++) {
        const { page, link } = paginate(tags, query, '/v2/x/tags/list');
        if (page.length > n) return false;
        seen.push(...page);
        if (link === null) return JSON.stringify(seen) === JSON.stringify(tags);
        const m = /^<\/v2\/x\/tags\/list\?([^>]*)>; rel="next"$/.exec(link);
        if (!m) return false;
        query = new URLSearchParams(m[1]);
      }
      return false;
    }),
  );
});

t.test('n of 1 to 9 digits is a page size; anything else is PAGINATION_NUMBER_INVALID', async (t) => {
  holds(
    t,
    fc.property(sortedTags, fc.oneof(fc.nat({ max: 10 ** 9 - 1 }).map(String), anyString, charsFrom('0123456789-+. e', 0, 11)), (tags, n) => {
      const outcome = attempt(() => paginate(tags, new URLSearchParams({ n }), '/v2/x/tags/list'));
      if (/^\d{1,9}$/.test(n)) return outcome.ok && outcome.value.page.length <= Number(n);
      return !outcome.ok && outcome.code === 'PAGINATION_NUMBER_INVALID' && outcome.status === 400;
    }),
  );
});

t.test('last= lists only what sorts after it', async (t) => {
  holds(
    t,
    fc.property(sortedTags, fc.oneof(tag, anyString), (tags, last) => {
      const { page } = paginate(tags, new URLSearchParams({ last }), '/v2/x/tags/list');
      return JSON.stringify(page) === JSON.stringify(tags.filter((x) => x > last));
    }),
  );
});
