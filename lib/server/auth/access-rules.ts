/**
 * Who may do what where: the configured rules, evaluated for one subject (an htpasswd user, or
 * null for a client without credentials) and one repository. Rules only grant, and grants add up;
 * what no rule grants is refused. `anonymousPull` is a rule granting pull on `**` to anonymous.
 *
 * Repository names are canonical: proxied repositories are `<upstream>/<name>`
 * (`docker.io/library/alpine`, whichever way the client addressed them), hosted ones their name.
 *
 * A rule marked `hostedOnly` (the default push grants, auth-schema.ts) never applies to a proxied
 * repository, whatever its pattern matches.
 *
 * Patterns: name components separated by "/"; `*` matches any characters within one component;
 * a component `**` matches any number of components, none included (`lab/**` matches `lab/a`,
 * `lab/a/b`; `**` matches everything).
 */
import { ACTIONS, ANONYMOUS, ANY_USER, type AccessRule, type Action } from '../../config/auth-schema.js';
import { compilePattern } from '../../oci/repository-pattern.js';

export { ACTIONS, type Action };
export { compilePattern };

interface CompiledRule {
  pattern: RegExp;
  hostedOnly: boolean;
  anyUser: boolean;
  anonymous: boolean;
  users: ReadonlySet<string>;
  groups: readonly string[];
  actions: readonly Action[];
}

export class AccessRules {
  private readonly rules: CompiledRule[];
  private readonly groupsOf = new Map<string, Set<string>>();

  private readonly upstreams: ReadonlySet<string>;

  /** `upstreams`: the configured upstreams' names, the first component of every proxied repository's canonical name. */
  constructor(opts: { rules: readonly AccessRule[]; groups: Readonly<Record<string, readonly string[]>>; anonymousPull: boolean; upstreams: readonly string[] }) {
    this.upstreams = new Set(opts.upstreams);
    for (const [group, members] of Object.entries(opts.groups)) {
      for (const m of members) {
        let set = this.groupsOf.get(m);
        if (!set) this.groupsOf.set(m, (set = new Set()));
        set.add(group);
      }
    }
    this.rules = opts.rules.map((r) => ({
      pattern: compilePattern(r.repository),
      hostedOnly: r.hostedOnly === true,
      anyUser: r.users.includes(ANY_USER),
      anonymous: r.users.includes(ANONYMOUS),
      users: new Set(r.users.filter((u) => u !== ANY_USER && u !== ANONYMOUS)),
      groups: r.groups,
      actions: r.actions,
    }));
    if (opts.anonymousPull) this.rules.unshift({ pattern: /^/, hostedOnly: false, anyUser: false, anonymous: true, users: new Set(), groups: [], actions: ['pull'] });
  }

  /** The actions `subject` (null: anonymous) may take on `repository`. */
  allowed(subject: string | null, repository: string): Set<Action> {
    const out = new Set<Action>();
    const groups = subject === null ? undefined : this.groupsOf.get(subject);
    const proxied = this.isProxied(repository);
    for (const r of this.rules) {
      const applies =
        subject === null ? r.anonymous : r.anyUser || r.users.has(subject) || (groups !== undefined && r.groups.some((g) => groups.has(g)));
      if (!applies || (r.hostedOnly && proxied) || !r.pattern.test(repository)) continue;
      for (const a of r.actions) out.add(a);
      if (out.size === ACTIONS.length) break;
    }
    return out;
  }

  /** A canonical name of a proxied repository: `<upstream>/<name>` (a hosted name never starts with an upstream's, config.ts). */
  private isProxied(repository: string): boolean {
    const slash = repository.indexOf('/');
    return slash !== -1 && this.upstreams.has(repository.slice(0, slash));
  }

  /** True when anonymous clients may pull everything (then nothing needs a login to read). */
  anonymousPullsEverything(): boolean {
    return this.rules.some((r) => r.anonymous && r.actions.includes('pull') && r.pattern.test('') && r.pattern.test('any/thing/at/all'));
  }
}
