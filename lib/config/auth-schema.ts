/**
 * The `auth` section: who may pull, push and delete what. Checked here as far as a document can
 * be (rule patterns, actions, groups every rule names, anonymous grants); the htpasswd and key
 * files are read at start-up by lib/server/auth.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseDuration } from './units.js';

export const ACTIONS = ['pull', 'push', 'delete'] as const;
export type Action = (typeof ACTIONS)[number];

/** Who a rule may name besides htpasswd users: every authenticated user, and clients without credentials. */
export const ANY_USER = '*';
export const ANONYMOUS = 'anonymous';

const MIN_TTL = 60_000;
const MAX_TTL = 86_400_000;

const ttl = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use e.g. 30s, 5m, 1h)` });
    return z.NEVER;
  }
  // Docker clients use a token for at least 60 s whatever expires_in says.
  if (ms < MIN_TTL || ms > MAX_TTL) {
    ctx.addIssue({ code: 'custom', message: `must be between 1m and 24h (Docker clients keep a token at least 60s), got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** A value written inside a quoted WWW-Authenticate parameter. */
const headerParam = z
  .string()
  .min(1)
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { message: 'printable ASCII without spaces, quotes or backslashes' });

/**
 * An http(s) URL, or null after reporting why not (shared by the upstream URLs in schema.ts and
 * the token realm here).
 */
export function httpUrl(v: string, ctx: z.core.$RefinementCtx): URL | null {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `not a URL: ${JSON.stringify(v)}` });
    return null;
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    ctx.addIssue({ code: 'custom', message: `must be http:// or https://, got ${u.protocol}` });
    return null;
  }
  return u;
}

