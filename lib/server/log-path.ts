/**
 * The request path as the access log writes it: whole up to LOGGED_PATH_MAX characters; a longer
 * one (a client can send ~16 KB of path) is cut there and marked, with its full length.
 */
export const LOGGED_PATH_MAX = 512;

export function loggedPath(url: string | undefined): string | undefined {
  if (url === undefined || url.length <= LOGGED_PATH_MAX) return url;
  return `${url.slice(0, LOGGED_PATH_MAX)}…[truncated, ${url.length} chars]`;
}
