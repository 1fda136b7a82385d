/**
 * The configuration schema: every key, its type and its default. `config/stevedore.yaml` documents
 * the same defaults for users; test/config keeps the two in step.
 */
import { z } from 'zod';
import { parseCidr, parseDuration } from './units.js';
import { durationField, sizeField } from './unit-fields.js';
import { AUTH_DEFAULTS, authSchema, httpUrl, repositoryPattern } from './auth-schema.js';
import { verifySchema } from './verify-schema.js';
import { auditSchema, webhooksSchema } from './events-schema.js';
import { tracingSchema } from './tracing-schema.js';

const duration = durationField('30s, 5m, 1h, 7d');

const size = sizeField('4MiB, 50GiB');

const listen = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const text = String(v);
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:\s]*):)?(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `not a listen address: ${JSON.stringify(text)} (use HOST:PORT or :PORT)` });
    return z.NEVER;
  }
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port };
});

/** A Redis URL: redis:// (plain) or rediss:// (TLS), with a host. */
const redisUrl = z.string().superRefine((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a URL (use redis://host:6379/0, or rediss:// for TLS)' });
    return;
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') ctx.addIssue({ code: 'custom', message: `must be redis:// or rediss:// (TLS), got ${u.protocol}//` });
  else if (!u.hostname) ctx.addIssue({ code: 'custom', message: 'names no host (use redis://host:6379/0)' });
  else if (u.pathname.length > 1 && !/^\/\d+$/.test(u.pathname)) ctx.addIssue({ code: 'custom', message: 'the path is a database number (redis://host:6379/0)' });
});

/** The tag keyword of cache.tagTTLPolicies: v1.2.3, 1.2.3, 1.2.3-rc.1 (three numbers, an optional pre-release). */
export const SEMVER = 'semver';
/** The TTL keyword of cache.tagTTLPolicies: a stored answer is never revalidated. */
export const FOREVER = 'forever';

/** How long a tag's answer is trusted: a duration, or `forever`. */
const tagTTL = z.union([z.string(), z.number()]).transform((v, ctx): number | typeof FOREVER => {
  if (v === FOREVER) return FOREVER;
  const ms = parseDuration(v);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use e.g. 30s, 5m, 1h, 7d, or ${FOREVER}: never revalidated)` });
    return z.NEVER;
  }
  return ms;
});

/** A tag with `*` standing for any characters (tags have no "/"), or the keyword `semver`. */
const TAG_GLOB_RE = /^[A-Za-z0-9_*][A-Za-z0-9._*-]{0,127}$/;
const tagPattern = z.string().superRefine((v, ctx) => {
  const hint = `a tag where * stands for any characters (e.g. latest, v1.*, *-alpine), or the keyword ${SEMVER}`;
  if (!TAG_GLOB_RE.test(v)) {
    ctx.addIssue({ code: 'custom', message: `not a tag pattern: ${JSON.stringify(v)} (${hint})` });
  } else if (v !== SEMVER && v.toLowerCase() === SEMVER) {
    // Tags are case-sensitive, so "SemVer" would be a literal tag that almost certainly never exists.
    ctx.addIssue({ code: 'custom', message: `unknown keyword ${JSON.stringify(v)}: the keyword is ${SEMVER} (lowercase)` });
  }
});

const tagTTLPolicySchema = z
  .object({
    /** Proxied repositories as `<upstream>/<name>` (auth rules' grammar: `*` one component, `**` any number). */
    repository: repositoryPattern.default('**'),
    tag: tagPattern,
    ttl: tagTTL,
  })
  .strict();

/** What is done with a cached tag its upstream deleted (lib/cache/gone-tags.ts). */
export const GONE_ACTIONS = ['keep', 'forget'] as const;

const gonePolicySchema = z
  .object({
    /** Proxied repositories as `<upstream>/<name>` (auth rules' grammar: `*` one component, `**` any number). */
    repository: repositoryPattern.default('**'),
    /** keep: serve the stored tag, marked (Warning: 110), pinned while gone; forget: drop the tag, the pull fails as upstream's did. */
    action: z.enum(GONE_ACTIONS),
  })
  .strict();

/** A reason given to clients in a DENIED answer: one line of text. */
const denyReason = z
  .string()
  .trim()
  .min(1, { message: 'a reason is one line of text (leave it out for none)' })
  .max(500, { message: 'a reason is at most 500 characters' })
  .refine((v) => ![...v].some((c) => c < ' ' || c === '\u007f'), { message: 'a reason is one line of text, without control characters' });

const denySchema = z
  .object({
    /** A repository name within the upstream (`library/*`, `bitnami/**`). */
    repository: repositoryPattern,
    reason: denyReason.optional(),
  })
  .strict();

/** An http(s) origin and nothing more (no path, query or credentials), as written: `message` says why not. */
/** Private and loopback networks, where a cluster's pods and nodes live (never link-local: metadata services). */
export const DEFAULT_PEER_NETWORKS: readonly string[] = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.0/8', '::1/128', 'fc00::/7'];

/** CIDR blocks, e.g. ["10.0.0.0/8", "fd00::/8"]. */
const cidrList = z.array(z.string().refine((c) => parseCidr(c) !== null, { message: 'a CIDR block, e.g. 10.0.0.0/8 or fd00::/8' })).min(1);

