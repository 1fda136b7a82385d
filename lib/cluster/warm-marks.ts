/**
 * Warm marks: "these images should be on these node instances until then" (pre-heat before a
 * rollout, `stevedore prefetch --nodes`, `POST /_stevedore/preheat`). The records live in a node
 * group's coordination scope (`stevedore:peers:<group>:`), in the coordinator's holder directory
 * (a set of members with an expiry each; keys that are not digests):
 *
 *   has:warm-marks        member: a mark's JSON (WarmMark), scored by when it expires
 *   has:warm-nodes        member: a node instance's URL, announced every few seconds while it runs
 *   has:warmed:<mark id>  member: a node's report for one image of the mark (WarmReport JSON)
 *   warm-slot:<id>:<k>    lease: slot k of a mark chosen for N or P% of the nodes, held by the node
 *                         that took it (renewed while it runs; a dead node's slot lapses and a
 *                         node that joins later takes it)
 *
 * Selection for `N` / `P%`: slots. A mark for N nodes has N slots (P%: ceil(P × live nodes / 100),
 * at least 1); each node that sees the mark tries the slots in order with an atomic lease
 * acquisition and warms the images only when it holds one. Exactly that many nodes warm (when that
 * many run); the first nodes to look take them; a slot freed by a node that died goes to the next
 * node that looks, so a node started later fills it.
 *
 * Nothing read here is trusted beyond its form (rule 10): every member is parsed with zod
 * (`parseWarmMark`, `parseWarmReport`); a mark names an upstream the node must have configured, a
 * repository name and a digest, and the node fetches through its own sources only.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { tryParseDigest } from '../oci/digest.js';
import { isValidName, isValidTag } from '../oci/name.js';
import type { CoordinationScope } from './coordinator.js';

/** Marks a node acts on at most (the oldest first); the rest are ignored until these expire. */
export const MAX_MARKS = 32;
/** Images one mark may name. */
export const MAX_IMAGES_PER_MARK = 32;
/** How long a mark may last at most. */
export const MAX_MARK_TTL_MS = 7 * 24 * 3600_000;
/** A mark's TTL when none is given. */
export const DEFAULT_MARK_TTL_MS = 24 * 3600_000;
/** Keys in the directory (not digests). */
export const MARKS_KEY = 'warm-marks';
export const NODES_KEY = 'warm-nodes';
export function warmedKey(id: string): string {
  return `warmed:${id}`;
}
export function slotKey(id: string, k: number): string {
  return `warm-slot:${id}:${k}`;
}

/** all, N nodes, or P% of the live nodes. */
export type NodeSelection = { kind: 'all' } | { kind: 'count'; n: number } | { kind: 'percent'; p: number };

/** `all`, `3`, `50%`; null when it is none of them. */
export function parseNodeSelection(text: string): NodeSelection | null {
  const t = text.trim();
  if (t === 'all') return { kind: 'all' };
  if (/^[1-9]\d{0,5}$/.test(t)) return { kind: 'count', n: Number(t) };
  const m = /^([1-9]\d?|100)%$/.exec(t);
  if (m) return { kind: 'percent', p: Number(m[1]) };
  return null;
}

export function formatNodeSelection(s: NodeSelection): string {
  return s.kind === 'all' ? 'all' : s.kind === 'count' ? String(s.n) : `${s.p}%`;
}

/** How many nodes a selection asks for, with `live` nodes running. */
export function wantedNodes(s: NodeSelection, live: number): number {
  if (s.kind === 'all') return live;
  if (s.kind === 'count') return s.n;
  return Math.max(1, Math.ceil((s.p * live) / 100));
}

const digest = z.string().refine((d) => tryParseDigest(d) !== null, { message: 'not a digest' });
const platform = z.string().regex(/^[a-z0-9_.-]{1,32}\/[a-z0-9_.-]{1,32}(\/[a-z0-9_.-]{1,32})?$/);

const markImage = z
  .object({
    /** The upstream's name as configured (docker.io, ghcr.io). */
    registry: z.string().min(1).max(255),
    name: z.string().max(255).refine(isValidName, { message: 'not a repository name' }),
    tag: z.string().refine(isValidTag, { message: 'not a tag' }).nullable(),
    /** The manifest the reference resolved to when the mark was made. */
    digest,
  })
  .strict();

const selection = z.union([
  z.object({ kind: z.literal('all') }).strict(),
  z.object({ kind: z.literal('count'), n: z.number().int().min(1).max(100_000) }).strict(),
  z.object({ kind: z.literal('percent'), p: z.number().int().min(1).max(100) }).strict(),
]);

