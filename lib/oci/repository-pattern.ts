/**
 * Repository-name patterns, shared by access rules, tag TTL tiers and upstream allow / deny lists:
 * name components separated by "/"; `*` matches any characters within one component; a component
 * `**` matches any number of components, none included (`lab/**` matches `lab`, `lab/a`, `lab/a/b`;
 * `**` matches everything). Pure: no I/O.
 */
export function compilePattern(pattern: string): RegExp {
  // Consecutive "**" parts are one ("a/**/**" is "a/**"): compiled apart, each would demand its own "/".
  const parts = pattern.split('/').filter((part, i, all) => !(part === '**' && all[i - 1] === '**'));
  let re = '';
  parts.forEach((part, i) => {
    const last = i === parts.length - 1;
    if (part === '**') {
      // Any number of whole components: "a/**/b" matches a/b, a/x/b, a/x/y/b; a trailing ** also "a".
      re += last ? (i === 0 ? '.*' : '(?:/.*)?') : i === 0 ? '(?:[^/]+/)*' : '(?:/[^/]+)*/';
      return;
    }
    const body = part
      .split('*')
      .map((s) => s.replace(/[.\\+?^${}()|[\]]/g, '\\$&'))
      .join('[^/]*');
    const prevDouble = i > 0 && parts[i - 1] === '**';
    re += (i === 0 || prevDouble ? '' : '/') + body;
  });
  return new RegExp(`^${re}$`);
}