function originUrl(message: string): z.ZodType<string, string> {
  return z.string().transform((v, ctx) => {
    const u = httpUrl(v, ctx);
    if (!u) return z.NEVER;
    if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username || u.password) {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    }
    return u.origin;
  });
}

const upstreamUrl = originUrl('must be an origin only (scheme://host[:port]); credentials go in username/password');

/** storage.s3: the bucket of the S3 backend (lib/storage/s3/). */
const s3Schema = z
  .object({
    /** An existing bucket (stevedore does not create it). */
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: 'a bucket name: 3-63 of a-z 0-9 . -' }),
    /** Keys go under this (`stevedore/`); '' or ending in '/'. */
    prefix: z
      .string()
      .regex(/^(?:[A-Za-z0-9._-]+\/)*$/, { message: "'' or path components of A-Z a-z 0-9 . _ - each ending in /" })
      .default(''),
    /** S3-compatible servers (RGW, MinIO, R2); unset: AWS's endpoint for the region. */
    endpoint: z
      .string()
      .transform((v, ctx) => httpUrl(v, ctx)?.origin ?? z.NEVER)
      .nullable()
      .default(null),
    region: z.string().min(1).default('us-east-1'),
    /** http://endpoint/bucket/key rather than http://bucket.endpoint/key (most S3-compatible servers need it). */
    forcePathStyle: z.boolean().default(false),
    /** Static credentials (use ${VAR}); unset: the files below, else the AWS default chain (env, shared file, IRSA, instance profile). */
    accessKeyId: z.string().min(1).nullable().default(null),
    secretAccessKey: z.string().min(1).nullable().default(null),
    /** Files holding them (a mounted Secret), re-read about every minute. */
    accessKeyIdFile: z.string().min(1).nullable().default(null),
    secretAccessKeyFile: z.string().min(1).nullable().default(null),
    /** Server-side encryption asked for every object: AES256 (SSE-S3) or aws:kms (SSE-KMS, with sseKmsKeyId). */
    sse: z.enum(['AES256', 'aws:kms']).nullable().default(null),
    sseKmsKeyId: z.string().min(1).nullable().default(null),
    /** Blob GETs answered with 307 to a presigned URL of the object, for clients that follow redirects (as distribution's `redirect`). */
    redirect: z.boolean().default(false),
    /**
     * How long a presigned URL is valid: an hour at most. Whoever holds the URL reads the blob,
     * with no check of who they are, until it expires (a log line, a proxy's cache, a client's
     * debug output all keep it).
     */
    redirectTTL: duration
      .refine((ms) => ms >= 10_000 && ms <= 3_600_000, { message: 'between 10s and 1h (whoever holds a presigned URL reads the blob until it expires)' })
      .default(20 * 60_000),
    /** Bytes per part of a multipart upload: at least 5MiB (S3's minimum), at most 5GiB. */
    partSize: size.refine((n) => n >= 5 * 1024 * 1024 && n <= 5 * 1024 * 1024 * 1024, { message: 'between 5MiB and 5GiB' }).default(16 * 1024 * 1024),
    /** Blobs at least this big are read by parallel ranged GETs (readPartSize × readConcurrency); null: one GET per read, whatever the size. */
    readThreshold: size.refine((n) => n >= 1024 * 1024, { message: 'at least 1MiB' }).nullable().default(32 * 1024 * 1024),
    /** Bytes per ranged GET of a parallel read. */
    readPartSize: size.refine((n) => n >= 256 * 1024 && n <= 256 * 1024 * 1024, { message: 'between 256KiB and 256MiB' }).default(8 * 1024 * 1024),
    /**
     * Ranged GETs in flight at once per parallel read (each one after the first holds readPartSize
     * of readMemory); 1: one GET per read, of its whole range. auto: 1 where parts are received into
     * pooled memory (pooledReads, an http:// endpoint: one such stream costs less CPU, of the gateway
     * too, than several), 4 through the SDK (https://, AWS: a connection's rate is the limit).
     */
    readConcurrency: z.union([z.literal('auto'), z.number().int().min(1).max(64)]).default('auto'),
    /** Memory that parallel reads may hold for parts read ahead, all reads of the process together; a read that gets none streams one part at a time. */
    readMemory: size.refine((n) => n >= 1024 * 1024, { message: 'at least 1MiB' }).default(64 * 1024 * 1024),
    /**
     * Parts of those reads from an http:// endpoint are received straight into pooled memory
     * (storage/s3/pooled-get.ts) instead of through the SDK's HTTP client; false: always the SDK.
     */
    pooledReads: z.boolean().default(true),
    /** How often the index is reconciled with a listing of the bucket (listing is slow and paid). */
    reconcileInterval: duration.refine((ms) => ms >= 60_000, { message: 'at least 1m' }).default(3_600_000),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.accessKeyId === null) !== (v.secretAccessKey === null)) ctx.addIssue({ code: 'custom', path: ['secretAccessKey'], message: 'accessKeyId and secretAccessKey go together' });
    if ((v.accessKeyIdFile === null) !== (v.secretAccessKeyFile === null)) ctx.addIssue({ code: 'custom', path: ['secretAccessKeyFile'], message: 'accessKeyIdFile and secretAccessKeyFile go together' });
    if (v.sseKmsKeyId !== null && v.sse !== 'aws:kms') ctx.addIssue({ code: 'custom', path: ['sseKmsKeyId'], message: 'only with sse: aws:kms' });
  });

