/**
 * Pre-heat: warm the node tier before a rollout (docs/ARCHITECTURE.md section 3.7, the records in
 * lib/cluster/warm-marks.ts).
 *
 *   making a mark (`createWarmMark`: `stevedore prefetch --nodes`, `POST /_stevedore/preheat`):
 *     each image is resolved through this process's own pull path (tag → manifest digest), then
 *     the mark {images with digests, platforms, nodes all|N|P%, expiry} is recorded in the node
 *     group's scope and announced on its bus (`{kind: "warm-mark", id}`: a notice, not the mark).
 *   a node instance (`NodePreheat`, node mode only): when a mark is announced on the bus, and
 *     every `pollMs` (notices are best effort), it announces itself among the group's live nodes
 *     and reads the live marks (at most MAX_MARKS, the oldest first; a malformed
 *     one is logged once and ignored; an expired one is dropped). A mark for all nodes is warmed by
 *     every node, a mark for N / P% by the nodes holding one of its slots (warm-marks.ts). Warming
 *     is `prefetch` through this node's normal pull path: its own sources only (peers, central,
 *     registry), by the mark's digest, so each layer comes from central once (the `fetching:`
 *     lease) and then node to node. What was warmed is pinned until the mark expires (a record
 *     `warm/<mark id>` in the store lists the pins it added; after the expiry they are unpinned
 *     and become ordinary LRU entries), and reported in `has:warmed:<mark id>`.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import { isTagMoved, type CoordinationScope, type Lease } from '../cluster/coordinator.js';
import {
  MARKS_KEY,
  MAX_IMAGES_PER_MARK,
  MAX_MARKS,
  NODES_KEY,
  newMarkId,
  parseWarmMark,
  recordMark,
  slotKey,
  wantedNodes,
  warmedKey,
  liveNodes,
  type NodeSelection,
  type WarmImage,
  type WarmMark,
  type WarmReport,
} from '../cluster/warm-marks.js';
import { parseDigest, tryParseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { ImageRef } from '../oci/image-ref.js';
import type { BlobStore } from '../storage/blob-store.js';
import { readJsonRecord } from '../storage/records.js';
import { recordKeys } from '../storage/paths.js';
import { fetchPlan, parsePlatform, planPrefetch } from './prefetch.js';
import type { PullThrough } from './pull-through.js';
import type { PullUpstream } from './pull-types.js';

/** A node's slot of a mark lapses this long after the node last renewed it (it renews while it runs). */
const SLOT_LEASE_MS = 15_000;
/** Malformed marks remembered (logged once each). */
const MALFORMED_REMEMBERED = 256;

export interface MarkRequest {
  images: ImageRef[];
  nodes: NodeSelection;
  ttlMs: number;
  /** `os/arch[/variant]` each; null: every platform. */
  platforms: string[] | null;
  by: string;
}

/**
 * Resolves each image through this process's pull path and records the mark. Throws an OciError
 * for what the request got wrong (nothing is recorded then).
 */
export async function createWarmMark(
  deps: { scope: CoordinationScope; pull: PullThrough; upstreams: ReadonlyMap<string, PullUpstream>; now?: () => number },
  req: MarkRequest,
): Promise<WarmMark> {
  if (req.images.length === 0) throw new OciError('UNSUPPORTED', 'no image given');
  if (req.images.length > MAX_IMAGES_PER_MARK) throw new OciError('UNSUPPORTED', `${req.images.length} images: at most ${MAX_IMAGES_PER_MARK} per mark`);
  for (const p of req.platforms ?? []) parsePlatform(p);
  for (const img of req.images) {
    if (!deps.upstreams.has(img.registry)) throw new OciError('NAME_UNKNOWN', `${img.registry}/${img.name}: upstream ${img.registry} is not configured`);
  }
  const images: WarmImage[] = [];
  for (const img of req.images) {
    const target = { client: deps.upstreams.get(img.registry)!, name: img.name };
    const m = img.digest ? await deps.pull.getManifestByDigest(target, parseDigest(img.digest)) : await deps.pull.getManifestByTag(target, img.tag ?? 'latest');
    images.push({ registry: img.registry, name: img.name, tag: img.tag, digest: m.digest });
  }
  const now = (deps.now ?? Date.now)();
  const mark: WarmMark = { v: 1, id: newMarkId(), images, platforms: req.platforms, nodes: req.nodes, created: now, expires: now + req.ttlMs, by: req.by.slice(0, 200) };
  await recordMark(deps.scope, mark);
  // The nodes read the marks at once (best effort: they also look every few seconds).
  await deps.scope.bus.publish({ kind: 'warm-mark', from: mark.by, id: mark.id }).catch(() => false);
  return mark;
}

