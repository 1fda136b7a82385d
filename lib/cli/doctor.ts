/**
 * `stevedore doctor`: checks what a running stevedore depends on (its configuration, the store
 * directory, Redis, each upstream from DNS to a token) and says what to fix. Every check returns
 * results; a printer writes them one a line, or as JSON. Credentials and tokens never appear in a
 * result: every string goes through `redact` with the secrets seen, as a safety net.
 */
import { randomBytes } from 'node:crypto';
import dns from 'node:dns';
import fsp from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { ConfigError, loadConfig, type Config, type UpstreamConfig } from '../config/config.js';
import { formatBytes } from '../config/units.js';
import { configuredCoordinator } from '../cluster/coordinators.js';
import { StorePaths } from '../storage/paths.js';
import { mayReceiveCredentials } from '../upstream/outbound-policy.js';
import { credentialProvider, CredentialError } from '../upstream/credentials/index.js';
import type { CredentialSource } from '../config/config.js';
import { parseWwwAuthenticate, type Challenge } from '../upstream/www-authenticate.js';
import type { ConfigFlags } from './common.js';
import { readTlsPair, type TlsPair } from '../server/tls-certificate.js';
import { DIR_MODE, FILE_MODE } from '../storage/modes.js';
import { tcpConnect } from '../util/tcp-connect.js';
import { errText } from '../util/error-text.js';

export type Level = 'ok' | 'warn' | 'info' | 'skip' | 'fail';

export interface CheckResult {
  check: string;
  target: string;
  /** false only for a failure (warnings and notes are ok). */
  ok: boolean;
  level: Level;
  detail: string;
  fix: string | null;
}

const NET_TIMEOUT_MS = 5_000;
const HTTP_TIMEOUT_MS = 10_000;
const TMP_LEFTOVER_AGE_MS = 3_600_000;

function result(level: Level, check: string, target: string, detail: string, fix: string | null = null): CheckResult {
  return { check, target, ok: level !== 'fail', level, detail, fix };
}

/** Loads the configuration as every command does; a ConfigError becomes one failing result. */
export function checkConfig(flags: ConfigFlags): { config: Config | null; results: CheckResult[] } {
  const env = { ...process.env };
  if (flags.storage) env.STEVEDORE_STORAGE_PATH = flags.storage;
  const source = flags.config || env.STEVEDORE_CONFIG || 'embedded defaults';
  try {
    const config = loadConfig({ ...(flags.config ? { file: flags.config } : {}), env });
    return {
      config,
      results: [result('ok', 'config', source, `loaded and valid: ${config.upstreams.size} upstream(s), metadata ${config.metadata.redis ? 'redis' : 'in memory'}`)],
    };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return {
      config: null,
      results: [result('fail', 'config', source, `invalid configuration: ${err.problems.join('; ').replace(/\s*\n\s*/g, ' ')}`, 'fix the configuration file (every problem is listed)')],
    };
  }
}

async function treeSize(dir: string): Promise<number> {
  let total = 0;
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeSize(p);
    else if (e.isFile()) total += (await fsp.stat(p).catch(() => null))?.size ?? 0;
  }
  return total;
}

async function oldFiles(dir: string, cutoff: number): Promise<number> {
  let n = 0;
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await oldFiles(p, cutoff);
    else if (((await fsp.stat(p).catch(() => null))?.mtimeMs ?? Infinity) < cutoff) n++;
  }
  return n;
}

