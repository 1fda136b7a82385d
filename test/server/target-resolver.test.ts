// TargetResolver (lib/server/target.ts): a server's memo of name → target. It must answer exactly
// what resolveTarget and canonicalRepository answer, throw a refusal every time (never remember
// one), and stay bounded however many names clients send.
import t from 'tap';
import { parseConfig } from '../../lib/config/config.js';
import { OciError } from '../../lib/oci/errors.js';
import { HostedNames } from '../../lib/registry/hosted.js';
import { canonicalRepository } from '../../lib/server/auth/authorize-route.js';
import { resolveTarget, TargetResolver } from '../../lib/server/target.js';

const config = parseConfig({
  upstreams: { 'docker.io': { url: 'http://127.0.0.1:1', library: true }, 'ghcr.io': { url: 'http://127.0.0.1:2' } },
  defaultUpstream: 'docker.io',
  registry: { hosted: ['team/**'] },
});
const hosted = new HostedNames(config.registry.hosted);

t.test('every name resolves, asked once or twice, as resolveTarget and canonicalRepository resolve it', async (t) => {
  const r = new TargetResolver(config, hosted);
  const asked: Array<[string, string | null]> = [
    ['alpine', null],
    ['library/alpine', null],
    ['ghcr.io/org/app', null],
    ['org/app', 'ghcr.io'],
    ['team/app', null],
    ['team/app', 'docker.io'],
    ['docker.io/alpine', null],
  ];
  for (let round = 0; round < 2; round++) {
    for (const [name, ns] of asked) {
      t.same(r.resolve(name, ns), resolveTarget(name, ns, config, hosted), `${name} ?ns=${ns} (round ${round + 1})`);
      t.equal(r.canonical(name, ns), canonicalRepository(name, ns, config, hosted), `canonical ${name} ?ns=${ns}`);
    }
  }
  t.equal(r.canonical('alpine', null), 'docker.io/library/alpine');
  t.equal(r.canonical('team/app', null), 'team/app', 'hosted: its own name');
  t.equal(r.canonical('team/app', 'docker.io'), 'docker.io/team/app', 'the same name with ?ns= is the upstream\'s');
});

/** The code of the OciError `fn` throws; null when it throws nothing. */
function refusal(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return err instanceof OciError ? err.code : `not an OciError: ${String(err)}`;
  }
}

t.test('a refused name is refused every time it is asked, and never memoized', async (t) => {
  const r = new TargetResolver(config, hosted);
  for (const [name, ns, code] of [
    ['evil.com/x', null, 'NAME_UNKNOWN'],
    ['UPPER/case', null, 'NAME_INVALID'],
    ['org/app', 'quay.io', 'NAME_UNKNOWN'],
    [`org/${'a'.repeat(300)}`, null, 'NAME_INVALID'],
  ] as const) {
    for (let i = 0; i < 2; i++) t.equal(refusal(() => r.canonical(name, ns)), code, `${name} ?ns=${ns}: ${code} (try ${i + 1})`);
  }
  t.equal(r.size, 0, 'nothing memoized');
});

t.test('the memo is bounded: 5,000 names leave at most 1,000', async (t) => {
  const r = new TargetResolver(config, hosted);
  const wrong: string[] = [];
  for (let i = 0; i < 5_000; i++) if (r.canonical(`org/app-${i}`, null) !== `docker.io/org/app-${i}`) wrong.push(`org/app-${i}`);
  t.same(wrong, [], 'every name resolved right');
  t.ok(r.size <= 1_000, `${r.size} names memoized`);
});
