/** Parses `WWW-Authenticate` challenges: `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`. */

export interface Challenge {
  scheme: string; // lower-case
  params: Record<string, string>;
}

export function parseWwwAuthenticate(header: string | undefined): Challenge | null {
  if (!header) return null;
  const m = /^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$/s.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  // Empty list elements (`a=1, ,b=2`) are skipped, as RFC 9110 §5.6.1.2 asks of recipients.
  const re = /([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,\s*)*/gy;
  const rest = m[2]!;
  re.lastIndex = 0;
  let p: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (p = re.exec(rest))) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: m[1]!.toLowerCase(), params };
}