/** The store directory: creatable, writable, room for maxSize, leftovers. */
export async function checkStore(config: Config, now = Date.now()): Promise<CheckResult[]> {
  const paths = new StorePaths(config.storage.path);
  const target = paths.root;
  const out: CheckResult[] = [];
  try {
    await fsp.mkdir(paths.tmp, { recursive: true, mode: DIR_MODE });
  } catch (err) {
    out.push(result('fail', 'store', target, `cannot create ${paths.tmp}: ${errText(err)}`, 'create the directory, or point storage.path (or --storage) at a directory this user can write'));
    return out;
  }
  const probe = path.join(paths.tmp, `doctor-${randomBytes(6).toString('hex')}`);
  try {
    await fsp.writeFile(probe, 'stevedore doctor\n', { mode: FILE_MODE });
    await fsp.rm(probe, { force: true });
    out.push(result('ok', 'store', target, 'exists and is writable'));
  } catch (err) {
    await fsp.rm(probe, { force: true }).catch(() => undefined);
    out.push(result('fail', 'store', target, `cannot write under ${paths.tmp}: ${errText(err)}`, 'give the user running stevedore write access to storage.path'));
    return out;
  }
  try {
    const st = await fsp.statfs(target);
    const free = st.bavail * st.bsize;
    const cached = await treeSize(paths.blobs);
    const max = config.storage.maxSize;
    if (max === null) {
      out.push(result('info', 'store', target, `storage.maxSize is not set: the cache is unbounded (${formatBytes(free)} free, ${formatBytes(cached)} stored)`, 'set storage.maxSize to bound it'));
    } else if (max > free + cached) {
      out.push(
        result('fail', 'store', target, `storage.maxSize ${formatBytes(max)} is more than free space ${formatBytes(free)} + stored ${formatBytes(cached)}`, 'lower storage.maxSize or free disk space'),
      );
    } else if (max > 0.9 * (free + cached)) {
      out.push(result('warn', 'store', target, `storage.maxSize ${formatBytes(max)} leaves little headroom: ${formatBytes(free)} free + ${formatBytes(cached)} stored`, 'keep some disk space beyond storage.maxSize'));
    } else {
      out.push(result('ok', 'store', target, `storage.maxSize ${formatBytes(max)} fits: ${formatBytes(free)} free + ${formatBytes(cached)} stored`));
    }
  } catch (err) {
    out.push(result('warn', 'store', target, `cannot read the free space: ${errText(err)}`));
  }
  const staleTmp = await oldFiles(paths.tmp, now - TMP_LEFTOVER_AGE_MS);
  out.push(result('info', 'store', target, `${staleTmp} file(s) in tmp/ older than 1 h`, staleTmp ? 'left by crashed downloads: a restart of stevedore sweeps them' : null));
  let staleUploads = 0;
  const cutoff = now - config.registry.uploadMaxAge;
  for (const uuid of await fsp.readdir(paths.uploads).catch(() => [] as string[])) {
    const dir = path.join(paths.uploads, uuid);
    const info = await fsp.stat(path.join(dir, 'info.json')).catch(() => null);
    const last = info?.mtimeMs ?? (await fsp.stat(dir).catch(() => null))?.mtimeMs ?? 0;
    if (last <= cutoff) staleUploads++;
  }
  out.push(result('info', 'store', target, `${staleUploads} upload session(s) idle past registry.uploadMaxAge`, staleUploads ? 'stevedore gc --delete removes them' : null));
  // On the S3 backend the records are in the bucket, which doctor does not read: `ls --gone` does.
  if (config.storage.backend !== 'filesystem') return out;
  const gone = await goneRecords(path.join(paths.root, 'gone'));
  out.push(
    result(
      'info',
      'store',
      target,
      gone.count === 0
        ? 'no cached tag deleted upstream'
        : `${gone.count} cached tag(s) deleted upstream, kept and served from the store (pinned while gone)${gone.oldest !== null ? `, the oldest gone since ${new Date(gone.oldest).toISOString()}` : ''}`,
      gone.count ? 'stevedore ls --gone lists them; cache.gonePolicies (forget) drops them' : null,
    ),
  );
  return out;
}

/** The gone records (lib/cache/gone-tags.ts) under `dir`: how many, and the oldest `since`. */
async function goneRecords(dir: string): Promise<{ count: number; oldest: number | null }> {
  let count = 0;
  let oldest: number | null = null;
  const walk = async (d: string, inTags: boolean): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p, e.name === '_tags');
      else if (e.isFile() && inTags) {
        count++;
        const since = await fsp
          .readFile(p, 'utf8')
          .then((text) => (JSON.parse(text) as { since?: unknown }).since)
          .catch(() => undefined);
        if (typeof since === 'number' && Number.isFinite(since) && (oldest === null || since < oldest)) oldest = since;
      }
    }
  };
  await walk(dir, false);
  return { count, oldest };
}

/**
 * The configured cluster coordinator (Redis: metadata.redis), checked by its own `diagnose`
 * (lib/cluster/redis/diagnose.ts: PING with the configured credentials and TLS, a Redis that also
 * answers without a password, plain redis:// to another host).
 */