/** A stall window: at least a second (shorter would cut healthy bodies on a busy machine). */
const stallWindow = duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' });

export const TIMEOUT_DEFAULTS = {
  connect: 10_000,
  firstByte: 60_000,
  idle: 120_000,
  stall: 30_000,
  minProgress: 16 * 1024,
  request: 120_000,
};

const timeoutsSchema = z
  .object({
    /** TCP + TLS connect. */
    connect: duration.default(TIMEOUT_DEFAULTS.connect),
    /** From sending the request to the response headers. */
    firstByte: duration.default(TIMEOUT_DEFAULTS.firstByte),
    /** Longest silence while a body is streaming (a multi-GiB layer on a slow link keeps going). */
    idle: duration.default(TIMEOUT_DEFAULTS.idle),
    /**
     * An upstream body that delivers fewer than `minProgress` bytes within this long is stalled: a
     * blob download resumes with Range, any other request fails. Catches silence and drips alike.
     */
    stall: stallWindow.default(TIMEOUT_DEFAULTS.stall),
    /** Bytes an upstream body must deliver in every `stall` window. */
    minProgress: size.default(TIMEOUT_DEFAULTS.minProgress),
    /** Overall deadline of an upstream request other than a blob body: headers and body, every page. */
    request: duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' }).default(TIMEOUT_DEFAULTS.request),
  })
  .strict();

/** Per-upstream overrides: no defaults here, a key left out keeps the global value. */
const timeoutOverridesSchema = z
  .object({
    connect: duration.optional(),
    firstByte: duration.optional(),
    idle: duration.optional(),
    stall: stallWindow.optional(),
    minProgress: size.optional(),
    request: duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' }).optional(),
  })
  .strict();

/**
 * How a source is asked for a repository of the upstream it serves: `none` as the upstream itself
 * (`/v2/<name>/...`: a public mirror such as mirror.gcr.io), `ns` with containerd's `?ns=<upstream>`
 * (another stevedore), `path` with the upstream as a path prefix (`/v2/<upstream>/<name>/...`).
 */
const namespaceMode = z.enum(['none', 'ns', 'path']);

/** A file path (credentials read at use, so a rotated Kubernetes Secret is picked up). */
const filePath = z.string().min(1);

/**
 * Where an upstream's (or a source's) credentials come from when they are not a plain
 * username/password (lib/upstream/credentials/):
 *   helper  a Docker credential helper: `docker-credential-<helper> get`, the registry host on stdin
 *   ecr     Amazon ECR: GetAuthorizationToken with the AWS default credential chain
 *   gcp     Google (GCR / Artifact Registry): a service-account key file (`_json_key`), or an access
 *           token from a file or the metadata server (`oauth2accesstoken`)
 *   acr     Azure Container Registry: an AAD access token (a file, a value, or asked of AAD with the
 *           environment's workload identity or client secret) exchanged for a refresh token at the
 *           registry, then for access tokens per scope
 */
const credentialSourceSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('helper'),
      /** `ecr-login` runs docker-credential-ecr-login (found on PATH). */
      helper: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { message: 'a helper name such as ecr-login, gcr, acr-env, pass (docker-credential-<name> on PATH)' }),
      /** What the helper is asked for. Default: the source's host (as Docker asks). */
      serverURL: z.string().min(1).optional(),
      /** How long its answer is reused (helpers say nothing about expiry); a 401 asks again at once. */
      cacheFor: duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' }).optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('ecr'),
      /** AWS region of the registry. Default: from the registry host (<account>.dkr.ecr.<region>.amazonaws.com), else AWS_REGION. */
      region: z.string().regex(/^[a-z0-9-]{1,32}$/, { message: 'an AWS region such as eu-west-1' }).optional(),
      /** The AWS account id owning the registry. Default: from the registry host, else the caller's. */
      registryId: z.string().regex(/^\d{12}$/, { message: 'a 12-digit AWS account id' }).optional(),
      /** The ECR API endpoint (a VPC endpoint, or a test double). Default: the SDK's for the region. */
      endpoint: z.string().url().optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('gcp'),
      /** A service-account key file (JSON): Basic `_json_key` with the file's content. */
      keyFile: filePath.optional(),
      /** A file holding an OAuth2 access token (rotated by something else): Basic `oauth2accesstoken`. */
      tokenFile: filePath.optional(),
      /** The metadata server, asked when neither file is given. */
      metadataUrl: originUrl('must be an origin only (scheme://host[:port])').optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('acr'),
      /** A file holding an AAD access token (rotated by something else). */
      tokenFile: filePath.optional(),
      /** An AAD access token itself, e.g. ${AZURE_ACCESS_TOKEN}. */
      token: z.string().min(1).optional(),
      /** AAD tenant, sent to /oauth2/exchange. Default: AZURE_TENANT_ID when the AAD token comes from the environment. */
      tenant: z.string().min(1).optional(),
      /**
       * Neither tokenFile nor token: the AAD token is asked of AAD with the environment's identity
       * (workload identity: AZURE_FEDERATED_TOKEN_FILE; or AZURE_CLIENT_SECRET; with AZURE_CLIENT_ID
       * and AZURE_TENANT_ID), at this authority. Default: AZURE_AUTHORITY_HOST, else
       * https://login.microsoftonline.com.
       */
      authorityHost: originUrl('must be an origin only (scheme://host[:port])').optional(),
    })
    .strict(),
]);

