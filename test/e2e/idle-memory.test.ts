// server.idleMemoryReturn in a real `serve` process: the start-up return (a fresh process holds less),
// one return once quiet after requests, none for probes and scrapes alone (lib/server/idle-memory.ts).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** stevedore_memory_returns_total by reason, from /metrics (itself a scrape: no activity). */
async function returns(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^stevedore_memory_returns_total\{reason="([^"]+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

t.test('a fresh process that returned its start-up garbage holds less than one that did not', async (t) => {
  const dir = await tmpDir(t, 'stevedore-idle-');
  const on = await spawnStevedore(t, { storage: { path: path.join(dir, 'a') } });
  const off = await spawnStevedore(t, { storage: { path: path.join(dir, 'b') }, server: { idleMemoryReturn: null } });
  for (const p of [on, off]) t.equal((await fetch(`${p.url}/healthz`)).status, 200);
  await sleep(300);
  const [rssOn, rssOff] = [await rssOf(on.pid), await rssOf(off.pid)];
  t.comment(`fresh RSS: ${(rssOn / 1048576).toFixed(1)} MiB with the start-up return, ${(rssOff / 1048576).toFixed(1)} MiB without`);
  t.ok(rssOn < rssOff - 5 * 1048576, 'at least 5 MiB less');
  t.same(await returns(on.url), { 'start-up': 1, idle: 0 });
  t.same(await returns(off.url), { 'start-up': 0, idle: 0 }, 'null: none');
});

t.test('one return once quiet after requests; probes and scrapes alone cause none', async (t) => {
  const dir = await tmpDir(t, 'stevedore-idle-');
  const p = await spawnStevedore(t, { storage: { path: path.join(dir, 's') }, server: { idleMemoryReturn: '1s' } });
  // Probes and scrapes for 2.5 s (over twice the quiet time): nothing to return.
  for (let i = 0; i < 8; i++) {
    await (await fetch(`${p.url}/healthz`)).arrayBuffer();
    await returns(p.url);
    await sleep(300);
  }
  t.same(await returns(p.url), { 'start-up': 1, idle: 0 }, 'probes and scrapes are not activity');
  for (let i = 0; i < 20; i++) await (await fetch(`${p.url}/v2/`)).arrayBuffer();
  let seen = { idle: 0 } as Record<string, number>;
  for (let i = 0; i < 15 && !seen.idle; i++) {
    await sleep(1_500);
    seen = await returns(p.url);
  }
  t.equal(seen.idle, 1, 'returned once quiet');
  await sleep(2_500);
  t.equal((await returns(p.url)).idle, 1, 'once per busy spell');
});