export async function checkRedis(config: Config): Promise<CheckResult[]> {
  const chosen = configuredCoordinator(config);
  if (!chosen) return [];
  return (await chosen.factory.diagnose(config)).map((f) => result(f.level, chosen.name, f.target, f.detail, f.fix));
}

function header(h: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function rateLimitNote(h: Dispatcher.ResponseData['headers']): string | null {
  const limit = header(h, 'ratelimit-limit');
  const remaining = header(h, 'ratelimit-remaining');
  if (!limit && !remaining) return null;
  return `rate limit: ${remaining ?? '?'} remaining of ${limit ?? '?'}`;
}

function tlsHandshake(host: string, port: number): Promise<{ subject: string; validTo: string; daysLeft: number; protocol: string }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timed out after ${NET_TIMEOUT_MS / 1000} s`));
    }, NET_TIMEOUT_MS);
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = sock.getPeerCertificate();
      const cn = cert.subject?.CN;
      const subject = Array.isArray(cn) ? cn.join(', ') : (cn ?? JSON.stringify(cert.subject ?? {}));
      const validTo = cert.valid_to ?? '?';
      const daysLeft = Math.floor((Date.parse(validTo) - Date.now()) / 86_400_000);
      const protocol = sock.getProtocol() ?? '?';
      sock.destroy();
      resolve({ subject, validTo, daysLeft, protocol });
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}

async function get(agent: Agent, url: string, headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number; headers: Dispatcher.ResponseData['headers']; body: string }> {
  const res = await request(url, { method, headers, dispatcher: agent, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  const body = method === 'HEAD' ? '' : (await res.body.text()).slice(0, 64 * 1024);
  if (method === 'HEAD') await res.body.dump();
  return { status: res.statusCode, headers: res.headers, body };
}

function basicAuth(u: UpstreamConfig): string | null {
  const c = u.credentials;
  return c ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : null;
}

/** One upstream: DNS, TCP, TLS, /v2/, and its authentication. */
export async function checkUpstream(
  u: UpstreamConfig,
  secrets: Set<string>,
  target = u.name,
  /** The resolver (a test gives one that fails without asking a DNS server). */
  lookup: (host: string, opts: { all: true }) => Promise<Array<{ address: string }>> = (host, opts) => dns.promises.lookup(host, opts),
): Promise<CheckResult[]> {
  const check = 'upstream';
  const out: CheckResult[] = [];
  if (u.offline) return [result('skip', check, target, 'offline: true, never contacted')];
  let url: URL;
  try {
    url = new URL(u.url);
  } catch {
    return [result('fail', check, target, `invalid url ${u.url}`, `fix upstreams.${u.name}.url`)];
  }
  const https = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || (https ? 443 : 80));
  if (!net.isIP(host)) {
    try {
      const addrs = await lookup(host, { all: true });
      out.push(result('ok', check, target, `DNS: ${host} resolves to ${addrs.map((a) => a.address).join(', ')}`));
    } catch (err) {
      out.push(result('fail', check, target, `DNS: cannot resolve ${host}: ${errText(err)}`, 'check the resolver (/etc/resolv.conf) and the host name in the url'));
      return out;
    }
  }
  try {
    const addr = await tcpConnect(host, port);
    out.push(result('ok', check, target, `TCP connect to ${host}:${port} (${addr})`));
  } catch (err) {
    const timedOut = err instanceof Error && /timed out/.test(err.message);
    out.push(
      result(
        'fail',
        check,
        target,
        `TCP connect to ${host}:${port} ${timedOut ? `timed out after ${NET_TIMEOUT_MS / 1000} s` : `failed: ${errText(err)}`}`,
        timedOut ? 'check the network path, a firewall or a proxy' : 'check the url (host and port) and that the registry is running',
      ),
    );
    return out;
  }
  if (https) {
    try {
      const c = await tlsHandshake(host, port);
      const level: Level = c.daysLeft < 14 ? 'warn' : 'ok';
      out.push(result(level, check, target, `TLS ${c.protocol}: certificate for ${c.subject}, valid until ${c.validTo} (${c.daysLeft} days)`, level === 'warn' ? 'the certificate expires soon' : null));
    } catch (err) {
      out.push(result('fail', check, target, `TLS handshake with ${host}:${port} failed: ${errText(err)}`, 'check the certificate chain (NODE_EXTRA_CA_CERTS for a private CA) and the host name'));
      return out;
    }
  }
  const agent = new Agent({ connect: { timeout: NET_TIMEOUT_MS }, headersTimeout: HTTP_TIMEOUT_MS, bodyTimeout: HTTP_TIMEOUT_MS });
  try {
    const base = url.origin;
    let ping;
    try {
      ping = await get(agent, `${base}/v2/`, {});
    } catch (err) {
      out.push(result('fail', check, target, `GET /v2/ failed: ${errText(err)}`, 'check the url: it must be the registry API origin'));
      return out;
    }
    const rl = rateLimitNote(ping.headers);
    if (rl) out.push(result('info', check, target, `/v2/ ${rl}`));
    if (ping.status === 200) {
      out.push(result('ok', check, target, '/v2/ answers 200 (no authentication asked)'));
      if (u.credentials) out.push(result('info', check, target, 'credentials configured but not asked for by /v2/'));
      return out;
    }
    if (ping.status !== 401) {
      out.push(result('fail', check, target, `/v2/ answers ${ping.status}, expected 200 or 401`, 'check the url: is it an OCI registry (not a web UI or a proxy)?'));
      return out;
    }
    const raw = header(ping.headers, 'www-authenticate');
    const challenge = parseWwwAuthenticate(raw);
    if (!challenge || (challenge.scheme !== 'bearer' && challenge.scheme !== 'basic')) {
      out.push(result('fail', check, target, `/v2/ answers 401 without a usable WWW-Authenticate (${raw ? `scheme ${challenge?.scheme ?? 'unparsable'}` : 'missing'})`, 'the registry must send a Bearer or Basic challenge'));
      return out;
    }
    if (challenge.scheme === 'basic') {
      out.push(result('ok', check, target, '/v2/ answers 401 with a Basic challenge'));
      const auth = basicAuth(u);
      if (!auth) {
        out.push(result('warn', check, target, 'Basic authentication is asked but no credentials are configured', `set upstreams.${u.name}.username and password`));
        return out;
      }
      const r = await get(agent, `${base}/v2/`, { authorization: auth });
      if (r.status === 200) out.push(result('ok', check, target, 'the configured credentials are accepted (Basic)'));
      else out.push(result('fail', check, target, `the configured credentials are refused: /v2/ answers ${r.status}`, `check upstreams.${u.name}.username and password`));
      return out;
    }
    out.push(result('ok', check, target, `/v2/ answers 401 with a Bearer challenge (realm ${challenge.params.realm ?? 'missing'})`));
    out.push(...(await checkToken(agent, u, base, challenge, secrets)));
    return out;
  } catch (err) {
    out.push(result('fail', check, target, `request failed: ${errText(err)}`, 'check the network path to the registry'));
    return out;
  } finally {
    await agent.close().catch(() => undefined);
  }
}

async function checkToken(agent: Agent, u: UpstreamConfig, base: string, challenge: Challenge, secrets: Set<string>): Promise<CheckResult[]> {
  const check = 'upstream';
  const target = u.name;
  const out: CheckResult[] = [];
  let realm: URL;
  try {
    realm = new URL(challenge.params.realm ?? '');
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new Error('not http(s)');
  } catch {
    return [result('fail', check, target, 'the Bearer challenge has no valid http(s) realm', 'the registry sends a broken challenge: nothing to fix here')];
  }
  const repo = 'library/alpine';
  const scope = `repository:${repo}:pull`;
  if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
  realm.searchParams.set('scope', scope);
  let auth = basicAuth(u);
  if (auth && !mayReceiveCredentials(realm, base)) {
    out.push(result('warn', check, target, `the token realm ${realm.origin} is neither https nor the upstream's origin: stevedore asks it anonymously`, 'serve the token realm over https'));
    auth = null;
  }
  const who = auth ? 'with the configured credentials' : 'anonymously';
  let r;
  try {
    r = await get(agent, realm.toString(), auth ? { authorization: auth } : {});
  } catch (err) {
    return [...out, result('fail', check, target, `token request to ${realm.origin}${realm.pathname} failed: ${errText(err)}`, 'check the network path to the token realm')];
  }
  const rl = rateLimitNote(r.headers);
  if (rl) out.push(result('info', check, target, `token service ${rl}`));
  if (r.status === 401 || r.status === 403) {
    out.push(
      result('fail', check, target, `token service ${realm.origin} refused ${who} (${r.status}) for ${scope}`, auth ? `check upstreams.${u.name}.username and password` : 'configure credentials for this upstream'),
    );
    return out;
  }
  if (r.status !== 200) {
    out.push(result('fail', check, target, `token service ${realm.origin} answered ${r.status} for ${scope}`, 'retry later, or check the token realm'));
    return out;
  }
  let token: string | null = null;
  try {
    const doc = JSON.parse(r.body) as { token?: unknown; access_token?: unknown };
    token = typeof doc.token === 'string' ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : null;
  } catch {
    // below
  }
  if (!token) {
    out.push(result('fail', check, target, `token service ${realm.origin} sent no token`, 'the token realm is not a Docker token service'));
    return out;
  }
  secrets.add(token);
  out.push(result('ok', check, target, `token issued ${auth ? 'to the configured credentials (authenticated)' : 'anonymously'} for ${scope}`));
  // Docker Hub reports the pull quota on manifest requests; a HEAD does not count against it.
  if (u.library) {
    try {
      const h = await get(agent, `${base}/v2/${repo}/manifests/latest`, { authorization: `Bearer ${token}`, accept: 'application/vnd.oci.image.index.v1+json' }, 'HEAD');
      const note = rateLimitNote(h.headers);
      if (note) out.push(result('info', check, target, `HEAD ${repo}:latest ${note}`));
    } catch {
      // optional
    }
  }
  return out;
}

