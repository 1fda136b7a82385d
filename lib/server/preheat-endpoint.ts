/**
 * The pre-heat endpoint, for CI/CD after a push (on the central cache or any instance with the
 * node group's Redis; lib/cache/preheat.ts does the work):
 *
 *   POST /_stevedore/preheat        {"images": ["docker.io/org/app:v2", ...], "nodes": "all" | "3" | "50%",
 *                                    "ttl": "6h", "platform": ["linux/amd64"], "group": "default"}
 *                                   → 201 {id, group, nodes, expires, images: [{image, digest}]}
 *   GET  /_stevedore/preheat/<id>   → 200 the mark's progress: {finished, wanted, live, warm, failed, nodes}
 *
 * Who may: a user (never anonymous) whom the access rules allow to pull every image
 * (`Auth.authorizePreheat`). The body is JSON (`application/json`, at most 64 KiB); anything else,
 * an image reference that does not parse, an upstream not configured here, a bad `nodes` or `ttl`
 * is a 400 with the OCI error JSON, logged, and nothing is recorded.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { z } from 'zod';
import { createWarmMark } from '../cache/preheat.js';
import { parsePlatform } from '../cache/prefetch.js';
import type { PullThrough } from '../cache/pull-through.js';
import type { PullUpstream } from '../cache/pull-types.js';
import type { CoordinationScope } from '../cluster/coordinator.js';
import { DEFAULT_MARK_TTL_MS, MARKS_KEY, MAX_IMAGES_PER_MARK, MAX_MARK_TTL_MS, formatNodeSelection, markProgress, parseNodeSelection, parseWarmMark } from '../cluster/warm-marks.js';
import { parseDuration } from '../config/units.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/image-ref.js';
import { OciError } from '../oci/errors.js';
import type { Auth, AuthContext } from './auth/auth.js';
import { sendJson } from './respond.js';
import { readBoundedBody } from '../util/request-body.js';

export const PREHEAT_PATH = '/_stevedore/preheat';
const BODY_MAX = 64 * 1024;
const GROUP_RE = /^[A-Za-z0-9._-]{1,64}$/;

const bodySchema = z
  .object({
    images: z.array(z.string().max(1000)).min(1).max(MAX_IMAGES_PER_MARK),
    nodes: z.string().max(20).optional(),
    ttl: z.string().max(20).optional(),
    platform: z.union([z.string().max(200), z.array(z.string().max(100)).max(16)]).optional(),
    group: z.string().regex(GROUP_RE).optional(),
  })
  .strict();

function badRequest(message: string): OciError {
  return new OciError('UNSUPPORTED', message, { status: 400 });
}

export interface PreheatRequest {
  images: ImageRef[];
  nodes: NonNullable<ReturnType<typeof parseNodeSelection>>;
  ttlMs: number;
  platforms: string[] | null;
}

/** Reads `--nodes`, `--ttl` and `--platform` as the CLI and the endpoint take them; throws a message for each bad one. */
export function parsePreheatOptions(nodes: string | undefined, ttl: string | undefined, platform: string | string[] | undefined): Omit<PreheatRequest, 'images'> {
  const selection = parseNodeSelection(nodes ?? 'all');
  if (!selection) throw badRequest(`nodes: ${JSON.stringify(String(nodes).slice(0, 40))} is not all, a number of nodes (3) or a percentage (50%)`);
  const ttlMs = ttl === undefined ? DEFAULT_MARK_TTL_MS : parseDuration(ttl);
  if (ttlMs === null || ttlMs < 60_000 || ttlMs > MAX_MARK_TTL_MS) throw badRequest(`ttl: ${JSON.stringify(String(ttl).slice(0, 40))} is not a duration between 1m and 7d (e.g. 6h)`);
  const list = platform === undefined ? null : (Array.isArray(platform) ? platform : platform.split(',')).map((p) => p.trim()).filter(Boolean);
  for (const p of list ?? []) {
    try {
      parsePlatform(p);
    } catch (err) {
      throw badRequest(`platform: ${(err as Error).message}`);
    }
  }
  return { nodes: selection, ttlMs, platforms: list && list.length ? list : null };
}

export interface PreheatEndpointDeps {
  scope(group: string): CoordinationScope;
  available(): boolean;
  defaultGroup: string;
  pull: PullThrough;
  upstreams: ReadonlyMap<string, PullUpstream>;
  log: Logger;
}