const warmRecord = z.object({ expires: z.number(), digests: z.array(z.string().refine((d) => tryParseDigest(d) !== null)) });
type WarmRecord = z.output<typeof warmRecord>;

export interface NodePreheatOptions {
  scope: CoordinationScope;
  /** Whether the coordinator answers now. */
  available(): boolean;
  /** This instance's URL (node.peers.advertise). */
  self: string;
  pull: PullThrough;
  upstreams: ReadonlyMap<string, PullUpstream>;
  blobs: BlobStore;
  log: Logger;
  pollMs?: number;
  now?: () => number;
}

/** A node instance's side of pre-heat: reads the marks, warms what it is chosen for, pins until expiry. */
export class NodePreheat {
  private readonly now: () => number;
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  /** A notice came during a look: look again after it. */
  private again = false;
  private closed = false;
  /** Marks warmed here (or failed), by id: not warmed again while they live. */
  private readonly done = new Set<string>();
  private readonly queued = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private readonly slots = new Map<string, Lease>();
  private readonly malformed = new Set<string>();
  private tooMany = false;
  /** The store's warm records (mark id → what it pinned), read at start. */
  private pins: Map<string, WarmRecord> | null = null;

  constructor(private readonly o: NodePreheatOptions) {
    this.now = o.now ?? (() => Date.now());
    this.pollMs = o.pollMs ?? 2_000;
  }

