/**
 * containerd registry host configuration (`hosts.toml`, containerd ≥ 1.5 `config_path`): one
 * directory per registry, each pointing at the stevedore mirror with pull and resolve
 * capabilities, falling back to the registry itself.
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

export function renderHostsToml(registry: string, mirror: string, opts: HostsTomlOptions = {}): string {
  const lines = [
    `# containerd hosts.toml for ${registry}: pull through stevedore, fall back to the registry.`,
    `# Written by \`stevedore containerd-config\`.`,
    `server = ${tomlString(opts.server ?? defaultServer(registry))}`,
    '',
    `[host.${tomlString(mirror)}]`,
    '  capabilities = ["pull", "resolve"]',
  ];
  if (opts.skipVerify) lines.push('  skip_verify = true');
  return `${lines.join('\n')}\n`;
}

/** Writes `<dir>/<registry>/hosts.toml` for each registry; returns the files written. */
export async function writeHostsTomls(
  dir: string,
  registries: string[],
  mirror: string,
  opts: HostsTomlOptions & { serverFor?: (registry: string) => string } = {},
): Promise<string[]> {
  const url = new URL(mirror);
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search) {
    throw new Error(`--mirror must be http(s)://HOST[:PORT] with no path, got ${mirror}`);
  }
  const written: string[] = [];
  for (const registry of registries) {
    if (!/^[a-z0-9.-]+(?::\d{1,5})?$/.test(registry)) throw new Error(`not a registry host name: ${registry}`);
    const file = path.join(dir, registry, 'hosts.toml');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const server = opts.serverFor?.(registry) ?? opts.server;
    await fsp.writeFile(file, renderHostsToml(registry, url.origin, { ...(server ? { server } : {}), ...(opts.skipVerify ? { skipVerify: true } : {}) }));
    written.push(file);
  }
  return written;
}
