// The benchmark suite in quick mode (`npm run bench:quick`: tiny sizes, one run, seconds), so the
// benchmark cannot rot. Asserts only that it completes and reports a number for every scenario and
// contender — never anything about the figures themselves.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { run, tmpDir, which } from '../fixtures/util.js';

// The benchmark runs the dist/ tap's before script compiled (--prebuilt: no build of its own);
// on a loaded 2-core machine the whole quick run took over two minutes once: more than tap's
// 300 s per file allows with margin.
t.setTimeout(480_000);

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function isNumber(x: unknown): boolean {
  return typeof x === 'number' && Number.isFinite(x) && x >= 0;
}

/** Every listed series exists and holds at least one finite number. */
function seriesPresent(t: Test, obj: unknown, where: string, keys: string[]): void {
  const rec = obj as Record<string, unknown> | undefined;
  t.ok(rec, `${where} is reported`);
  for (const k of keys) {
    const s = rec?.[k];
    t.ok(Array.isArray(s) && s.length > 0 && s.every(isNumber), `${where}.${k} holds numbers`);
  }
}

t.test('the quick benchmark completes and reports numbers for every scenario', async (t) => {
  const dir = await tmpDir(t, 'stevedore-bench-quick-');
  const md = path.join(dir, 'RESULTS.md');
  const json = path.join(dir, 'results.json');
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Coverage and tap's loaders are for this test process, not for the benchmark's servers.
  delete env.NODE_V8_COVERAGE;
  delete env.NODE_OPTIONS;
  const r = await run(which('npm'), ['run', '--silent', 'bench:quick', '--', '--prebuilt', '--out', md, '--json', json], { cwd: ROOT, env, timeoutMs: 450_000 });
  t.equal(r.code, 0, `npm run bench:quick exits 0\n${r.stderr.slice(-4000)}`);
  if (r.code !== 0) return;

  const { results } = JSON.parse(await fsp.readFile(json, 'utf8')) as { results: Record<string, Record<string, unknown>> };
  for (const name of ['stevedore', 'distribution', 'nginx']) {
    seriesPresent(t, results.s1?.[name], `s1.${name}`, ['mibps', 'undici']);
    seriesPresent(t, results.s2?.[name], `s2.${name}`, ['mibps', 'p50', 'p99', 'undici', 'undiciP50', 'undiciP99', 'rss']);
    seriesPresent(t, results.s3?.[name], `s3.${name}`, ['rps', 'p50', 'p99']);
    seriesPresent(t, results.s4?.[name], `s4.${name}`, ['rps', 'p50', 'p99']);
  }
  const modes = (results.s5 as { modes?: Record<string, unknown> } | undefined)?.modes;
  seriesPresent(t, modes?.direct, 's5.direct', ['wallS', 'upstreamBytes', 'upstreamRequests']);
  for (const name of ['stevedore', 'distribution']) seriesPresent(t, modes?.[name], `s5.${name}`, ['wallS', 'upstreamBytes', 'upstreamRequests', 'rss']);
  seriesPresent(t, results.s6, 's6', ['rss', 'wallS', 'upstreamBytes']);
  seriesPresent(t, results.s7, 's7', ['startupMs', 'indexMs', 'rss']);
  const s8 = (results.s8 as { contenders?: Record<string, Record<string, unknown>> } | undefined)?.contenders;
  for (const name of ['stevedore', 'distribution', 'nginx']) {
    seriesPresent(t, s8?.[name], `s8.${name}`, ['rps', 'wrkErrors', 'hangups', 'cut', 'fdsBefore', 'fdsAfter', 'rssBefore', 'rssAfter']);
    const survived = s8?.[name]?.survived;
    t.ok(Array.isArray(survived) && survived.length > 0 && survived.every((x) => typeof x === 'boolean'), `s8.${name}.survived says yes or no`);
  }
  t.same(s8?.stevedore?.survived, [true], 'stevedore survived the clients that hang up');
  const s9 = (results.s9 as { modes?: Record<string, unknown> } | undefined)?.modes;
  seriesPresent(t, s9?.direct, 's9.direct', ['wallS', 'upstreamBytes', 'upstreamRequests']);
  for (const name of ['stevedore', 'distribution']) seriesPresent(t, s9?.[name], `s9.${name}`, ['wallS', 'upstreamBytes', 'upstreamRequests', 'rss']);
  const s10 = (results.s10 as { modes?: Record<string, unknown> } | undefined)?.modes;
  seriesPresent(t, s10?.preheat, 's10.preheat', ['preheatS']);
  for (const name of ['peers', 'central', 'preheat']) {
    seriesPresent(t, s10?.[name], `s10.${name}`, ['wallS', 'centralBytes', 'centralRequests', 'peerBytes', 'upstreamBytes', 'rssCentral', 'rssNode']);
    t.same((s10?.[name] as { hangupAnswered?: unknown } | undefined)?.hangupAnswered, [true], `s10.${name}: the node whose client hung up still answers`);
  }

  const report = await fsp.readFile(md, 'utf8');
  for (const heading of ['## Targets', '## 1. ', '## 2. ', '## 3. ', '## 4. ', '## 5. ', '## 6. ', '## 7. ', '## 8. ', '## 9. ', '## 10. ']) {
    t.ok(report.includes(heading), `the report has "${heading}"`);
  }
  t.notMatch(report, /\bn\/a\b|NaN/, 'no figure in the report is missing');
});