/** Days left under which a certificate's expiry is a warning. */
const TLS_WARN_DAYS = 14;

/** The certificate and key of config `tls`: readable, PEM, a pair, in date. Nothing when `tls` is not set. */
export async function checkTls(config: Config, now = Date.now()): Promise<CheckResult[]> {
  if (!config.tls) return [];
  const target = config.tls.cert;
  let pair: TlsPair;
  try {
    pair = await readTlsPair(config.tls);
  } catch (err) {
    const errors = err instanceof AggregateError ? (err.errors as Error[]) : [err as Error];
    return errors.map((e) => result('fail', 'tls', target, e.message, 'fix the file (stevedore tls init makes a CA and a certificate), or set tls: null for plain HTTP'));
  }
  const { subject, subjectAltName, validFrom, validTo } = pair.info;
  const daysLeft = Math.floor((Date.parse(validTo) - now) / 86_400_000);
  const what = `certificate for ${subject} (${subjectAltName ?? 'no subjectAltName'}), valid until ${validTo}`;
  if (Date.parse(validTo) < now) return [result('fail', 'tls', target, `${what}: expired`, 'renew the certificate: clients refuse it')];
  if (Date.parse(validFrom) > now) return [result('fail', 'tls', target, `${what}: not valid before ${validFrom}`, "check this machine's clock, or the certificate's dates")];
  if (!subjectAltName) return [result('warn', 'tls', target, what, 'clients match names against subjectAltName only: add the names and addresses they use')];
  if (daysLeft < TLS_WARN_DAYS) return [result('warn', 'tls', target, `${what} (${daysLeft} days)`, 'the certificate expires soon: renew it (stevedore reloads the files without a restart)')];
  return [result('ok', 'tls', target, `${what} (${daysLeft} days); the key matches`)];
}

