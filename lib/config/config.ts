/**
 * Loads the configuration once at start-up: YAML file (optional) → `${VAR}` expansion →
 * STEVEDORE_* environment overrides → schema validation (every error at once, each with its key
 * path) → cross-checks → a frozen, fully resolved `Config`.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { configSchema, DEFAULT_UPSTREAMS, type ParsedConfig } from './schema.js';
import { defaultAuthRules, type AuthConfig } from './auth-schema.js';

export interface Timeouts {
  connect: number;
  firstByte: number;
  idle: number;
  /** Window in which an upstream body must deliver `minProgress` bytes, else it is stalled. */
  stall: number;
  minProgress: number;
  /** Overall deadline of an upstream request other than a blob body. */
  request: number;
}

/**
 * One tag TTL tier (cache.tagTTLPolicies): the tags it covers and how long their answer is trusted.
 * `repository` matches `<upstream>/<name>` with the auth rules' grammar; `tag` is a glob (`*`) or
 * the keyword `semver`; `ttl` is milliseconds, or `forever` (never revalidated once stored).
 */
export interface TagTTLPolicy {
  repository: string;
  tag: string;
  ttl: number | 'forever';
}

/**
 * One policy for cached tags the upstream deleted (cache.gonePolicies): `repository` matches
 * `<upstream>/<name>` with the auth rules' grammar; keep (the default) or forget.
 */
export interface GonePolicy {
  repository: string;
  action: 'keep' | 'forget';
}

/** A deny-list entry of an upstream: a repository pattern (a name within the upstream) and why. */
export interface DenyRule {
  repository: string;
  reason: string | null;
}

/** How a source is asked for a repository of its upstream (see the schema's namespaceMode). */
export type NamespaceMode = 'none' | 'ns' | 'path';

/** The metadata server of Google Cloud (upstreams.*.credentials.metadataUrl overrides it). */
export const GCP_METADATA_URL = 'http://metadata.google.internal';

/**
 * Credentials that are not a plain username/password in the configuration: read from a file, or
 * issued by a credential helper or a cloud (lib/upstream/credentials/).
 */
export type CredentialSource =
  | { type: 'basic'; username: string; passwordFile: string }
  | { type: 'helper'; helper: string; serverURL: string | null; cacheFor: number | null }
  | { type: 'ecr'; region: string | null; registryId: string | null; endpoint: string | null }
  | { type: 'gcp'; keyFile: string | null; tokenFile: string | null; metadataUrl: string }
  | { type: 'acr'; tokenFile: string | null; token: string | null; tenant: string | null; authorityHost: string | null };

/** One place an upstream's content is fetched from (upstreams.*.sources, node.central). */
export interface SourceConfig {
  /** Its name in logs, metrics and health records. */
  name: string;
  url: string;
  namespace: NamespaceMode;
  credentials: { username: string; password: string } | null;
  /** Credentials from a file, a helper or a cloud (instead of `credentials`); null: none. */
  credentialSource: CredentialSource | null;
  timeouts: Timeouts;
  redirects: 'blobs' | 'all';
}

/** A source entry: the other node instances (node.peers), or one by URL. */
export type SourceEntry = { kind: 'peers' } | ({ kind: 'url' } & SourceConfig);

export interface UpstreamConfig {
  /** Registry host name clients use for it: the `ns` value and the path prefix. */
  name: string;
  /**
   * Origin of its API, e.g. https://registry-1.docker.io: the last source by URL (with several
   * sources, the registry itself, whose quota and health are the upstream's).
   */
  url: string;
  /** Where its content is fetched, in order (one entry, `url`, unless configured otherwise). */
  sources: readonly SourceEntry[];
  credentials: { username: string; password: string } | null;
  /** Credentials from a file, a helper or a cloud (instead of `credentials`); null: none. */
  credentialSource: CredentialSource | null;
  /** Docker Hub rule: single-segment names become `library/<name>`. */
  library: boolean;
  tagTTL: number;
  timeouts: Timeouts;
  /** Never contacted: serve what is stored, refuse the rest. */
  offline: boolean;
  /** cache.tagTTLPolicies: tiers tried before `tagTTL` (lib/cache/tag-policy.ts). */
  tagTTLPolicies: readonly TagTTLPolicy[];
  /** cache.gonePolicies: what is done with a cached tag this upstream deleted (lib/cache/gone-tags.ts). */
  gonePolicies: readonly GonePolicy[];
  /** Repository patterns (names within this upstream) that are proxied; null: every repository. */
  allow: readonly string[] | null;
  /** Repository patterns refused with 403 DENIED, stored content included (lib/cache/repository-filter.ts). */
  deny: readonly DenyRule[];
  /** Redirects followed: blob GETs only, or every GET and HEAD. */
  redirects: 'blobs' | 'all';
}

