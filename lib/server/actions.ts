/**
 * What each request does, in one place: `pull`, `push` or `delete` on a repository (or `none`
 * for the probes and the base endpoint). Route handlers call nothing auth-related; an access-rule
 * module plugs in where `actionFor` is called (lib/server/create-server.ts, `route`), with the
 * repository name resolved right after. A mount (`POST .../uploads/?mount=&from=`) is a `push` to
 * the target that also reads `from`: an access check should require `pull` on `from` too (see
 * `mountSource`).
 */
import type { Route } from './route.js';

export type Action = 'none' | 'pull' | 'push' | 'delete';

type Methods = Readonly<Partial<Record<string, Action>>>;

const PROBE: Methods = { GET: 'none', HEAD: 'none' };
const READ: Methods = { GET: 'pull', HEAD: 'pull' };

function methods(route: Route): Methods {
  switch (route.kind) {
    case 'base':
    case 'healthz':
    case 'readyz':
      return PROBE;
    case 'catalog':
      return READ;
    case 'manifest':
      return { GET: 'pull', HEAD: 'pull', PUT: 'push', DELETE: 'delete' };
    case 'blob':
      return { GET: 'pull', HEAD: 'pull', DELETE: 'delete' };
    case 'upload':
      // A session is opened by POST on the collection, then driven through its own URL.
      return route.session === undefined ? { POST: 'push' } : { GET: 'push', PATCH: 'push', PUT: 'push', DELETE: 'push' };
    case 'tags':
    case 'referrers':
      return READ;
  }
}

/** The action `method` performs on `route`; null when the route does not support that method (405). */
export function actionFor(route: Route, method: string | undefined): Action | null {
  return methods(route)[method ?? ''] ?? null;
}

/** The methods `route` supports, for the `Allow` header of a 405. */
export function allowedMethods(route: Route, exclude: readonly Action[] = []): string {
  return Object.entries(methods(route))
    .filter(([, a]) => a !== undefined && !exclude.includes(a))
    .map(([m]) => m)
    .join(', ');
}

/** The repository a mount reads from (`from`), which needs `pull` as well as `push` on the target. */
export function mountSource(route: Route, method: string | undefined, query: URLSearchParams): string | null {
  if (route.kind !== 'upload' || route.session !== undefined || method !== 'POST') return null;
  return query.get('mount') !== null ? query.get('from') : null;
}
