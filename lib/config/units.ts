/** Human durations (`30s`, `5m`, `7d`, `250ms`) and sizes (`4MiB`, `50GiB`, `1.5GB`), parsed once at start-up. */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1000,
  kb: 1000,
  ki: 1024,
  kib: 1024,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Milliseconds, or null when the text is not a duration. A bare number is seconds. */
import { isIP } from 'node:net';
export function parseDuration(input: string | number): number | null {
  if (typeof input === 'number') {
    // Whole milliseconds within safe integers, as for text: `ttl: 1e20` is refused like "100000000000000000000".
    if (!Number.isFinite(input) || input < 0) return null;
    const ms = Math.round(input * 1000);
    return Number.isSafeInteger(ms) ? ms : null;
  }
  const parts = input.trim().toLowerCase().match(/(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)/g);
  if (!parts || parts.join('').replace(/\s/g, '') !== input.trim().toLowerCase().replace(/\s/g, '')) {
    const bare = /^\d+(?:\.\d+)?$/.test(input.trim()) ? Number(input.trim()) * 1000 : NaN;
    return Number.isSafeInteger(Math.round(bare)) ? Math.round(bare) : null;
  }
  let total = 0;
  for (const p of parts) {
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/.exec(p)!;
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  }
  const ms = Math.round(total);
  return Number.isSafeInteger(ms) ? ms : null;
}

/** Bytes, or null when the text is not a size. A bare number is bytes. */
export function parseSize(input: string | number): number | null {
  if (typeof input === 'number') return Number.isSafeInteger(input) && input >= 0 ? input : null;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(input.trim());
  if (!m) return null;
  const unit = m[2]!.toLowerCase() || 'b';
  const mult = SIZE_UNITS[unit];
  if (mult === undefined) return null;
  const bytes = Number(m[1]) * mult;
  // Bytes are whole: "1.5" (bytes) is not a size; "1.5KiB" is 1536.
  if (unit === 'b' && !Number.isInteger(bytes)) return null;
  const rounded = Math.round(bytes);
  return Number.isSafeInteger(rounded) ? rounded : null;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)}${units[i]}`;
}

/** Parses `a.b.c.d/n` or `v6::/n` (a CIDR block); null when it is not one. */
export function parseCidr(text: string): { address: string; prefix: number; type: 'ipv4' | 'ipv6' } | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return null;
  const family = isIP(m[1]!);
  const prefix = Number(m[2]);
  if (family === 0 || prefix > (family === 4 ? 32 : 128)) return null;
  return { address: m[1]!, prefix, type: family === 4 ? 'ipv4' : 'ipv6' };
}