export interface Config {
  listen: { host: string; port: number };
  /** The peer endpoint's own listener (other node instances, replicas on S3); null: on `listen`. */
  peerListen: { host: string; port: number } | null;
  /** Client connection limits (lib/server/connection-guard.ts). */
  server: ParsedConfig['server'];
  /**
   * HTTPS: the certificate and key files (PEM) and how often they are re-read, and client
   * certificates as identities (clientCA, clientAuth, clientIdentity); null: plain HTTP.
   */
  tls: ParsedConfig['tls'];
  storage: ParsedConfig['storage'];
  /** Redis (lib/cluster/redis/link.ts): its URL, credentials and TLS; redis null: in memory. */
  metadata: ParsedConfig['metadata'];
  /** Node mode: the central stevedore and the peers (lib/cluster/peers.ts). */
  node: {
    central: ParsedConfig['node']['central'];
    /** Timeouts resolved: the peers' own over the global ones. */
    peers: (Omit<NonNullable<ParsedConfig['node']['peers']>, 'timeouts'> & { timeouts: Timeouts }) | null;
  };
  /** Cluster mode tuning (on when metadata.redis is set). */
  cluster: ParsedConfig['cluster'];
  /** Client authentication and access rules (lib/server/auth). */
  auth: AuthConfig;
  log: ParsedConfig['log'];
  /** The dashboard at `/` (lib/server/dashboard). */
  dashboard: ParsedConfig['dashboard'];
  cache: {
    tagTTL: number;
    manifestMaxSize: number;
    finishAbandonedDownloads: boolean;
    downloadResumes: number;
    tagTTLPolicies: readonly TagTTLPolicy[];
    gonePolicies: readonly GonePolicy[];
    manifestMaxReferences: number;
    blobMaxSize: number;
    tagsListMaxTags: number;
    tagsListMaxBytes: number;
    /** Hot tags revalidated in the background before their TTL ends (lib/cache/refresh-ahead.ts). */
    refreshAhead: { enabled: boolean; before: number; minRequests: number; perUpstream: number };
  };
  timeouts: Timeouts;
  defaultUpstream: string | null;
  upstreams: ReadonlyMap<string, UpstreamConfig>;
  offline: boolean;
  /** Hosted repositories and the push side. */
  registry: ParsedConfig['registry'];
  /** Signature policies (lib/verify), in order: the first matching repository pattern decides. */
  verify: ParsedConfig['verify'];
  /** The audit log (lib/events/audit-log.ts). */
  audit: ParsedConfig['audit'];
  /** Webhooks with CloudEvents (lib/events/webhooks.ts). */
  webhooks: ParsedConfig['webhooks'];
  /** OpenTelemetry traces (lib/server/otel-tracer.ts). */
  tracing: ParsedConfig['tracing'];
  upstreamPolicy: {
    retryAfterDefault: number;
    breakerFailures: number;
    breakerOpenFor: number;
    quotaLowWatermark: number;
    quotaTTLMultiplier: number;
  };
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[], source: string) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadOptions {
  /** Path of a YAML file; undefined: STEVEDORE_CONFIG, else the embedded defaults. */
  file?: string;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.STEVEDORE_CONFIG;
  let raw: unknown = {};
  let source = 'embedded defaults';
  if (file) {
    source = file;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], source);
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      const msg = err instanceof YAMLParseError ? err.message : String(err);
      throw new ConfigError([`not valid YAML: ${msg}`], source);
    }
  }
  return parseConfig(raw, { env, source });
}

