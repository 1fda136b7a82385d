/**
 * containerd registry host configuration (`hosts.toml`, containerd ≥ 1.5 `config_path`): one
 * directory per registry, each pointing at one or more stevedore mirrors with pull and resolve
 * capabilities, falling back to the registry itself.
 *
 * containerd tries the `[host."..."]` sections in the order they are written, then `server`. With
 * two mirrors (a node-local stevedore, then the central one) the first is asked first; when it is
 * unreachable containerd moves on to the second.
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
  /** Skip TLS verification of an https mirror with a private CA. */
  skipVerify?: boolean;
}

function tomlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid TOML basic string
}

/**
 * The `hosts.toml` for one registry: each mirror (an origin, as `mirrorOrigins` returns them) in
 * the order given, then the registry as `server`.
 */
export function renderHostsToml(registry: string, mirrors: string | readonly string[], opts: HostsTomlOptions = {}): string {
  const hosts = typeof mirrors === 'string' ? [mirrors] : mirrors;
  const lines = [
    hosts.length > 1
      ? `# containerd hosts.toml for ${registry}: pull through stevedore (each host below in turn), fall back to the registry.`
      : `# containerd hosts.toml for ${registry}: pull through stevedore, fall back to the registry.`,
    `# Written by \`stevedore containerd-config\`.`,
    `server = ${tomlString(opts.server ?? defaultServer(registry))}`,
  ];
  for (const host of hosts) {
    lines.push('', `[host.${tomlString(host)}]`, '  capabilities = ["pull", "resolve"]');
    if (opts.skipVerify) lines.push('  skip_verify = true');
  }
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
 * Writes `<dir>/<registry>/hosts.toml` for each registry, naming the mirrors in the order given;
 * returns the files written. Every mirror is checked before anything is written.
 */
export async function writeHostsTomls(
  dir: string,
  registries: string[],
  mirrors: string | readonly string[],
  opts: HostsTomlOptions & { serverFor?: (registry: string) => string } = {},
): Promise<string[]> {
  const origins = mirrorOrigins(typeof mirrors === 'string' ? [mirrors] : mirrors);
  const written: string[] = [];
  for (const registry of registries) {
    if (!/^[a-z0-9.-]+(?::\d{1,5})?$/.test(registry)) throw new Error(`not a registry host name: ${registry}`);
    const file = path.join(dir, registry, 'hosts.toml');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const server = opts.serverFor?.(registry) ?? opts.server;
    await fsp.writeFile(file, renderHostsToml(registry, origins, { ...(server ? { server } : {}), ...(opts.skipVerify ? { skipVerify: true } : {}) }));
    written.push(file);
  }
  return written;
}
