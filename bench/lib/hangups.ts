/** Clients that hang up, and what a server looks like afterwards (scenarios 8, 10 and 11). */
import { request } from 'undici';
import { hangUp, requestHead } from '../../test/fixtures/hangup.js';
import { memStatus, openFds } from './proc.js';
import type { Server } from './servers.js';

export function fdsOf(s: Server): number {
  return s.pids().reduce((n, pid) => n + (openFds(pid) ?? 0), 0);
}

export function rssOf(s: Server): number {
  return s.pids().reduce((n, pid) => n + (memStatus(pid)?.rss ?? 0), 0);
}

/** Null when `s` answers as it should (a proxy: 200 on /v2/; nginx: below 500 on /), else what it did. */
export async function answerProblem(s: Server): Promise<string | null> {
  const p = s.name === 'nginx' ? '/' : '/v2/';
  try {
    // reset: a fresh connection, closed after the answer (nothing left open in the fd count).
    const res = await request(`${s.url}${p}`, { reset: true, headersTimeout: 5000, bodyTimeout: 5000 });
    await res.body.dump();
    const ok = s.name === 'nginx' ? res.statusCode < 500 : res.statusCode === 200;
    return ok ? null : `GET ${p} answered ${res.statusCode}`;
  } catch (err) {
    return `GET ${p} failed: ${(err as Error).message}`;
  }
}

export interface HangupRound {
  clients: number;
  /** Reset at the byte chosen for them (the others found the connection closed first, or timed out). */
  cut: number;
}

/** `clients` raw clients at once GET `urlPath` and reset the connection at a random byte of the answer. */
export async function hangupRound(s: Server, urlPath: string, size: number, clients: number, rand: () => number): Promise<HangupRound> {
  const port = Number(new URL(s.url).port);
  const targets = Array.from({ length: clients }, () => 1 + Math.floor(rand() * size));
  const got = await Promise.all(targets.map((at) => hangUp(port, [requestHead('GET', urlPath)], { afterReceived: at, reset: true, timeoutMs: 30_000 })));
  return { clients, cut: got.filter((g, i) => !g.serverClosed && g.received >= targets[i]!).length };
}