/** One source of an upstream: where its content may be fetched, asked in order (see upstreams.*.sources). */
const sourceSchema = z
  .object({
    /** Its name in logs, metrics and health records. Default: the URL's host. */
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/, { message: 'letters, digits, . _ : - (a host name will do)' })
      .optional(),
    url: upstreamUrl,
    namespace: namespaceMode.optional(),
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** The password read from this file (at use: a rotated secret is picked up), instead of `password`. */
    passwordFile: filePath.optional(),
    /** Credentials a cloud issues (helper, ecr, gcp, acr), instead of username/password. */
    credentials: credentialSourceSchema.optional(),
    /** Overrides the upstream's timeouts for this source (a nearby cache: a short connect timeout). */
    timeouts: timeoutOverridesSchema.optional(),
    redirects: z.enum(['blobs', 'all']).optional(),
  })
  .strict();

/** `peers` (the other node instances, node.peers) or a source by URL (its own errors, under its key). */
const sourceEntry = z.unknown().transform((v, ctx): 'peers' | z.output<typeof sourceSchema> => {
  if (v === 'peers') return 'peers';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    ctx.addIssue({ code: 'custom', message: 'a source is `peers` or { url, namespace, username, password, timeouts, name }' });
    return z.NEVER;
  }
  const r = sourceSchema.safeParse(v);
  if (r.success) return r.data;
  for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
  return z.NEVER;
});

// username/password pairing is checked in parseConfig, so it is reported alongside other errors.
const upstreamSchema = z
  .object({
    /** The upstream's own API. Required unless `sources` lists where its content comes from. */
    url: upstreamUrl.optional(),
    /**
     * Where this upstream's content is fetched, in order: each source is asked until one answers;
     * a failing one is skipped until its circuit breaker lets a request through again. Entries:
     * `peers` (node mode: other nodes holding a blob) or `{ url, namespace, username, password,
     * timeouts }`. Absent: the upstream's `url` alone (with node.central: peers, central, url).
     */
    sources: z.array(sourceEntry).min(1).max(10).optional(),
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** The password read from this file (at use: a rotated secret is picked up), instead of `password`. */
    passwordFile: filePath.optional(),
    /** Credentials a cloud issues (helper, ecr, gcp, acr), instead of username/password. */
    credentials: credentialSourceSchema.optional(),
    /** Docker Hub rule: single-segment names become `library/<name>`. Default: true for docker.io only. */
    library: z.boolean().optional(),
    /** Overrides cache.tagTTL for this upstream. */
    tagTTL: duration.optional(),
    timeouts: timeoutOverridesSchema.optional(),
    /** Overrides the global `offline`. */
    offline: z.boolean().optional(),
    /** Only repositories matching one of these (names within the upstream) are proxied. Absent: all. */
    allow: z.array(repositoryPattern).optional(),
    /** Repositories refused (403 DENIED with the reason), checked before `allow`. */
    deny: z.array(denySchema).optional(),
    /**
     * Which upstream redirects are followed: `blobs` (blob GETs only, e.g. Docker Hub's CDN) or
     * `all` (every GET and HEAD, for registries that redirect their whole API). Default: `all` for
     * registry.k8s.io only.
     */
    redirects: z.enum(['blobs', 'all']).optional(),
  })
  .strict();

/** The names upstreams are addressed by: `?ns=` values and path prefixes, i.e. registry host names. */
const upstreamName = z
  .string()
  .regex(/^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d{1,5})?$/, {
    message: 'an upstream name is a registry host name such as docker.io or ghcr.io',
  });

