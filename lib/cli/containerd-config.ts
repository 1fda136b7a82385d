/**
 * containerd registry host configuration (`hosts.toml`, containerd ≥ 1.5 `config_path`): one
 * directory per registry, each pointing at one or more stevedore mirrors with pull and resolve
 * capabilities, falling back to the registry itself.
 *
 * containerd tries the `[host."..."]` sections in the order they are written, then `server`. With
 * `--client-cert`/`--client-key` each host gets `client = [["cert", "key"]]`: containerd presents
 * that certificate to the mirror, and stevedore (tls.clientCA) names the node by it. With two mirrors (a node-local stevedore, then the central one) the first is asked first; when it is
 * unreachable containerd moves on to the second.
 *
 * What differs between containerd majors is only where config.toml names the directory (the CRI
 * plugin's `registry.config_path`), see `configTomlSnippet`; the hosts.toml format is the same. For
 * containerd 2.x the command also writes `_default/hosts.toml`, which containerd reads for a registry
 * that has no directory of its own (containerd 1.6.17+, 1.7 and 2.x look it up last).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** Where containerd falls back when the mirror fails: the registry's own API endpoint. */
export function defaultServer(registry: string): string {
  return registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registry}`;
}

export interface HostsTomlOptions {
  /** Fallback `server`; default: the registry's own endpoint. */
  server?: string;
  /** Skip TLS verification of an https mirror with a private CA. Never together with `ca`. */
  skipVerify?: boolean;
  /** CA certificate file (an absolute path on the node) that signed an https mirror's certificate. */
  ca?: string;
  /**
   * A client certificate and its key (absolute paths on the node) that containerd presents to an
   * https mirror: `client = [["cert", "key"]]` under each host (stevedore's tls.clientCA names the
   * node by it). Both or neither.
   */
  clientCert?: string;
  clientKey?: string;
}

/** The containerd majors whose config.toml `containerd-config` knows. */
export type ContainerdVersion = 1 | 2;

/** The `--containerd-version` value as a major, or an error naming what is accepted. */
export function parseContainerdVersion(value: string): ContainerdVersion {
  if (value === '1') return 1;
  if (value === '2') return 2;
  throw new Error(`--containerd-version must be 1 (containerd 1.6 / 1.7) or 2 (containerd 2.x), got ${value}`);
}

/** Refuses option combinations containerd would accept but that make no sense (or hide a mistake). */
function checkTlsOptions(opts: HostsTomlOptions): void {
  if (opts.ca !== undefined && opts.skipVerify) throw new Error('--ca and --skip-verify exclude each other: with a CA the mirror is verified');
  if (opts.ca !== undefined && !path.isAbsolute(opts.ca)) {
    // containerd reads a relative path relative to each hosts.toml, a different place per registry.
    throw new Error(`--ca must be an absolute path (as containerd on the node reads it), got ${opts.ca}`);
  }
  if ((opts.clientCert === undefined) !== (opts.clientKey === undefined)) {
    throw new Error('--client-cert and --client-key go together (a client certificate and its key)');
  }
  for (const [flag, file] of [['--client-cert', opts.clientCert], ['--client-key', opts.clientKey]] as const) {
    if (file !== undefined && !path.isAbsolute(file)) throw new Error(`${flag} must be an absolute path (as containerd on the node reads it), got ${file}`);
  }
}

/** A client certificate is presented over TLS only: with one, at least one mirror is https. */
function checkClientOnHttps(hosts: readonly string[], opts: HostsTomlOptions): void {
  if (opts.clientCert === undefined || hosts.some((h) => h.startsWith('https:'))) return;
  throw new Error(`--client-cert is presented over TLS only, and every --mirror is plain http (${hosts.join(', ')}): give an https mirror`);
}

/** The `[host."..."]` sections, one per mirror, in the order given. */
function hostSections(hosts: readonly string[], opts: HostsTomlOptions): string[] {
  const lines: string[] = [];
  for (const host of hosts) {
    lines.push('', `[host.${tomlString(host)}]`, '  capabilities = ["pull", "resolve"]');
    if (opts.ca !== undefined) lines.push(`  ca = ${tomlString(opts.ca)}`);
    if (opts.clientCert !== undefined && opts.clientKey !== undefined) lines.push(`  client = [[${tomlString(opts.clientCert)}, ${tomlString(opts.clientKey)}]]`);
    if (opts.skipVerify) lines.push('  skip_verify = true');
  }
  return lines;
}

function tomlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid TOML basic string
}

/**
 * The `hosts.toml` for one registry: each mirror (an origin, as `mirrorOrigins` returns them) in
 * the order given, then the registry as `server`.
 */
export function renderHostsToml(registry: string, mirrors: string | readonly string[], opts: HostsTomlOptions = {}): string {
  checkTlsOptions(opts);
  const hosts = typeof mirrors === 'string' ? [mirrors] : mirrors;
  checkClientOnHttps(hosts, opts);
  const lines = [
    hosts.length > 1
      ? `# containerd hosts.toml for ${registry}: pull through stevedore (each host below in turn), fall back to the registry.`
      : `# containerd hosts.toml for ${registry}: pull through stevedore, fall back to the registry.`,
    `# Written by \`stevedore containerd-config\`.`,
    `server = ${tomlString(opts.server ?? defaultServer(registry))}`,
    ...hostSections(hosts, opts),
  ];
  return `${lines.join('\n')}\n`;
}