/** Validates an already-parsed document (YAML or an object built by tests). */
export function parseConfig(raw: unknown, opts: { env?: NodeJS.ProcessEnv; source?: string } = {}): Config {
  const env = opts.env ?? {};
  const source = opts.source ?? 'configuration';
  const problems: string[] = [];
  const expanded = expandEnv(raw, env, [], problems);
  const doc = applyEnvOverrides(expanded, env);
  const result = configSchema.safeParse(doc);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.length ? issue.path.join('.') : '(top level)';
      problems.push(`${path}: ${issue.message}`);
    }
  }
  problems.push(...crossCheck(doc));
  if (problems.length || !result.success) throw new ConfigError(problems, source);
  const parsed = result.data;
  const upstreams = new Map<string, UpstreamConfig>();
  for (const [name, u] of Object.entries(parsed.upstreams)) {
    const timeouts = { ...parsed.timeouts, ...stripUndefined(u.timeouts ?? {}) };
    const credentials = u.username !== undefined && u.password !== undefined ? { username: u.username, password: u.password } : null;
    // registry.k8s.io answers every API request with a redirect to the registry behind it.
    const redirects = u.redirects ?? (name === 'registry.k8s.io' ? 'all' : 'blobs');
    const credentialSource = resolveCredentialSource(u);
    const sources = resolveSources(u, parsed, { timeouts, credentials, credentialSource, redirects });
    const origin = [...sources].reverse().find((x): x is Extract<SourceEntry, { kind: 'url' }> => x.kind === 'url');
    upstreams.set(name, {
      name,
      url: origin!.url,
      sources,
      credentials,
      credentialSource,
      library: u.library ?? name === 'docker.io',
      tagTTL: u.tagTTL ?? parsed.cache.tagTTL,
      timeouts,
      offline: u.offline ?? parsed.offline,
      tagTTLPolicies: parsed.cache.tagTTLPolicies,
      gonePolicies: parsed.cache.gonePolicies,
      allow: u.allow ?? null,
      deny: (u.deny ?? []).map((d) => ({ repository: d.repository, reason: d.reason ?? null })),
      redirects,
    });
  }
  const config: Config = {
    listen: parsed.listen,
    peerListen: parsed.peerListen,
    server: parsed.server,
    tls: parsed.tls,
    storage: parsed.storage,
    metadata: parsed.metadata,
    node: {
      central: parsed.node.central,
      peers: parsed.node.peers ? { ...parsed.node.peers, timeouts: { ...parsed.timeouts, ...stripUndefined(parsed.node.peers.timeouts) } } : null,
    },
    cluster: parsed.cluster,
    auth: { ...parsed.auth, rules: parsed.auth.rules ?? defaultAuthRules(parsed.registry.hosted) },
    log: parsed.log,
    dashboard: parsed.dashboard,
    cache: parsed.cache,
    timeouts: parsed.timeouts,
    defaultUpstream: parsed.defaultUpstream,
    upstreams: new FrozenMap(upstreams),
    offline: parsed.offline,
    upstreamPolicy: parsed.upstreamPolicy,
    registry: parsed.registry,
    verify: parsed.verify,
    audit: parsed.audit,
    webhooks: parsed.webhooks,
    tracing: parsed.tracing,
  };
  return deepFreeze(config);
}

/**
 * An upstream's sources, in order. Configured: as written (a source's name defaults to its host,
 * its timeouts to the upstream's). Else its url alone, or with node.central: peers (when node.peers
 * is set), the central stevedore (asked with ?ns=), then its url. A url-less upstream was refused
 * by crossCheck.
 */