/** What each credential source is called in a fix. */
const CREDENTIAL_FIX: Record<CredentialSource['type'], string> = {
  basic: 'check that the password file exists, is readable by stevedore and is not empty',
  helper: 'check that the helper is on PATH and answers `docker-credential-<name> get` for this registry',
  ecr: 'check the AWS credentials (env, web identity, instance profile), the region and the endpoint',
  gcp: 'check the key or token file, or that the metadata server answers (workload identity on GKE)',
  acr: 'check the AAD access token (its file, or value) and that the registry accepts it at /oauth2/exchange',
};

/** ACR's identity tokens go to its token service as Basic with this user (as Docker sends them). */
const IDENTITY_TOKEN_USER = '00000000-0000-0000-0000-000000000000';

/**
 * A credential source (file, helper, cloud): asked once. Its failure is a FAIL naming the upstream
 * and the cause; what it gives is added to the secrets (never printed) and used by the checks after.
 */
export async function checkCredentials(
  spec: CredentialSource,
  url: string,
  target: string,
  key: string,
  secrets: Set<string>,
): Promise<{ results: CheckResult[]; credentials: { username: string; password: string } | null }> {
  const provider = credentialProvider(spec, url);
  try {
    const c = await provider.get();
    const password = c.kind === 'basic' ? c.password : c.refreshToken;
    secrets.add(password);
    return {
      results: [result('ok', 'credentials', target, `${provider.description} gives credentials${c.kind === 'basic' ? ` for user ${c.username}` : ' (an identity token)'}`)],
      credentials: c.kind === 'basic' ? { username: c.username, password: c.password } : { username: IDENTITY_TOKEN_USER, password },
    };
  } catch (err) {
    const cause = err instanceof CredentialError ? err.message : errText(err);
    // The cause names its source (the file, the helper, ECR, the metadata server, the exchange).
    return { results: [result('fail', 'credentials', target, cause, `${CREDENTIAL_FIX[spec.type]} (${key})`)], credentials: null };
  }
}