/** A hosted-repository pattern: name characters plus `*` (one component) and `**` (any depth). */
const hostedPattern = z
  .string()
  .regex(/^(?:\*\*|\*|[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)(?:\/(?:\*\*|\*|[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*))*$/, {
    message: 'a hosted pattern is a repository name whose components may be * (one component) or ** (any number), e.g. lab/* or team/**',
  });

export const DEFAULT_UPSTREAMS: Record<string, { url: string }> = {
  'docker.io': { url: 'https://registry-1.docker.io' },
  'ghcr.io': { url: 'https://ghcr.io' },
  'quay.io': { url: 'https://quay.io' },
  'registry.k8s.io': { url: 'https://registry.k8s.io' },
  'gcr.io': { url: 'https://gcr.io' },
  'mcr.microsoft.com': { url: 'https://mcr.microsoft.com' },
  'public.ecr.aws': { url: 'https://public.ecr.aws' },
};

const GiB = 1024 ** 3;

export const CLUSTER_DEFAULTS = {
  leaseTTL: 10_000,
  pollInterval: 100,
  recencyFlush: 5_000,
  evictionInterval: 10_000,
  replicaId: null as string | null,
  advertise: null as string | null,
  token: null as string | null,
  allowedNetworks: [...DEFAULT_PEER_NETWORKS],
};

export const PEER_DEFAULTS = {
  ttl: 600_000,
  badFor: 60_000,
  timeouts: { connect: 1_000, firstByte: 5_000, stall: 5_000 },
};

export const CACHE_DEFAULTS = {
  tagTTL: 300_000,
  manifestMaxSize: 4 * 1024 * 1024,
  finishAbandonedDownloads: true,
  downloadResumes: 5,
  tagTTLPolicies: [],
  gonePolicies: [],
  manifestMaxReferences: 10_000,
  blobMaxSize: 32 * GiB,
  tagsListMaxTags: 100_000,
  tagsListMaxBytes: 16 * 1024 * 1024,
  refreshAhead: { enabled: true, before: 30_000, minRequests: 10, perUpstream: 16 },
};

export const REGISTRY_DEFAULTS = {
  hosted: [] as string[],
  delete: false,
  uploadMaxAge: 86_400_000,
  uploadMaxSize: 16 * GiB,
  maxUploadSessions: 1000,
  maxUploadSessionsPerUser: 100,
  uploadQuotaPerUser: 64 * GiB,
  pushUpstreamChecks: 64,
};

/** tls.clientAuth: whether the main listener asks for a client certificate, and needs one. */
export const CLIENT_AUTH_MODES = ['required', 'optional', 'off'] as const;
/**
 * tls.clientIdentity: which part of a client certificate names the client. The identity is written
 * `<kind>:<value>` (`cn:node-1`, `dns:node-1.nodes.example`, `uri:spiffe://...`, `email:ops@...`):
 * an htpasswd user name has no ":", so a certificate can never pass for a password user.
 */
export const CLIENT_IDENTITIES = ['cn', 'san-dns', 'san-uri', 'san-email'] as const;

/** tls.reloadInterval: how often the certificate and key files are read again. */
export const TLS_RELOAD_DEFAULT = 5_000;

const SERVER_DEFAULTS = {
  headersTimeout: 20_000,
  keepAliveTimeout: 65_000,
  idleTimeout: 300_000,
  requestBodyTimeout: 30_000,
  requestBodyMinBytes: 16 * 1024,
  maxConnections: null,
  maxConnectionsPerAddress: 256,
  shutdownGrace: 10_000,
  workers: 'auto' as const,
  idleMemoryReturn: 30_000,
};

export const configSchema = z
  .object({
    listen: listen.default({ host: '0.0.0.0', port: 5000 }),
    /**
     * A listener of its own for the peer endpoint (other node instances, other replicas on S3),
     * so a NetworkPolicy can keep everyone else off it. null: the peer endpoint is on `listen`.
     */
    peerListen: listen.nullable().default(null),
    storage: z
      .object({
        /** The store (filesystem backend); with `backend: s3`, only local working space (downloads being written, push chunks being received, the index snapshot). */
        path: z.string().min(1).default('./data'),
        /** Bytes of cached content kept; least recently served content is evicted past it. null: unbounded. */
        maxSize: size.nullable().default(null),
        /** Where blobs, manifests and the repositories' records live: files under `path`, or objects in an S3 bucket (`s3`). */
        backend: z.enum(['filesystem', 's3']).default('filesystem'),
        /** The bucket (backend: s3): S3, Ceph RGW, MinIO, R2, GCS's S3 API. */
        s3: s3Schema.nullable().default(null),
      })
      .strict()
      .superRefine((v, ctx) => {
        if (v.backend === 's3' && v.s3 === null) ctx.addIssue({ code: 'custom', path: ['s3'], message: 'backend s3 needs storage.s3 (at least its bucket)' });
      })
      .default({ path: './data', maxSize: null, backend: 'filesystem', s3: null }),
    /** Limits on client connections: what a slow, trickling or greedy client may hold. */
    server: z
      .object({
        /** A request's head must arrive within this. */
        headersTimeout: duration.default(20_000),
        /** An idle keep-alive connection is closed after this. */
        keepAliveTimeout: duration.default(65_000),
        /** While a blob is sent, a connection on which nothing moves either way for this long is closed (a client that stopped reading). */
        idleTimeout: duration.default(300_000),
        /**
         * A request body (upload, manifest, token form) that delivers less than requestBodyMinBytes in
         * this long is cut: a client trickling a byte at a time cannot hold a connection for ever.
         */
        requestBodyTimeout: duration.default(30_000),
        requestBodyMinBytes: size.default(16 * 1024),
        /** Open client connections at most. null: from the process's open-file limit, leaving room for files. */
        maxConnections: z.number().int().min(1).nullable().default(null),
        /** Open connections from one client address at most. */
        maxConnectionsPerAddress: z.number().int().min(1).default(256),
        /**
         * On SIGTERM, answers and downloads in progress get this long to finish; then connections are
         * cut and (cluster mode) downloads still running are handed to another replica.
         */
        shutdownGrace: duration.default(10_000),
        /**
         * Processes serving one port on one store (node:cluster, lib/server/supervisor.ts). `auto`:
         * the cores available to the process (its cgroup CPU quota included). 1: one process, no
         * supervisor.
         */
        workers: z.union([z.literal('auto'), z.number().int().min(1).max(1024)]).default('auto'),
        /**
         * Memory given back to the system when idle (lib/server/idle-memory.ts): at start-up, and
         * when no request has come for this long after some did (nothing in flight), one
         * memory-reducing garbage collection (20–60 ms). null: never.
         */
        idleMemoryReturn: duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' }).nullable().default(30_000),
      })
      .strict()
      .default(SERVER_DEFAULTS),
    /**
     * HTTPS served natively: PEM certificate (chain) and key files, re-read every reloadInterval
     * and swapped in for new connections when they change (lib/server/tls-certificate.ts).
     * null: plain HTTP.
     */
    tls: z
      .object({
        /** PEM certificate file: the server's certificate first, then any intermediates. */
        cert: z.string().min(1),
        /** PEM private key file of that certificate (unencrypted). */
        key: z.string().min(1),
        /** How often both files are read again; changed contents are loaded for new connections. */
        reloadInterval: duration.refine((ms) => ms >= 1_000 && ms <= 3_600_000, { message: 'between 1s and 1h' }).default(TLS_RELOAD_DEFAULT),
        /**
         * PEM bundle of the CA certificates client certificates must chain to (re-read with cert
         * and key). A client certificate that chains to it names the client (clientIdentity) for
         * the access rules and the audit log. null: client certificates are not asked for.
         */
        clientCA: z.string().min(1).nullable().default(null),
        /**
         * On the main listener (`listen`; peerListen never asks): `required` refuses every request
         * but the probes and the signed peer endpoint without a valid client certificate (403),
         * `optional` takes one when presented, `off` asks for none. Default: optional with a
         * clientCA, else off.
         */
        clientAuth: z.enum(CLIENT_AUTH_MODES).optional(),
        /** Which part of a client certificate is the identity: the subject's CN, or its one DNS, URI or email subjectAltName. */
        clientIdentity: z.enum(CLIENT_IDENTITIES).default('cn'),
      })
      .strict()
      .superRefine((v, ctx) => {
        if (v.clientAuth !== undefined && v.clientAuth !== 'off' && v.clientCA === null) {
          ctx.addIssue({
            code: 'custom',
            path: ['clientAuth'],
            message: `${v.clientAuth} needs tls.clientCA: the CA bundle (PEM) that client certificates must chain to`,
          });
        }
      })
      .transform(({ clientAuth, ...v }) => ({ ...v, clientAuth: clientAuth ?? (v.clientCA === null ? ('off' as const) : ('optional' as const)) }))
      .nullable()
      .default(null),
    metadata: z
      .object({
        /**
         * redis://host:port/db, or rediss:// (TLS) — shared metadata for several replicas. May carry
         * an ACL user and password (rediss://user:pass@host:6379/0). Unset: in-memory.
         */
        redis: redisUrl.nullable().default(null),
        /** The Redis ACL user (null: the URL's, else Redis's `default` user). */
        username: z.string().min(1).nullable().default(null),
        /** The Redis password (or `${VAR}`); null: the URL's, or passwordFile's, or none. */
        password: z.string().min(1).nullable().default(null),
        /** A file holding the Redis password (a mounted Secret), read again at every (re)connection. */
        passwordFile: z.string().min(1).nullable().default(null),
        /** TLS to Redis (a rediss:// URL): a private CA, a client certificate (mutual TLS). null: the system's CAs. */
        tls: z
          .object({
            /** PEM file of the CA(s) that signed Redis's certificate; null: the system's CAs. */
            ca: z.string().min(1).nullable().default(null),
            /** PEM client certificate and its key, for a Redis that verifies clients (tls-auth-clients yes). */
            cert: z.string().min(1).nullable().default(null),
            key: z.string().min(1).nullable().default(null),
            /** The name Redis's certificate is checked against; null: the URL's host. */
            serverName: z.string().min(1).nullable().default(null),
          })
          .strict()
          .nullable()
          .default(null),
      })
      .strict()
      .superRefine((m, ctx) => {
        const issue = (path: string, message: string): void => ctx.addIssue({ code: 'custom', path: [path], message });
        if (m.redis === null) {
          for (const k of ['username', 'password', 'passwordFile', 'tls'] as const) if (m[k] !== null) issue(k, 'needs metadata.redis (the Redis these are for)');
          return;
        }
        let u: URL;
        try {
          u = new URL(m.redis);
        } catch {
          return; // reported by redisUrl
        }
        if (m.password !== null && m.passwordFile !== null) issue('passwordFile', 'give metadata.password or metadata.passwordFile, not both');
        if (u.password && (m.password !== null || m.passwordFile !== null)) issue(m.password !== null ? 'password' : 'passwordFile', 'metadata.redis already carries a password: give it in one place');
        if (u.username && m.username !== null) issue('username', 'metadata.redis already carries a user name: give it in one place');
        if (m.tls !== null && u.protocol !== 'rediss:') issue('tls', 'TLS settings need a rediss:// URL in metadata.redis');
        if (m.tls !== null && (m.tls.cert === null) !== (m.tls.key === null)) issue('tls', 'cert and key go together (a client certificate and its key)');
      })
      .default({ redis: null, username: null, password: null, passwordFile: null, tls: null }),
    /**
     * Cluster mode: on whenever metadata.redis is set. Replicas whose storage.path is the same
     * directory (a ReadWriteMany volume) coordinate through Redis; these only tune it.
     */
    /**
     * Node mode: a stevedore on every node (a DaemonSet) in front of the central one. `central` is
     * asked after the peers and before each upstream's own url; `peers` shares blobs between nodes.
     */
    node: z
      .object({
        /** The central stevedore (asked with `?ns=`): every upstream without `sources` then goes peers → central → its url. */
        central: z
          .object({
            url: upstreamUrl,
            username: z.string().min(1).optional(),
            password: z.string().min(1).optional(),
            timeouts: timeoutOverridesSchema.optional(),
          })
          .strict()
          .nullable()
          .default(null),
        /** Blobs fetched from other node instances that hold them (Redis is the directory: metadata.redis). */
        peers: z
          .object({
            /** This instance's URL as the other nodes reach it, e.g. http://${NODE_IP}:5001. */
            advertise: originUrl('must be an origin only (scheme://host[:port])'),
            /** Shared by the node instances: a peer serves blobs only to requests signed with it (it never goes on the wire). */
            token: z.string().min(16, { message: 'at least 16 characters (a random secret shared by the node instances)' }),
            /** Networks (CIDR) other instances may be reached on: an address from Redis outside them is never connected to. */
            allowedNetworks: cidrList.default([...DEFAULT_PEER_NETWORKS]),
            /** Instances with the same group (and Redis) are peers of each other. */
            group: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, { message: 'letters, digits, . _ - (at most 64)' }).default('default'),
            /** How long an announcement that this instance holds a blob lasts; renewed while it does. */
            ttl: duration.refine((ms) => ms >= 10_000, { message: 'at least 10s' }).default(PEER_DEFAULTS.ttl),
            /** A peer found failing (gone, stalled, wrong bytes) is not asked again for this long. */
            badFor: duration.default(PEER_DEFAULTS.badFor),
            /** Timeouts of transfers from peers (short: a peer is on the same network). */
            timeouts: timeoutOverridesSchema.default(PEER_DEFAULTS.timeouts),
          })
          .strict()
          .nullable()
          .default(null),
      })
      .strict()
      .default({ central: null, peers: null }),
    cluster: z
      .object({
        /** A download's lease lapses this long after its replica last renewed it; another replica then takes it over. */
        leaseTTL: duration.refine((ms) => ms >= 1_000, { message: 'at least 1s' }).default(CLUSTER_DEFAULTS.leaseTTL),
        /** How often a download another replica holds is looked at (its file's size, its lease). */
        pollInterval: duration.refine((ms) => ms >= 10 && ms <= 5_000, { message: 'between 10ms and 5s' }).default(CLUSTER_DEFAULTS.pollInterval),
        /** How often each replica sends what it served (recency, for eviction) to Redis, batched. */
        recencyFlush: duration.refine((ms) => ms >= 100, { message: 'at least 100ms' }).default(CLUSTER_DEFAULTS.recencyFlush),
        /** How often the replica holding the eviction lease checks the store against storage.maxSize. */
        evictionInterval: duration.refine((ms) => ms >= 100, { message: 'at least 100ms' }).default(CLUSTER_DEFAULTS.evictionInterval),
        /** This replica's name in leases and logs. null: host name and process id (a pod's name in Kubernetes). */
        replicaId: z.string().min(1).max(200).nullable().default(null),
        /**
         * The S3 backend: this replica's URL as the other replicas reach it (e.g. http://${POD_IP}:5000).
         * Replicas share no disk there, so the clients of the others stream a download in progress
         * from the replica holding it.
         */
        advertise: originUrl('must be an origin only (scheme://host[:port])').nullable().default(null),
        /** The S3 backend: shared by the replicas; the holder of a download serves it only to requests signed with it (it never goes on the wire). */
        token: z.string().min(16, { message: 'at least 16 characters (a random secret shared by the replicas)' }).nullable().default(null),
        /** The S3 backend: networks (CIDR) replicas may be reached on; a holder address from Redis outside them is never connected to. */
        allowedNetworks: cidrList.default([...DEFAULT_PEER_NETWORKS]),
      })
      .strict()
      .default(CLUSTER_DEFAULTS),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /**
         * `json`: one JSON line per event (what log shippers read); `pretty`: one readable line per
         * event; `auto`: pretty when stdout is a terminal, JSON otherwise.
         */
        format: z.enum(['auto', 'json', 'pretty']).default('auto'),
      })
      .strict()
      .default({ level: 'info', format: 'auto' }),
    /** Client authentication (htpasswd, Docker token flow) and access rules. */
    auth: authSchema.default(AUTH_DEFAULTS),
    /** The dashboard at `/` (same access rules as /metrics); off: `/` answers 404. */
    dashboard: z
      .object({
        enabled: z.boolean().default(true),
      })
      .strict()
      .default({ enabled: true }),
    cache: z
      .object({
        /** How long a tag → digest answer is trusted before it is revalidated upstream with a HEAD. */
        tagTTL: duration.default(CACHE_DEFAULTS.tagTTL),
        /** Manifests larger than this are refused (they are read into memory to be parsed). */
        manifestMaxSize: size.default(CACHE_DEFAULTS.manifestMaxSize),
        /** Keep downloading a blob into the store when every client asking for it has gone. */
        finishAbandonedDownloads: z.boolean().default(true),
        /** Times a broken upstream body is resumed with a Range request before the download fails. */
        downloadResumes: z.number().int().min(0).max(100).default(5),
        /** TTL tiers: the first policy matching a tag decides its TTL; no match: tagTTL (or the upstream's). */
        tagTTLPolicies: z.array(tagTTLPolicySchema).default([]),
        /**
         * Cached tags the upstream deleted (404 / NAME_UNKNOWN / MANIFEST_UNKNOWN): the first policy
         * whose repository matches decides; no match: keep.
         */
        gonePolicies: z.array(gonePolicySchema).default([]),
        /** Blobs and child manifests one manifest may name, pulled or pushed (more: MANIFEST_INVALID). */
        manifestMaxReferences: z.number().int().min(1).default(CACHE_DEFAULTS.manifestMaxReferences),
        /** No upstream blob download goes past this many bytes (when its size is not known otherwise). */
        blobMaxSize: size.refine((n) => n >= 1, { message: 'at least 1 byte' }).default(CACHE_DEFAULTS.blobMaxSize),
        /** An upstream tag list (all its pages) with more tags than this is refused. */
        tagsListMaxTags: z.number().int().min(1).default(CACHE_DEFAULTS.tagsListMaxTags),
        /** An upstream tag list (all its pages) larger than this is refused. */
        tagsListMaxBytes: size.refine((n) => n >= 1024, { message: 'at least 1KiB' }).default(CACHE_DEFAULTS.tagsListMaxBytes),
        /**
         * Hot tags are revalidated in the background shortly before their TTL ends, so their clients
         * never wait on the upstream (lib/cache/refresh-ahead.ts). Skipped while the upstream cools
         * down, its breaker is open or its quota is low.
         */
        refreshAhead: z
          .object({
            enabled: z.boolean().default(CACHE_DEFAULTS.refreshAhead.enabled),
            /** How long before the TTL ends the revalidation starts (at most half the tag's TTL). */
            before: duration.refine((ms) => ms >= 100, { message: 'at least 100ms' }).default(CACHE_DEFAULTS.refreshAhead.before),
            /** Requests for a tag since it was last revalidated that make it hot. */
            minRequests: z.number().int().min(1).default(CACHE_DEFAULTS.refreshAhead.minRequests),
            /** Background revalidations running at once per upstream at most (more hot tags: revalidated on expiry, as others). */
            perUpstream: z.number().int().min(1).max(1000).default(CACHE_DEFAULTS.refreshAhead.perUpstream),
          })
          .strict()
          .default(CACHE_DEFAULTS.refreshAhead),
      })
      .strict()
      .default(CACHE_DEFAULTS),
    timeouts: timeoutsSchema.default(TIMEOUT_DEFAULTS),
    /** Upstream for names with no `ns` and no registry prefix (Docker's registry-mirrors). null: none. */
    defaultUpstream: upstreamName.nullable().default('docker.io'),
    upstreams: z.record(upstreamName, upstreamSchema).default(DEFAULT_UPSTREAMS as never),
    /** Never contact any upstream: serve what is stored, refuse the rest with an error saying so. */
    offline: z.boolean().default(false),
    registry: z
      .object({
        /** Repository names hosted here (glob patterns: `*` one name component, `**` any). Never proxied. */
        hosted: z.array(hostedPattern).default(REGISTRY_DEFAULTS.hosted),
        /** Allow DELETE of manifests, tags and blobs (hosted and seeded repositories). */
        delete: z.boolean().default(REGISTRY_DEFAULTS.delete),
        /** Upload sessions idle this long are removed (swept periodically and at start-up). */
        uploadMaxAge: duration.refine((ms) => ms >= 60_000, { message: 'at least 1m: shorter would cut off uploads in progress' }).default(86_400_000),
        /** One upload (one blob) at most this large (413 past it). */
        uploadMaxSize: size.default(16 * GiB),
        /** Upload sessions open at once, in all (429 past it). */
        maxUploadSessions: z.number().int().min(1).default(1000),
        /** Upload sessions one user (or `anonymous`) may have open at once. */
        maxUploadSessionsPerUser: z.number().int().min(1).default(100),
        /** Bytes one user's (or `anonymous`'s) open upload sessions may hold (413 past it). */
        uploadQuotaPerUser: size.default(64 * GiB),
        /**
         * A manifest pushed into an upstream's namespace may name content the client did not push
         * because the upstream has it: at most this many such items are checked with the upstream
         * per push (more: MANIFEST_BLOB_UNKNOWN, nothing asked). 0: never ask.
         */
        pushUpstreamChecks: z.number().int().min(0).max(10_000).default(REGISTRY_DEFAULTS.pushUpstreamChecks),
      })
      .strict()
      .default(REGISTRY_DEFAULTS),
    upstreamPolicy: z
      .object({
        /** Cool-down after a 429 that carries no Retry-After. */
        retryAfterDefault: duration.default(60_000),
        /** Consecutive failures (5xx, refused, reset, timeout) that open the circuit breaker. */
        breakerFailures: z.number().int().min(1).default(5),
        /** How long an open circuit sends nothing to that upstream. */
        breakerOpenFor: duration.default(30_000),
        /** When ratelimit-remaining falls to this, tag TTLs stretch instead of spending the last pulls. */
        quotaLowWatermark: z.number().int().min(0).default(10),
        /** How much tag TTLs stretch while the quota is low. */
        quotaTTLMultiplier: z.number().min(1).default(12),
      })
      .strict()
      .default({ retryAfterDefault: 60_000, breakerFailures: 5, breakerOpenFor: 30_000, quotaLowWatermark: 10, quotaTTLMultiplier: 12 }),
    /** Signature policies: manifests of matching repositories are verified before they are served (lib/verify). */
    verify: verifySchema,
    /** The audit log: one JSON line per security-relevant act (lib/events/audit-log.ts). */
    audit: auditSchema,
    /** Webhooks: CloudEvents 1.0 for pushes, deletes, signature refusals, upstream facts (lib/events/webhooks.ts). */
    webhooks: webhooksSchema,
    /** OpenTelemetry traces over OTLP/HTTP (lib/server/otel-tracer.ts); off by default. */
    tracing: tracingSchema,
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