function resolveSources(
  u: ParsedConfig['upstreams'][string],
  parsed: ParsedConfig,
  own: { timeouts: Timeouts; credentials: SourceConfig['credentials']; credentialSource: CredentialSource | null; redirects: 'blobs' | 'all' },
): SourceEntry[] {
  const fromUrl = (url: string, extra: Partial<SourceConfig> = {}): SourceEntry => ({
    kind: 'url',
    name: new URL(url).host,
    url,
    namespace: 'none',
    credentials: own.credentials,
    credentialSource: own.credentialSource,
    timeouts: own.timeouts,
    redirects: own.redirects,
    ...extra,
  });
  if (u.sources) {
    return u.sources.map((s): SourceEntry => {
      if (s === 'peers') return { kind: 'peers' };
      return fromUrl(s.url, {
        ...(s.name ? { name: s.name } : {}),
        namespace: s.namespace ?? 'none',
        credentials: s.username !== undefined && s.password !== undefined ? { username: s.username, password: s.password } : null,
        credentialSource: resolveCredentialSource(s),
        timeouts: { ...own.timeouts, ...stripUndefined(s.timeouts ?? {}) },
        redirects: s.redirects ?? own.redirects,
      });
    });
  }
  const out: SourceEntry[] = [];
  const central = parsed.node.central;
  if (central) {
    if (parsed.node.peers) out.push({ kind: 'peers' });
    out.push(
      fromUrl(central.url, {
        name: 'central',
        namespace: 'ns',
        credentials: central.username !== undefined && central.password !== undefined ? { username: central.username, password: central.password } : null,
        credentialSource: null,
        timeouts: { ...own.timeouts, ...stripUndefined(central.timeouts ?? {}) },
        redirects: 'blobs',
      }),
    );
  }
  out.push(fromUrl(u.url!));
  return out;
}

/** An upstream's or a source's credentials other than a plain username/password in the file. */
function resolveCredentialSource(u: {
  username?: string | undefined;
  passwordFile?: string | undefined;
  credentials?: ParsedConfig['upstreams'][string]['credentials'];
}): CredentialSource | null {
  if (u.username !== undefined && u.passwordFile !== undefined) return { type: 'basic', username: u.username, passwordFile: u.passwordFile };
  const c = u.credentials;
  if (!c) return null;
  switch (c.type) {
    case 'helper':
      return { type: 'helper', helper: c.helper, serverURL: c.serverURL ?? null, cacheFor: c.cacheFor ?? null };
    case 'ecr':
      return { type: 'ecr', region: c.region ?? null, registryId: c.registryId ?? null, endpoint: c.endpoint ?? null };
    case 'gcp':
      return { type: 'gcp', keyFile: c.keyFile ?? null, tokenFile: c.tokenFile ?? null, metadataUrl: c.metadataUrl ?? GCP_METADATA_URL };
    case 'acr':
      return { type: 'acr', tokenFile: c.tokenFile ?? null, token: c.token ?? null, tenant: c.tenant ?? null, authorityHost: c.authorityHost ?? null };
  }
}

/** Credential keys that do not go together, on one upstream or source (`key` is its path). */
function credentialProblems(key: string, x: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const { username, password, passwordFile, credentials } = x;
  if (password !== undefined && passwordFile !== undefined) problems.push(`${key}: give password or passwordFile, not both`);
  else if (passwordFile !== undefined && username === undefined) problems.push(`${key}: username and passwordFile go together`);
  else if (passwordFile === undefined && (username === undefined) !== (password === undefined)) problems.push(`${key}: username and password go together`);
  if (credentials !== undefined && (username !== undefined || password !== undefined || passwordFile !== undefined)) {
    problems.push(`${key}: give credentials or username/password, not both`);
  }
  if (isRecord(credentials)) {
    if (credentials.type === 'gcp' && credentials.keyFile !== undefined && credentials.tokenFile !== undefined) {
      problems.push(`${key}.credentials: give keyFile or tokenFile (or neither: the metadata server), not both`);
    }
    if (credentials.type === 'acr' && credentials.tokenFile !== undefined && credentials.token !== undefined) {
      problems.push(`${key}.credentials: give tokenFile or token (or neither: AAD from the environment), not both`);
    }
  }
  return problems;
}

/**
 * Checks across keys, on the raw document so they are reported together with schema errors:
 * defaultUpstream must name an upstream; username and password go together; repository patterns
 * that could never match (see patternProblems).
 */