/** Every check, in order; stops after a bad configuration. */
export async function runChecks(flags: ConfigFlags): Promise<{ results: CheckResult[]; secrets: Set<string> }> {
  const secrets = new Set<string>();
  const { config, results } = checkConfig(flags);
  if (!config) return { results, secrets };
  for (const u of config.upstreams.values()) {
    if (u.credentials) secrets.add(u.credentials.password);
    for (const src of u.sources) {
      if (src.kind !== 'url') continue;
      if (src.credentials) secrets.add(src.credentials.password);
      if (src.credentialSource?.type === 'acr' && src.credentialSource.token) secrets.add(src.credentialSource.token);
    }
  }
  if (config.node.peers) secrets.add(config.node.peers.token);
  if (config.metadata.redis) {
    try {
      const p = new URL(config.metadata.redis).password;
      if (p) secrets.add(decodeURIComponent(p));
    } catch {
      // unparsable: redactUrl hides it
    }
    if (config.metadata.password) secrets.add(config.metadata.password);
    if (config.metadata.passwordFile) {
      try {
        const p = readFileSync(config.metadata.passwordFile, 'utf8').replace(/[\r\n]+$/, '');
        if (p) secrets.add(p);
      } catch {
        // unreadable: the Redis check says so
      }
    }
  }
  results.push(...(await checkTls(config)));
  results.push(...(await checkStore(config)));
  results.push(...(await checkRedis(config)));
  for (const u of config.upstreams.values()) {
    const urls = u.sources.filter((src) => src.kind === 'url');
    // Several sources: each is checked as the upstream would be asked through it.
    for (const src of urls) {
      const target = urls.length <= 1 ? u.name : `${u.name} (source ${src.name})`;
      let credentials = src.credentials;
      if (src.credentialSource && !u.offline) {
        const key = urls.length <= 1 ? `upstreams.${u.name}` : `upstreams.${u.name}.sources.${u.sources.indexOf(src)}`;
        const got = await checkCredentials(src.credentialSource, src.url, target, key, secrets);
        results.push(...got.results);
        if (!got.credentials) continue;
        credentials = got.credentials;
      }
      results.push(...(await checkUpstream({ ...u, url: src.url, credentials }, secrets, target)));
    }
  }
  return { results, secrets };
}

export function redact(s: string, secrets: Set<string>): string {
  let out = s;
  for (const secret of secrets) if (secret.length >= 3) out = out.split(secret).join('***');
  return out;
}

const LABEL: Record<Level, string> = { ok: 'ok', warn: 'WARN', info: 'info', skip: 'skip', fail: 'FAIL' };

export function formatResults(results: CheckResult[], json: boolean, secrets: Set<string>): string {
  if (json) {
    const doc = results.map((r) => ({ check: r.check, target: r.target, ok: r.ok, level: r.level, detail: redact(r.detail, secrets), fix: r.fix === null ? null : redact(r.fix, secrets) }));
    return `${JSON.stringify(doc, null, 2)}\n`;
  }
  return results
    .map((r) => `${LABEL[r.level].padEnd(6)}${r.check} ${redact(r.target, secrets)}: ${redact(r.detail, secrets)}${r.fix ? ` — ${redact(r.fix, secrets)}` : ''}\n`)
    .join('');
}

/** The command: prints the results; exit code 1 when any check failed. */
export async function runDoctor(flags: ConfigFlags & { json?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { results, secrets } = await runChecks(flags);
  out.write(formatResults(results, !!flags.json, secrets));
  return results.some((r) => !r.ok) ? 1 : 0;
}
