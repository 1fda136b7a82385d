/**
 * `stevedore prefetch`: fill the store while connected, with progress bars on a terminal. Each
 * image's referrers and cosign tags come along (cache/prefetch.ts, planReferrers); when a `verify`
 * policy covers its repository, the image is checked as a pull would be and the verdict reported:
 * under `require` an image that does not verify fails (its layers are not fetched), under `warn`
 * it is fetched with a warning.
 */
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { Config } from '../config/config.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { parseDigest } from '../oci/digest.js';
import { fetchPlan, parsePlatform, planPrefetch, planReferrers, type Platform } from '../cache/prefetch.js';
import { buildApp, createLogger } from '../server/app.js';
import { formatBytes, parseDuration } from '../config/units.js';
import { createWarmMark } from '../cache/preheat.js';
import { formatNodeSelection, markProgress, type WarmMark } from '../cluster/warm-marks.js';
import { parsePreheatOptions } from '../server/preheat-endpoint.js';
import { UserError } from './common.js';
import { UpstreamError } from '../upstream/errors.js';
import { refusal } from '../verify/signature-gate.js';
import { proxiedSource } from '../verify/signature-source.js';

export interface PrefetchFlags {
  file?: string;
  platform?: string;
  pin?: boolean;
}

/** Image references from the arguments and `-f list.txt` (one per line, # comments). */
export function readImageList(args: string[], file?: string): ImageRef[] {
  const texts = [...args];
  if (file) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const t = line.replace(/#.*/, '').trim();
      if (t) texts.push(t);
    }
  }
  if (texts.length === 0) throw new UserError('no image given (arguments or -f list.txt)');
  return texts.map((t) => parseImageRef(t));
}

export async function runPrefetch(config: Config, images: ImageRef[], flags: PrefetchFlags, out: NodeJS.WriteStream = process.stderr): Promise<{ failed: number }> {
  const platforms: Platform[] | null = flags.platform ? flags.platform.split(',').map((p) => parsePlatform(p.trim())) : null;
  for (const img of images) {
    if (!config.upstreams.has(img.registry)) throw new UserError(`${formatImageRef(img)}: upstream ${img.registry} is not configured`);
  }
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, process.stderr);
  const app = await buildApp(config, { log, sweepTemp: false });
  const tty = out.isTTY === true;
  const bars = tty
    ? new cliProgress.MultiBar(
        { format: ' {bar} {percentage}% | {value_h}/{total_h} | {name}', hideCursor: true, clearOnComplete: false, stream: out },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let failed = 0;
  let grand = 0;
  let fetched = 0;
  try {
    const totalBar = bars?.create(1, 0, { name: 'total', value_h: '0B', total_h: '?' });
    let totalDone = 0;
    let totalAll = 0;
    for (const img of images) {
      const name = formatImageRef(img);
      const client = app.upstreams.get(img.registry)!;
      const target = { client, name: img.name };
      try {
        const plan = await planPrefetch(app.pull, target, img, platforms);
        const carried = await planReferrers(app.pull, app.referrers, target, plan.manifests);
        for (const p of carried.problems) out.write(`warning ${name}: ${p}\n`);
        const bytesOf = plan.totalBytes + carried.totalBytes;
        totalAll += bytesOf;
        totalBar?.setTotal(totalAll);
        const bar = bars?.create(bytesOf, 0, { name, value_h: '0B', total_h: formatBytes(bytesOf) });
        if (!tty) out.write(`prefetch ${name}: ${plan.manifests.length} manifests, ${plan.blobs.length} blobs, ${formatBytes(plan.totalBytes)}\n`);
        if (!tty && carried.manifests.length > 0) {
          out.write(`  with ${carried.manifests.length} referrer and signature manifests (${[...carried.tags.keys()].join(', ') || 'no cosign tag'}), ${carried.blobs.length} blobs, ${formatBytes(carried.totalBytes)}\n`);
        }
        let done = 0;
        const events = {
          onBytes: (n: number) => {
            done += n;
            totalDone += n;
            bar?.update(done, { value_h: formatBytes(done) });
            totalBar?.update(totalDone, { value_h: formatBytes(totalDone), total_h: formatBytes(totalAll) });
          },
          onBlob: (digest: string, wasFetched: boolean) => {
            if (!tty) out.write(`  ${wasFetched ? 'fetched' : 'stored '} ${digest}\n`);
          },
        };
        // Signatures first (small): the policy then reads them from the store, as a pull would.
        const rc = await fetchPlan(app.pull, target, carried, events);
        const decided = await app.signatures.verdict(proxiedSource(app, target), plan.top);
        if (decided) {
          const { policy, verdict } = decided;
          if (verdict.result === 'verified') out.write(`verified ${name}: ${verdict.reason} (${policy.name})\n`);
          // Refused: its layers are not fetched.
          else if (policy.mode === 'require') throw refusal(policy, `${img.registry}/${img.name}`, plan.top.digest, verdict);
          else out.write(`warning ${name}: ${policy.name} (mode warn) finds no valid signature: ${verdict.reason}; fetched all the same\n`);
        }
        const r = await fetchPlan(app.pull, target, plan, events);
        if (flags.pin) {
          for (const d of [...plan.manifests, ...plan.blobs.map((b) => b.digest), ...carried.manifests, ...carried.blobs.map((b) => b.digest)]) await app.store.blobs.pin(parseDigest(d));
        }
        grand += bytesOf;
        fetched += r.fetchedBytes + rc.fetchedBytes;
        if (!tty) out.write(`done ${name}: ${formatBytes(r.fetchedBytes + rc.fetchedBytes)} from upstream${flags.pin ? ', pinned' : ''}\n`);
      } catch (err) {
        failed++;
        // An upstream's failure reads as a client would see it (the upstream's own words quoted).
        const shown = err instanceof UpstreamError ? err.toOciError('MANIFEST_UNKNOWN') : err;
        out.write(`failed ${name}: ${shown instanceof Error ? shown.message : String(shown)}\n`);
      }
    }
  } finally {
    bars?.stop();
    await app.close(0);
  }
  out.write(`prefetched ${images.length - failed}/${images.length} images, ${formatBytes(grand)} (${formatBytes(fetched)} from upstreams)\n`);
  return { failed };
}