function crossCheck(doc: unknown): string[] {
  const problems: string[] = [];
  const d = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>;
  const ups = d.upstreams;
  const names =
    ups === undefined ? Object.keys(DEFAULT_UPSTREAMS) : typeof ups === 'object' && ups !== null ? Object.keys(ups) : [];
  const def = d.defaultUpstream === undefined ? 'docker.io' : d.defaultUpstream;
  if (typeof def === 'string' && !names.includes(def)) {
    problems.push(`defaultUpstream: ${def} is not one of upstreams (${names.join(', ') || 'none'})`);
  }
  if (typeof ups === 'object' && ups !== null) {
    for (const [name, u] of Object.entries(ups)) {
      if (typeof u !== 'object' || u === null) continue;
      const { username, password, passwordFile, credentials, url, sources } = u as Record<string, unknown>;
      problems.push(...credentialProblems(`upstreams.${name}`, u as Record<string, unknown>));
      if (url === undefined && sources === undefined) problems.push(`upstreams.${name}.url: required (or sources, listing where its content comes from)`);
      if (url !== undefined && sources !== undefined) problems.push(`upstreams.${name}: give url or sources, not both (list the registry's own url last in sources)`);
      if (sources !== undefined && (username !== undefined || password !== undefined || passwordFile !== undefined || credentials !== undefined)) {
        problems.push(`upstreams.${name}: with sources, credentials go on the source they are for (upstreams.${name}.sources.N.username / password)`);
      }
      if (Array.isArray(sources)) {
        const urls = sources.filter(isRecord);
        if (urls.length === 0) problems.push(`upstreams.${name}.sources: at least one source must be a url (peers alone cannot resolve tags)`);
        if (sources.filter((x) => x === 'peers').length > 1) problems.push(`upstreams.${name}.sources: peers is listed more than once`);
        if (sources.includes('peers') && !(isRecord(d.node) && isRecord(d.node.peers))) {
          problems.push(`upstreams.${name}.sources: peers needs node.peers (advertise, token) to be configured`);
        }
        const seen = new Set<string>();
        sources.forEach((x, i) => {
          if (!isRecord(x)) return;
          problems.push(...credentialProblems(`upstreams.${name}.sources.${i}`, x));
          let sourceName = typeof x.name === 'string' ? x.name : '';
          if (!sourceName && typeof x.url === 'string') {
            try {
              sourceName = new URL(x.url).host;
            } catch {
              // reported by the schema
            }
          }
          if (sourceName && seen.has(sourceName)) problems.push(`upstreams.${name}.sources.${i}: two sources are named ${sourceName}; give each a distinct name`);
          seen.add(sourceName);
        });
      }
    }
  }
  const node = isRecord(d.node) ? d.node : undefined;
  if (node) {
    const central = isRecord(node.central) ? node.central : undefined;
    if (central && (central.username === undefined) !== (central.password === undefined)) problems.push('node.central: username and password go together');
    if (isRecord(node.peers)) {
      const meta = isRecord(d.metadata) ? d.metadata : undefined;
      if (!meta || typeof meta.redis !== 'string') problems.push('node.peers: needs metadata.redis (Redis is where node instances find which peer holds a blob)');
      if (!central && !(isRecord(ups) && Object.values(ups).some((u) => isRecord(u) && Array.isArray(u.sources) && u.sources.includes('peers')))) {
        problems.push('node.peers: no upstream asks the peers: set node.central (peers then come first) or list peers in an upstream\'s sources');
      }
      const workers = isRecord(d.server) ? d.server.workers : undefined;
      if (typeof workers === 'number' && workers > 1) {
        problems.push('server.workers: node mode (node.peers) runs one process per node instance; set server.workers to 1 or auto');
      }
    }
  }
  if (s3ClusterMode(d)) {
    const workers = isRecord(d.server) ? d.server.workers : undefined;
    if (typeof workers === 'number' && workers > 1) {
      problems.push(
        'server.workers: cluster mode on the S3 backend (metadata.redis, storage.backend s3) runs one process per replica: every worker would advertise the one cluster.advertise address, behind which the port hands connections to any worker; set server.workers to 1 or auto and run more replicas',
      );
    }
  }
  problems.push(...patternProblems(d, names));
  problems.push(...hostedProblems(d, names));
  return problems;
}