  start(): void {
    if (this.timer || this.closed) return;
    // A mark announced on the bus is read at once; the timer finds the ones whose notice was lost.
    void this.o.scope.bus
      .subscribe((m) => {
        if (!isTagMoved(m) && !this.closed) this.soon();
      })
      .catch((err: unknown) => this.o.log.warn({ err }, 'pre-heat: could not subscribe to warm-mark notices; marks are read every few seconds'));
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.pollMs);
    this.timer.unref();
  }

  /** A notice came: a look now, or right after the one under way. */
  private soon(): void {
    if (this.ticking) this.again = true;
    else void this.tick();
  }

  /** One look at the marks (also what the timer runs). Never rejects. */
  async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      await this.sweepPins();
      if (this.o.available()) await this.readMarks();
    } catch (err) {
      this.o.log.warn({ err }, 'pre-heat: could not read the warm marks (tried again shortly)');
    } finally {
      this.ticking = false;
    }
    if (this.again && !this.closed) {
      this.again = false;
      void this.tick();
    }
  }

  private async readMarks(): Promise<void> {
    const now = this.now();
    const { directory } = this.o.scope;
    const nodeTtl = Math.max(10_000, this.pollMs * 5);
    await directory.announce([NODES_KEY], this.o.self, now + nodeTtl, nodeTtl * 2);
    const live: WarmMark[] = [];
    for (const member of await directory.holders(MARKS_KEY, 0)) {
      const parsed = parseWarmMark(member);
      if ('error' in parsed) {
        if (!this.malformed.has(member)) {
          if (this.malformed.size >= MALFORMED_REMEMBERED) this.malformed.clear();
          this.malformed.add(member);
          this.o.log.warn({ reason: parsed.error, mark: member.slice(0, 200) }, 'pre-heat: a warm mark in the coordinator is malformed; ignored');
        }
        continue;
      }
      const mark = parsed.mark;
      if (mark.expires <= now) {
        // Expired: dropped from the group's marks (any node may; the others find it gone).
        await directory.withdraw([MARKS_KEY], member);
        continue;
      }
      live.push(mark);
    }
    live.sort((a, b) => a.created - b.created || a.id.localeCompare(b.id));
    if (live.length > MAX_MARKS && !this.tooMany) this.o.log.warn({ marks: live.length, actedOn: MAX_MARKS }, 'pre-heat: more live warm marks than a node acts on; the newest are left until older ones expire');
    this.tooMany = live.length > MAX_MARKS;
    const acted = live.slice(0, MAX_MARKS);
    const ids = new Set(acted.map((m) => m.id));
    for (const id of [...this.done]) if (!ids.has(id)) this.done.delete(id);
    for (const [id, lease] of [...this.slots]) {
      if (!ids.has(id)) {
        this.slots.delete(id);
        await lease.release();
      }
    }
    let nodes: number | null = null;
    for (const mark of acted) {
      if (this.done.has(mark.id) || this.queued.has(mark.id)) continue;
      if (mark.nodes.kind !== 'all') {
        nodes ??= (await liveNodes(this.o.scope, now)).length;
        if (!(await this.holdSlot(mark, wantedNodes(mark.nodes, nodes)))) continue;
      }
      this.queued.add(mark.id);
      this.queue = this.queue.then(() => this.warm(mark)).catch((err: unknown) => this.o.log.error({ err, mark: mark.id }, 'pre-heat: warming a mark failed'));
    }
  }

  /** Whether this node holds (or now takes) one of the mark's `count` slots. */
  private async holdSlot(mark: WarmMark, count: number): Promise<boolean> {
    const held = this.slots.get(mark.id);
    if (held && !held.lost.aborted) return true;
    this.slots.delete(mark.id);
    for (let k = 0; k < count; k++) {
      const lease = await this.o.scope.leases.acquire(slotKey(mark.id, k), SLOT_LEASE_MS, this.o.self);
      if (lease) {
        this.slots.set(mark.id, lease);
        this.o.log.info({ mark: mark.id, slot: k, of: count }, 'pre-heat: took a slot of a warm mark');
        return true;
      }
    }
    return false;
  }

  private async warm(mark: WarmMark): Promise<void> {
    if (this.closed) return;
    const started = this.now();
    const log = this.o.log.child({ mark: mark.id });
    log.info({ images: mark.images.length, expires: new Date(mark.expires).toISOString() }, 'pre-heat: warming the images of a mark');
    let failed = 0;
    for (const image of mark.images) {
      if (this.closed) return;
      const name = `${image.registry}/${image.name}${image.tag ? `:${image.tag}` : ''}@${image.digest}`;
      try {
        const bytes = await this.warmImage(mark, image);
        await this.report(mark, { node: this.o.self, digest: image.digest, ok: true, bytes });
        log.info({ image: name, bytes }, 'pre-heat: image warm');
      } catch (err) {
        failed++;
        const error = (err as Error).message.slice(0, 300);
        log.warn({ image: name, err: error }, 'pre-heat: could not warm an image');
        await this.report(mark, { node: this.o.self, digest: image.digest, ok: false, error }).catch(() => undefined);
      }
    }
    this.queued.delete(mark.id);
    this.done.add(mark.id);
    log.info({ failed, ms: this.now() - started }, 'pre-heat: mark done');
  }

  /** Fetches one image of a mark through this node's pull path and pins it until the mark expires; the bytes of its blobs. */
  private async warmImage(mark: WarmMark, image: WarmImage): Promise<number> {
    const client = this.o.upstreams.get(image.registry);
    // Only configured upstreams are asked (a mark names, it never adds a host).
    if (!client) throw new Error(`upstream ${image.registry} is not configured on this node`);
    const target = { client, name: image.name };
    if (image.tag !== null) {
      // The tag too, through the node's own path, so that a pull by tag during the rollout is answered here.
      try {
        const m = await this.o.pull.getManifestByTag(target, image.tag);
        if (m.digest !== image.digest) this.o.log.info({ mark: mark.id, tag: image.tag, marked: image.digest, now: m.digest }, 'pre-heat: the tag moved since the mark was made; warming the marked digest');
      } catch (err) {
        this.o.log.warn({ mark: mark.id, tag: image.tag, err: (err as Error).message }, 'pre-heat: could not resolve the tag; warming by digest');
      }
    }
    const platforms = mark.platforms ? mark.platforms.map(parsePlatform) : null;
    const plan = await planPrefetch(this.o.pull, target, { tag: null, digest: image.digest }, platforms);
    await fetchPlan(this.o.pull, target, plan);
    await this.pin(mark, [...plan.manifests, ...plan.blobs.map((b) => b.digest)]);
    return plan.totalBytes;
  }

  private async report(mark: WarmMark, r: WarmReport): Promise<void> {
    const now = this.now();
    await this.o.scope.directory.announce([warmedKey(mark.id)], JSON.stringify(r), mark.expires, Math.max(60_000, mark.expires - now + 60_000));
  }

  // ---- pins until the mark expires ----------------------------------------------------------

  private async loadPins(): Promise<Map<string, WarmRecord>> {
    if (this.pins) return this.pins;
    const pins = new Map<string, WarmRecord>();
    const records = this.o.blobs.records;
    for (const id of await records.list(recordKeys.warm).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{16,64}$/.test(id)) continue;
      const r = warmRecord.safeParse(await readJsonRecord(records, recordKeys.warmMark(id)));
      if (r.success) pins.set(id, r.data);
      else await records.remove(recordKeys.warmMark(id));
    }
    this.pins = pins;
    return pins;
  }

  /** Pins `digests` for the mark; only the ones not pinned otherwise are listed (unpinned at expiry). */
  private async pin(mark: WarmMark, digests: string[]): Promise<void> {
    const pins = await this.loadPins();
    const byWarm = new Set<string>();
    for (const r of pins.values()) for (const d of r.digests) byWarm.add(d);
    const record = pins.get(mark.id) ?? { expires: mark.expires, digests: [] };
    const listed = new Set(record.digests);
    for (const d of digests) if (!this.o.blobs.isPinned(d) || byWarm.has(d)) listed.add(d);
    const next = { expires: mark.expires, digests: [...listed] };
    // The record first: a crash between the two leaves at worst a record of pins not made.
    await this.o.blobs.records.write(recordKeys.warmMark(mark.id), JSON.stringify(next));
    pins.set(mark.id, next);
    for (const d of next.digests) if (this.o.blobs.has(parseDigest(d))) await this.o.blobs.pin(parseDigest(d));
  }

  /** Unpins what expired marks pinned (unless a live mark pinned it too); they become ordinary LRU entries. */
  private async sweepPins(): Promise<void> {
    const pins = await this.loadPins();
    const now = this.now();
    const expired = [...pins].filter(([, r]) => r.expires <= now);
    if (expired.length === 0) return;
    const kept = new Set<string>();
    for (const [, r] of pins) if (r.expires > now) for (const d of r.digests) kept.add(d);
    for (const [id, r] of expired) {
      let unpinned = 0;
      for (const d of r.digests) {
        if (kept.has(d)) continue;
        await this.o.blobs.unpin(parseDigest(d));
        unpinned++;
      }
      await this.o.blobs.records.remove(recordKeys.warmMark(id));
      pins.delete(id);
      this.o.log.info({ mark: id, unpinned }, 'pre-heat: a warm mark expired; what it pinned is evictable again');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const lease of this.slots.values()) await lease.release().catch(() => undefined);
    this.slots.clear();
    if (this.o.available()) await this.o.scope.directory.withdraw([NODES_KEY], this.o.self).catch(() => undefined);
  }
}