/** The directory containerd reads for a registry that has none of its own. */
export const DEFAULT_HOST_DIR = '_default';

/**
 * `_default/hosts.toml`: every registry without its own directory is pulled through the mirrors, then
 * from the registry itself. There is no `server` line: containerd then falls back to the image's own
 * registry. stevedore answers 404 for a registry it has no upstream for, and containerd moves on.
 */
export function renderDefaultHostsToml(mirrors: string | readonly string[], opts: Omit<HostsTomlOptions, 'server'> = {}): string {
  checkTlsOptions(opts);
  const hosts = typeof mirrors === 'string' ? [mirrors] : mirrors;
  checkClientOnHttps(hosts, opts);
  const lines = [
    '# containerd hosts.toml for every registry without a directory of its own: pull through stevedore,',
    '# then from the registry itself (no `server`: containerd falls back to the image\'s registry).',
    `# Written by \`stevedore containerd-config\`.`,
    ...hostSections(hosts, opts),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * The config.toml lines that point containerd's CRI plugin (the kubelet's pull path) at `dir`.
 * containerd 1.6 / 1.7 (config version 2): `[plugins."io.containerd.grpc.v1.cri".registry]`;
 * containerd 2.x (config version 3): `[plugins."io.containerd.cri.v1.images".registry]`.
 */
export function configTomlSnippet(version: ContainerdVersion, dir: string): string {
  const lines =
    version === 1
      ? [
          '# Add to /etc/containerd/config.toml (containerd 1.6 / 1.7, a config with `version = 2`), then restart containerd:',
          '[plugins."io.containerd.grpc.v1.cri".registry]',
          `  config_path = ${tomlString(dir)}`,
        ]
      : [
          '# Add to /etc/containerd/config.toml (containerd 2.x, a config with `version = 3`), then restart containerd.',
          '# One directory only: containerd 2.1+ pulls through its transfer service, which does not split a',
          '# "dir1:dir2" list.',
          '[plugins."io.containerd.cri.v1.images".registry]',
          `  config_path = ${tomlString(dir)}`,
        ];
  return `${lines.join('\n')}\n`;
}

/**
 * Each `--mirror` as an origin (`http(s)://HOST[:PORT]`), order kept. Throws on the first that is
 * not one, naming it and its place, and on a repeated one (a TOML file may not define a table twice).
 */
export function mirrorOrigins(mirrors: readonly string[]): string[] {
  if (mirrors.length === 0) throw new Error('at least one --mirror is needed');
  const origins: string[] = [];
  mirrors.forEach((mirror, i) => {
    const which = mirrors.length > 1 ? ` (--mirror ${i + 1} of ${mirrors.length})` : '';
    let url: URL | null = null;
    try {
      url = new URL(mirror);
    } catch {
      // not a URL at all: the same message as a URL of the wrong kind
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search) {
      throw new Error(`--mirror must be http(s)://HOST[:PORT] with no path, got ${mirror}${which}`);
    }
    if (origins.includes(url.origin)) throw new Error(`--mirror ${url.origin} is given twice${which}`);
    origins.push(url.origin);
  });
  return origins;
}

/**
 * Writes `<dir>/<registry>/hosts.toml` for each registry, naming the mirrors in the order given, and
 * `<dir>/_default/hosts.toml` last when `includeDefault` is set; returns the files written. Every
 * mirror, registry and option is checked before anything is written.
 */
export async function writeHostsTomls(
  dir: string,
  registries: string[],
  mirrors: string | readonly string[],
  opts: HostsTomlOptions & { serverFor?: (registry: string) => string; includeDefault?: boolean } = {},
): Promise<string[]> {
  const origins = mirrorOrigins(typeof mirrors === 'string' ? [mirrors] : mirrors);
  const tls: HostsTomlOptions = {
    ...(opts.skipVerify ? { skipVerify: true } : {}),
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    ...(opts.clientCert !== undefined ? { clientCert: opts.clientCert } : {}),
    ...(opts.clientKey !== undefined ? { clientKey: opts.clientKey } : {}),
  };
  const files: Array<{ file: string; text: string }> = [];
  for (const registry of registries) {
    if (!/^[a-z0-9.-]+(?::\d{1,5})?$/.test(registry)) throw new Error(`not a registry host name: ${registry}`);
    const server = opts.serverFor?.(registry) ?? opts.server;
    files.push({ file: path.join(dir, registry, 'hosts.toml'), text: renderHostsToml(registry, origins, { ...(server ? { server } : {}), ...tls }) });
  }
  if (opts.includeDefault) files.push({ file: path.join(dir, DEFAULT_HOST_DIR, 'hosts.toml'), text: renderDefaultHostsToml(origins, tls) });
  const written: string[] = [];
  for (const { file, text } of files) {
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, text);
    written.push(file);
  }
  return written;
}
