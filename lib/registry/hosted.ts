/**
 * Which repository names are hosted here (config `registry.hosted`): glob patterns over names,
 * `*` standing for one name component and `**` for any number of them (at least one).
 *
 *   lab/*      lab/app            not lab/a/b, not lab
 *   team/**    team/a, team/a/b   not team
 *   **         every name
 */
export class HostedNames {
  private readonly res: RegExp[];

  constructor(patterns: readonly string[]) {
    this.res = patterns.map(compile);
  }

  has(name: string): boolean {
    return this.res.some((re) => re.test(name));
  }
}

function compile(pattern: string): RegExp {
  const parts = pattern.split('/').map((c) => {
    if (c === '**') return '[^/]+(?:/[^/]+)*';
    if (c === '*') return '[^/]+';
    return c.replace(/[.]/g, '\\.');
  });
  return new RegExp(`^${parts.join('/')}$`);
}