const markSchema = z
  .object({
    v: z.literal(1),
    id: z.string().regex(/^[0-9a-f]{16,64}$/),
    images: z.array(markImage).min(1).max(MAX_IMAGES_PER_MARK),
    platforms: z.array(platform).max(16).nullable(),
    nodes: selection,
    created: z.number().int().nonnegative(),
    expires: z.number().int().nonnegative(),
    /** Who made it (a user name, or `cli`), for logs. */
    by: z.string().max(200),
  })
  .strict();

export type WarmMark = z.output<typeof markSchema>;
export type WarmImage = WarmMark['images'][number];

/** A directory member as a mark, or the reason it is not one. */
export function parseWarmMark(member: string): { mark: WarmMark } | { error: string } {
  if (member.length > 64 * 1024) return { error: `${member.length} bytes (at most 64 KiB)` };
  let raw: unknown;
  try {
    raw = JSON.parse(member);
  } catch {
    return { error: 'not JSON' };
  }
  const r = markSchema.safeParse(raw);
  if (!r.success) return { error: r.error.issues.map((i) => `${i.path.join('.') || '(mark)'}: ${i.message}`).slice(0, 5).join('; ') };
  if (r.data.expires - r.data.created > MAX_MARK_TTL_MS + 60_000) return { error: 'lasts longer than 7 days' };
  return { mark: r.data };
}

const reportSchema = z
  .object({
    node: z.string().max(500),
    digest,
    ok: z.boolean(),
    /** Why it failed (ok false). */
    error: z.string().max(500).optional(),
    bytes: z.number().int().nonnegative().optional(),
  })
  .strict();

export type WarmReport = z.output<typeof reportSchema>;

export function parseWarmReport(member: string): WarmReport | null {
  if (member.length > 4096) return null;
  try {
    const r = reportSchema.safeParse(JSON.parse(member));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

export function newMarkId(): string {
  return randomBytes(8).toString('hex');
}

/** Records a mark in the group's scope (it lasts until `mark.expires`). */
export async function recordMark(scope: CoordinationScope, mark: WarmMark): Promise<void> {
  await scope.directory.announce([MARKS_KEY], JSON.stringify(mark), mark.expires, MAX_MARK_TTL_MS + 3600_000);
}

/** The live nodes of the group (those that announced themselves lately). */
export async function liveNodes(scope: CoordinationScope, now: number): Promise<string[]> {
  return scope.directory.holders(NODES_KEY, now);
}

/** Every node's reports for a mark, by node. */
export async function markReports(scope: CoordinationScope, id: string, now: number): Promise<Map<string, WarmReport[]>> {
  const out = new Map<string, WarmReport[]>();
  for (const member of await scope.directory.holders(warmedKey(id), now)) {
    const r = parseWarmReport(member);
    if (!r) continue;
    const list = out.get(r.node) ?? [];
    list.push(r);
    out.set(r.node, list);
  }
  return out;
}

export interface MarkProgress {
  /** Nodes the mark asks for now (all: the live nodes; N; P% of the live ones). */
  wanted: number;
  live: string[];
  /** Nodes that reported every image warm. */
  warm: string[];
  /** Nodes that reported an image failed, with the reason. */
  failed: Array<{ node: string; digest: string; error: string }>;
  /** Per node, the digests reported warm. */
  reports: Map<string, WarmReport[]>;
  /** Every wanted node finished (warm or failed). */
  finished: boolean;
}

export async function markProgress(scope: CoordinationScope, mark: WarmMark, now: number): Promise<MarkProgress> {
  const live = await liveNodes(scope, now);
  const reports = await markReports(scope, mark.id, now);
  const digests = mark.images.map((i) => i.digest);
  const warm: string[] = [];
  const failed: MarkProgress['failed'] = [];
  /** Nodes that reported every image, warm or failed. */
  const done = new Set<string>();
  for (const [node, list] of reports) {
    const ok = new Set(list.filter((r) => r.ok).map((r) => r.digest));
    const bad = new Set<string>();
    for (const r of list) {
      if (r.ok || ok.has(r.digest) || bad.has(r.digest)) continue;
      bad.add(r.digest);
      failed.push({ node, digest: r.digest, error: r.error ?? 'failed' });
    }
    if (digests.every((d) => ok.has(d))) warm.push(node);
    if (digests.every((d) => ok.has(d) || bad.has(d))) done.add(node);
  }
  // N / P%: as many as run (a mark for 5 nodes in a group of 3 is done when the 3 are).
  const wanted = mark.nodes.kind === 'all' ? live.length : Math.min(wantedNodes(mark.nodes, live.length), Math.max(live.length, done.size));
  const finished = wanted > 0 && (mark.nodes.kind === 'all' ? live.every((n) => done.has(n)) : done.size >= wanted);
  return { wanted, live, warm, failed, reports, finished };
}