/**
 * Cluster mode (Redis, no node tier) on a backend whose downloads are not shared files: each
 * process is a replica that other hosts reach at its cluster.advertise address (one per replica).
 */
function s3ClusterMode(d: Record<string, unknown>): boolean {
  const storage = isRecord(d.storage) ? d.storage : undefined;
  const meta = isRecord(d.metadata) ? d.metadata : undefined;
  const node = isRecord(d.node) ? d.node : undefined;
  return storage?.backend === 's3' && typeof meta?.redis === 'string' && !isRecord(node?.peers);
}

/**
 * `registry.hosted` patterns that can match a name under a configured upstream (`<upstream>/...`,
 * the path prefix podman and CRI-O send): such a name would be hosted instead of proxied, so a push
 * there would be served to that upstream's pulls (tag poisoning). A pattern can reach one when its
 * first component is `**` (any number of components, the upstream's among them), or `*` or the
 * upstream's name with more components after it.
 */
function hostedProblems(d: Record<string, unknown>, upstreams: string[]): string[] {
  const registry = isRecord(d.registry) ? d.registry : undefined;
  const hosted = Array.isArray(registry?.hosted) ? (registry.hosted as unknown[]) : [];
  const problems: string[] = [];
  hosted.forEach((pattern, i) => {
    if (typeof pattern !== 'string') return;
    const parts = pattern.split('/');
    const reached = upstreams.filter((u) => parts[0] === '**' || (parts.length > 1 && (parts[0] === '*' || parts[0] === u)));
    if (reached.length === 0) return;
    problems.push(
      `registry.hosted.${i}: ${JSON.stringify(pattern)} can match ${reached[0]}/... (names of the upstream${reached.length > 1 ? 's' : ''} ${reached.join(', ')}): ` +
        'a hosted name there would shadow the upstream and a push would be served to its pulls; ' +
        `host under a first component of your own (e.g. lab/**), and seed an upstream with a rule granting push on ${reached[0]}/**`,
    );
  });
  return problems;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Repository patterns that are well formed but can never match, written the other convention's
 * way: tag TTL policies name `<upstream>/<name>` (as auth rules do), allow and deny lists a name
 * within their upstream. On a `library` upstream (Docker Hub) a one-component name is
 * `library/<name>`, so `alpine` (allow, deny) or `docker.io/alpine` (policies) never matches.
 */
function patternProblems(d: Record<string, unknown>, names: string[]): string[] {
  const problems: string[] = [];
  const ups = isRecord(d.upstreams) ? d.upstreams : undefined;
  const library = (name: string): boolean => {
    const u = ups?.[name];
    return isRecord(u) && typeof u.library === 'boolean' ? u.library : name === 'docker.io';
  };
  const oneComponent = (parts: string[]): boolean => parts.length === 1 && parts[0] !== '**';
  const libraryHint = (upstream: string, parts: string[]): string =>
    `on ${upstream} a name of one component is library/<name> (library: true), so write ${[...parts.slice(0, -1), 'library', parts.at(-1)].join('/')}`;
  const cache = isRecord(d.cache) ? d.cache : undefined;
  const policies = (['tagTTLPolicies', 'gonePolicies'] as const).flatMap((list) => {
    const entries = cache?.[list];
    return (Array.isArray(entries) ? (entries as unknown[]) : []).map((p, i) => ({ p, key: `cache.${list}.${i}.repository` }));
  });
  policies.forEach(({ p, key }) => {
    if (!isRecord(p) || typeof p.repository !== 'string') return;
    const [first, ...rest] = p.repository.split('/');
    if (first === undefined || first.includes('*')) return;
    if (!names.includes(first)) {
      problems.push(
        `${key}: ${JSON.stringify(p.repository)} names no configured upstream (${names.join(', ') || 'none'}): policies match <upstream>/<name>, e.g. docker.io/library/alpine or **`,
      );
    } else if (library(first) && oneComponent(rest)) {
      problems.push(`${key}: ${JSON.stringify(p.repository)} never matches: ${libraryHint(first, [first, ...rest])}`);
    }
  });
  for (const [name, u] of Object.entries(ups ?? {})) {
    if (!isRecord(u)) continue;
    const lists: Array<[string, unknown[]]> = [
      ['allow', Array.isArray(u.allow) ? (u.allow as unknown[]) : []],
      ['deny', Array.isArray(u.deny) ? (u.deny as unknown[]).map((x) => (isRecord(x) ? x.repository : undefined)) : []],
    ];
    for (const [list, patterns] of lists) {
      patterns.forEach((pattern, i) => {
        if (typeof pattern !== 'string') return;
        const key = `upstreams.${name}.${list}.${i}${list === 'deny' ? '.repository' : ''}`;
        const parts = pattern.split('/');
        if (parts[0] === name && parts.length > 1) {
          problems.push(`${key}: ${JSON.stringify(pattern)} never matches: ${list} patterns are names within ${name}, so write ${JSON.stringify(parts.slice(1).join('/'))}`);
        } else if (library(name) && oneComponent(parts)) {
          problems.push(`${key}: ${JSON.stringify(pattern)} never matches: ${libraryHint(name, parts)}`);
        }
      });
    }
  }
  return problems;
}

/** A Map that refuses changes once built: the configured upstreams are fixed for the process's life. */
class FrozenMap<K, V> extends Map<K, V> {
  private sealed = false;
  constructor(entries: Iterable<readonly [K, V]>) {
    super(entries);
    this.sealed = true;
  }
  override set(key: K, value: V): this {
    if (this.sealed) throw new TypeError('configuration is read-only');
    return super.set(key, value);
  }
  override delete(): boolean {
    throw new TypeError('configuration is read-only');
  }
  override clear(): void {
    throw new TypeError('configuration is read-only');
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `${NAME}` in any string value is replaced by that environment variable; an unset one is an error. */
function expandEnv(v: unknown, env: NodeJS.ProcessEnv, path: string[], problems: string[]): unknown {
  if (typeof v === 'string') {
    return v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const value = env[name];
      if (value === undefined) {
        problems.push(`${path.join('.') || '(top level)'}: environment variable ${name} is not set`);
        return '';
      }
      return value;
    });
  }
  if (Array.isArray(v)) return v.map((x, i) => expandEnv(x, env, [...path, String(i)], problems));
  if (typeof v === 'object' && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expandEnv(x, env, [...path, k], problems)]));
  }
  return v;
}