export interface NodePrefetchFlags {
  nodes: string;
  ttl?: string;
  platform?: string;
  /** false with --no-wait. */
  wait?: boolean;
  timeout?: string;
  group?: string;
}

/**
 * `stevedore prefetch IMAGE… --nodes all|N|P%`: records a warm mark for the node group (resolved
 * here through this configuration's pull path; lib/cache/preheat.ts), then, unless --no-wait,
 * prints each node as it reports its images warm, until the chosen nodes are done.
 * Exit status: 0 when every chosen node warmed every image; 1 on a failure or the timeout.
 */
export async function runNodePrefetch(config: Config, images: ImageRef[], flags: NodePrefetchFlags, out: NodeJS.WriteStream = process.stderr): Promise<{ ok: boolean }> {
  let opts: ReturnType<typeof parsePreheatOptions>;
  try {
    opts = parsePreheatOptions(flags.nodes, flags.ttl ?? undefined, flags.platform);
  } catch (err) {
    throw new UserError(`--${(err as Error).message}`);
  }
  const timeoutMs = flags.timeout === undefined ? 600_000 : parseDuration(flags.timeout);
  if (timeoutMs === null || timeoutMs <= 0) throw new UserError(`--timeout: ${flags.timeout} is not a duration (e.g. 10m)`);
  const group = flags.group ?? config.node.peers?.group ?? 'default';
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(group)) throw new UserError('--group: letters, digits, . _ - (at most 64)');
  for (const img of images) {
    if (!config.upstreams.has(img.registry)) throw new UserError(`${formatImageRef(img)}: upstream ${img.registry} is not configured`);
  }
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, process.stderr);
  const app = await buildApp(config, { log, sweepTemp: false });
  try {
    if (!app.preheatMarks) throw new UserError('--nodes needs the node group\'s Redis (metadata.redis) in the configuration');
    if (!app.coordinator.available()) throw new UserError(`Redis (${app.coordinator.target}) does not answer: no warm mark recorded`);
    const scope = app.coordinator.scope(`stevedore:peers:${group}:`);
    let mark: WarmMark;
    try {
      mark = await createWarmMark({ scope, pull: app.pull, upstreams: app.upstreams }, { images, ...opts, by: 'cli' });
    } catch (err) {
      const shown = err instanceof UpstreamError ? err.toOciError('MANIFEST_UNKNOWN') : err;
      throw new UserError(`no warm mark recorded: ${shown instanceof Error ? shown.message : String(shown)}`);
    }
    out.write(`warm mark ${mark.id} (group ${group}): ${mark.images.length} images for nodes ${formatNodeSelection(mark.nodes)}, pinned there until ${new Date(mark.expires).toISOString()}\n`);
    const names = new Map<string, string>();
    mark.images.forEach((i, k) => {
      names.set(i.digest, formatImageRef(images[k]!));
      out.write(`  ${formatImageRef(images[k]!)} ${i.digest}\n`);
    });
    if (flags.wait === false) return { ok: true };
    const deadline = Date.now() + timeoutMs;
    const shown = new Set<string>();
    for (;;) {
      const p = await markProgress(scope, mark, Date.now());
      for (const [node, reports] of p.reports) {
        for (const r of reports) {
          const key = `${node} ${r.digest} ${r.ok}`;
          if (shown.has(key)) continue;
          shown.add(key);
          out.write(r.ok ? `  node ${node}: warm ${names.get(r.digest) ?? r.digest}\n` : `  node ${node}: FAILED ${names.get(r.digest) ?? r.digest}: ${r.error ?? 'failed'}\n`);
        }
      }
      if (p.finished) {
        out.write(`warm on ${p.warm.length}/${p.wanted} nodes${p.failed.length ? `, ${p.failed.length} failures` : ''}\n`);
        return { ok: p.failed.length === 0 && p.warm.length >= p.wanted };
      }
      if (Date.now() > deadline) {
        out.write(`timed out after ${formatDuration(timeoutMs)}: warm on ${p.warm.length}/${p.wanted} nodes (${p.live.length} live)${p.failed.length ? `, ${p.failed.length} failures` : ''}; the mark stays, nodes go on warming\n`);
        return { ok: false };
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await app.close(0);
  }
}

function formatDuration(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : `${Math.round(ms / 1000)}s`;
}