const realmUrl = z.string().transform((v, ctx) => {
  const u = httpUrl(v, ctx);
  if (!u) return z.NEVER;
  if (u.username || u.password || u.hash || /["\\\s]/.test(v)) {
    ctx.addIssue({ code: 'custom', message: 'must be a plain URL without credentials, fragment, quotes or spaces' });
    return z.NEVER;
  }
  return u.href;
});

/**
 * Who a rule or a group names: an htpasswd user (anything but empty, ':' and whitespace), or a
 * client certificate's identity (config tls.clientIdentity), written `<kind>:<value>`: `cn:node-1`,
 * `dns:node-1.nodes.example`, `uri:spiffe://cluster/ns/x/sa/y`, `email:ops@example.com`. No
 * htpasswd name has a ':', so the two never meet.
 */
const userName = z.string().regex(/^(?:[^:\s]+|(?:cn|dns|uri|email):[^\s\p{Cc}](?:[^\p{Cc}]*[^\s\p{Cc}])?)$/u, {
  message: 'a user name is non-empty, without ":" or spaces; a client certificate\'s identity is cn:, dns:, uri: or email: then its value (e.g. cn:node-1)',
});
const groupName = z.string().regex(/^[A-Za-z0-9._-]+$/, { message: 'a group name is letters, digits, ".", "_" or "-"' });

/**
 * A repository pattern: name components separated by "/", where `*` matches within one component
 * and a component `**` matches any number of components (also none). Registry-host components
 * (`docker.io`, `localhost:5000`) are allowed: proxied repositories are named `<upstream>/<name>`.
 */
const REPO_PATTERN_RE = /^(?:\*\*|[a-z0-9._:*-]+)(?:\/(?:\*\*|[a-z0-9._:*-]+))*$/;
export const repositoryPattern = z.string().superRefine((v, ctx) => {
  if (!REPO_PATTERN_RE.test(v) || v.split('/').some((c) => c !== '**' && c.includes('**'))) {
    ctx.addIssue({
      code: 'custom',
      message: `not a repository pattern: ${JSON.stringify(v)} (lowercase name components; * within one component, ** for any number of them, e.g. lab/*, docker.io/**, **)`,
    });
  }
});

const ruleSchema = z
  .object({
    /** Repositories the rule covers: hosted ones by name, proxied ones as `<upstream>/<name>`. */
    repository: repositoryPattern,
    /**
     * htpasswd users and client certificate identities (`cn:node-1`, tls.clientIdentity); `*` every
     * authenticated user (a client certificate's included); `anonymous` clients without credentials.
     */
    users: z.array(userName).default([]),
    /** Groups from auth.groups. */
    groups: z.array(groupName).default([]),
    actions: z.array(z.enum(ACTIONS)).min(1),
  })
  .strict();

/**
 * The rules when `auth.rules` is not given: every user may pull everything; pushes and deletes go
 * only where the configuration hosts repositories (`registry.hosted`). Seeding an upstream's
 * namespace (`docker.io/...`) needs a rule that says so: otherwise any user could plant a tag that
 * everyone is served as stale while the upstream is rate-limited. These grants are `hostedOnly`:
 * they never apply to a proxied repository (`<upstream>/<name>`), whatever the patterns match.
 */
export function defaultAuthRules(hosted: readonly string[]): AccessRule[] {
  return [
    { repository: '**', users: [ANY_USER], groups: [], actions: ['pull'] },
    ...hosted.map((p): AccessRule => ({ repository: p, users: [ANY_USER], groups: [], actions: ['pull', 'push', 'delete'], hostedOnly: true })),
  ];
}

/** An address or CIDR range (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) as a subnet; null when it is none. */
export function parseAddressRange(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  if (!m) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(m[1]!);
  const address = mapped ? mapped[1]! : m[1]!;
  const family = isIP(address);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) return null;
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

const addressRange = z.string().refine((v) => parseAddressRange(v) !== null, {
  message: 'not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)',
});

const tokenDefaults = { realm: null, service: 'stevedore', issuer: 'stevedore', ttl: 300_000, key: null };

export const authSchema = z
  .object({
    /** htpasswd file with bcrypt hashes; reloaded when it changes. null: no users (nobody can push). */
    htpasswd: z.string().min(1).nullable().default(null),
    token: z
      .object({
        /** Token endpoint URL given to clients. null: `<scheme>://<Host header>/token`. */
        realm: realmUrl.nullable().default(null),
        service: headerParam.default('stevedore'),
        issuer: headerParam.default('stevedore'),
        ttl: ttl.default(300_000),
        /** File holding the signing secret (>= 32 bytes), shared by replicas. null: random per process. */
        key: z.string().min(1).nullable().default(null),
      })
      .strict()
      .default(tokenDefaults),
    /**
     * Clients without credentials may pull every repository. false: only what a rule grants to
     * `anonymous`, and /metrics needs a user too.
     */
    anonymousPull: z.boolean().default(true),
    /**
     * Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR ranges): the failed-login
     * throttle then counts the client's address, not the proxy's. []: nobody's.
     */
    trustedProxies: z.array(addressRange).default([]),
    groups: z.record(z.string(), z.array(userName)).default({}),
    /** Absent: defaultAuthRules(registry.hosted), filled in by loadConfig. */
    rules: z.array(ruleSchema).optional(),
  })
  .strict()
  .superRefine((auth, ctx) => {
    (auth.rules ?? []).forEach((rule, i) => {
      rule.groups.forEach((g, j) => {
        if (!Object.hasOwn(auth.groups, g)) {
          const known = Object.keys(auth.groups);
          ctx.addIssue({
            code: 'custom',
            path: ['rules', i, 'groups', j],
            message: `group ${JSON.stringify(g)} is not defined in auth.groups (${known.length ? known.join(', ') : 'none defined'})`,
          });
        }
      });
      if (rule.users.length === 0 && rule.groups.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['rules', i], message: 'a rule names at least one user or group (`*`: every user, `anonymous`: no credentials)' });
      }
    });
    for (const [g, members] of Object.entries(auth.groups)) {
      // Checked here: zod reports a bad record key only as "Invalid key in record".
      if (!groupName.safeParse(g).success) ctx.addIssue({ code: 'custom', path: ['groups', g], message: 'a group name is letters, digits, ".", "_" or "-"' });
      members.forEach((m, j) => {
        if (m === ANY_USER || m === ANONYMOUS) {
          ctx.addIssue({ code: 'custom', path: ['groups', g, j], message: `${JSON.stringify(m)} is not a user name; name it in a rule's users instead` });
        }
      });
    }
  });

export const AUTH_DEFAULTS = {
  htpasswd: null,
  token: tokenDefaults,
  anonymousPull: true,
  trustedProxies: [],
  groups: {},
};

/**
 * A rule as the code sees it. `hostedOnly` (set only by defaultAuthRules, never written in a
 * configuration: the schema is strict) limits the rule to hosted repositories.
 */
export type AccessRule = z.output<typeof ruleSchema> & { hostedOnly?: true };
/** The auth section as the rest of the code sees it: the rules always filled in. */
export type AuthConfig = Omit<z.output<typeof authSchema>, 'rules'> & { rules: AccessRule[] };