/** STEVEDORE_LISTEN, STEVEDORE_STORAGE_PATH, STEVEDORE_LOG_LEVEL, STEVEDORE_LOG_FORMAT, STEVEDORE_REDIS_URL, STEVEDORE_WORKERS win over the file. */
function applyEnvOverrides(doc: unknown, env: NodeJS.ProcessEnv): unknown {
  const out: Record<string, unknown> = typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? { ...doc } : {};
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    if (doc !== null && doc !== undefined) return doc; // let the schema report the wrong type
  }
  const section = (key: string): Record<string, unknown> => {
    const cur = out[key];
    const copy = typeof cur === 'object' && cur !== null && !Array.isArray(cur) ? { ...cur } : {};
    out[key] = copy;
    return copy;
  };
  if (env.STEVEDORE_LISTEN) out.listen = env.STEVEDORE_LISTEN;
  if (env.STEVEDORE_STORAGE_PATH) section('storage').path = env.STEVEDORE_STORAGE_PATH;
  if (env.STEVEDORE_LOG_LEVEL) section('log').level = env.STEVEDORE_LOG_LEVEL;
  if (env.STEVEDORE_LOG_FORMAT) section('log').format = env.STEVEDORE_LOG_FORMAT;
  if (env.STEVEDORE_REDIS_URL) section('metadata').redis = env.STEVEDORE_REDIS_URL;
  // `auto` or a number (anything else is left for the schema to report under server.workers).
  if (env.STEVEDORE_WORKERS) section('server').workers = /^\d+$/.test(env.STEVEDORE_WORKERS) ? Number(env.STEVEDORE_WORKERS) : env.STEVEDORE_WORKERS;
  return out;
}

function deepFreeze<T>(o: T): T {
  if (o instanceof Map) {
    for (const v of o.values()) deepFreeze(v);
    Object.freeze(o);
  } else if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