export class PreheatEndpoint {
  constructor(private readonly deps: PreheatEndpointDeps) {}

  handles(pathname: string): boolean {
    return pathname === PREHEAT_PATH || pathname.startsWith(`${PREHEAT_PATH}/`);
  }

  async serve(auth: Auth, pathname: string, query: URLSearchParams, req: IncomingMessage, res: ServerResponse, ctx: AuthContext): Promise<void> {
    const who = await auth.authorizePreheat(req, [], ctx);
    const group = query.get('group') ?? this.deps.defaultGroup;
    if (!GROUP_RE.test(group)) throw badRequest('group: letters, digits, . _ - (at most 64)');
    if (pathname === PREHEAT_PATH) {
      if (req.method !== 'POST') throw new OciError('UNSUPPORTED', `${req.method} is not supported here`, { headers: { Allow: 'POST' } });
      return this.create(auth, who.user!, group, req, res);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new OciError('UNSUPPORTED', `${req.method} is not supported here`, { headers: { Allow: 'GET, HEAD' } });
    const id = pathname.slice(PREHEAT_PATH.length + 1);
    if (!/^[0-9a-f]{16,64}$/.test(id)) throw badRequest('not a warm mark id');
    this.needCoordinator();
    const scope = this.deps.scope(group);
    const now = Date.now();
    for (const member of await scope.directory.holders(MARKS_KEY, now)) {
      const parsed = parseWarmMark(member);
      if (!('mark' in parsed) || parsed.mark.id !== id) continue;
      const p = await markProgress(scope, parsed.mark, now);
      return sendJson(res, 200, {
        id,
        finished: p.finished,
        wanted: p.wanted,
        live: p.live,
        warm: p.warm,
        failed: p.failed,
        nodes: Object.fromEntries([...p.reports].map(([node, rs]) => [node, rs.map((r) => ({ digest: r.digest, ok: r.ok, ...(r.error ? { error: r.error } : {}) }))])),
      }, {}, req.method === 'HEAD');
    }
    throw new OciError('NOT_FOUND', `no live warm mark ${id} in group ${group}`);
  }

  private needCoordinator(): void {
    if (!this.deps.available()) throw new OciError('UNKNOWN', 'the coordinator (Redis) does not answer: no warm mark can be read or recorded now', { status: 503 });
  }

  private async create(auth: Auth, user: string, group: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') throw new OciError('UNSUPPORTED', `${PREHEAT_PATH} takes application/json, not ${type.slice(0, 60) || 'no content type'}`, { status: 415 });
    let raw: unknown;
    try {
      raw = JSON.parse(await readBody(req));
    } catch (err) {
      if (err instanceof OciError) throw err;
      throw badRequest('the body is not JSON');
    }
    const r = bodySchema.safeParse(raw);
    if (!r.success) throw badRequest(r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).slice(0, 5).join('; '));
    const body = r.data;
    const opts = parsePreheatOptions(body.nodes, body.ttl, body.platform);
    const images = body.images.map((t) => parseImageRef(t));
    for (const img of images) {
      if (!this.deps.upstreams.has(img.registry)) throw badRequest(`${formatImageRef(img)}: upstream ${img.registry} is not configured here`);
    }
    const refused = images.map((i) => `${i.registry}/${i.name}`).filter((repo) => !auth.mayPull(user, repo));
    if (refused.length) throw new OciError('DENIED', `user ${user} may not pull ${[...new Set(refused)].join(', ')}: no warm mark for it`);
    this.needCoordinator();
    const mark = await createWarmMark({ scope: this.deps.scope(body.group ?? group), pull: this.deps.pull, upstreams: this.deps.upstreams }, { images, ...opts, by: user });
    this.deps.log.info({ mark: mark.id, group: body.group ?? group, user, nodes: formatNodeSelection(mark.nodes), images: mark.images.map((i) => `${i.registry}/${i.name}@${i.digest}`), expires: new Date(mark.expires).toISOString() }, 'pre-heat: warm mark recorded');
    sendJson(res, 201, {
      id: mark.id,
      group: body.group ?? group,
      nodes: formatNodeSelection(mark.nodes),
      expires: new Date(mark.expires).toISOString(),
      images: mark.images.map((i, k) => ({ image: formatImageRef(images[k]!), digest: i.digest })),
    });
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return readBoundedBody(req, BODY_MAX, () => new OciError('SIZE_INVALID', `body over ${BODY_MAX} bytes`, { status: 413 }));
}
