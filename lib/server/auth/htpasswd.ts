/**
 * The users: an Apache-style htpasswd file of bcrypt hashes (`user:$2y$10$...`, one per line, `#`
 * comments), as `htpasswd -B` writes it. Other hash kinds (MD5 `$apr1$`, SHA1, crypt, plain text)
 * are refused line by line. The file is re-read when it changes (size, mtime or inode differ; checked
 * at most every `checkIntervalMs`), so users are added or removed without a restart; a file that
 * becomes unreadable keeps the last users loaded (and says so in the log).
 *
 * bcrypt is slow on purpose, so it runs in worker threads (bcrypt-pool.ts), never on the event loop.
 * Checking a password:
 *
 *   remembered   a successful check is remembered for a while under an HMAC of the credentials
 *                (never the password itself) while the user's hash is unchanged: Basic auth on every
 *                request does not cost a bcrypt round each time
 *   coalesced    the same credentials already being checked: wait for that check, no second round
 *   otherwise    `gate.admit()` is asked first (the login throttle counts the guess there, and may
 *                refuse it), then one bcrypt round in the pool
 *
 * An unknown user costs the same bcrypt round as a wrong password: it is compared against a dummy
 * hash of the cost most of the file's hashes have, so a user name's existence does not show in
 * the time an answer takes.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { ANONYMOUS, ANY_USER } from '../../config/auth-schema.js';
import { ConfigError } from '../../config/config.js';
import { BcryptPool } from './bcrypt-pool.js';

const BCRYPT_RE = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

export interface HtpasswdContent {
  /** user → bcrypt hash */
  users: Map<string, string>;
  /** One line per refused line: its number and why (never the hash). */
  problems: string[];
}

/** Pure parser: keeps every valid bcrypt line, reports the others. A repeated user: the last line wins. */
export function parseHtpasswd(text: string): HtpasswdContent {
  const users = new Map<string, string>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const n = i + 1;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      problems.push(`line ${n}: not user:hash`);
      return;
    }
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (/\s/.test(user)) {
      problems.push(`line ${n}: user name has spaces`);
      return;
    }
    if (user === ANONYMOUS || user === ANY_USER) {
      problems.push(`line ${n}: ${JSON.stringify(user)} is reserved in access rules and cannot be a user`);
      return;
    }
    if (!BCRYPT_RE.test(hash)) {
      const kind = hash.startsWith('$apr1$') ? 'MD5 ($apr1$)' : hash.startsWith('{SHA}') ? 'SHA1' : hash.startsWith('$') ? 'an unsupported hash' : 'not a bcrypt hash';
      problems.push(`line ${n} (user ${user}): ${kind}; only bcrypt ($2y$, $2a$, $2b$) is accepted (htpasswd -B)`);
      return;
    }
    if (users.has(user)) problems.push(`line ${n}: user ${user} appears again; this line wins`);
    users.set(user, hash);
  });
  return { users, problems };
}

export type VerifyResult = 'ok' | 'unknown-user' | 'bad-password';

export interface Checked {
  result: VerifyResult;
  /** The hash the password matched ('ok'), else null. */
  hash: string | null;
}

/** Asked before a bcrypt round is spent on a guess; throws to refuse the round. */
export interface HashGate {
  /** Returns what to tell once the guess has been checked (or could not be: no worker free). */
  admit(): { checked(result: VerifyResult): void; notChecked(): void };
}

export interface HtpasswdOptions {
  log: Logger;
  /** How often the file's stat is checked for changes. Default 1000 ms; 0: on every check. */
  checkIntervalMs?: number;
  now?: () => number;
  /** How long a successful check is remembered. Default 5 minutes. */
  rememberMs?: number;
  /** Where bcrypt runs; default: a pool of this Htpasswd's own (closed by close()). */
  pool?: BcryptPool;
}

interface FileId {
  size: number;
  mtimeMs: number;
  ino: number;
}

/** bcrypt's cost when a file has no users to take it from (htpasswd -B's default). */
const DEFAULT_COST = 10;

export class Htpasswd {
  private users = new Map<string, string>();
  private fileId: FileId | null = null;
  private lastCheck = -Infinity;
  private checking: Promise<void> | null = null;
  private readonly checkIntervalMs: number;
  private readonly now: () => number;
  private readonly log: Logger;
  /** HMAC(credentials) → the hash they matched; valid while the user's hash is unchanged. */
  private readonly remembered: LRUCache<string, string>;
  private readonly hmacKey = randomBytes(32);
  /** Checks in progress, by the same key as `remembered`. */
  private readonly inFlight = new Map<string, Promise<Checked>>();
  /** Compared against for users that do not exist: a hash of the file's usual cost that matches nothing. */
  private dummy = dummyHash(DEFAULT_COST);
  private readonly pool: BcryptPool;
  private readonly ownPool: boolean;

  private constructor(
    readonly file: string,
    opts: HtpasswdOptions,
  ) {
    this.log = opts.log;
    this.checkIntervalMs = opts.checkIntervalMs ?? 1000;
    this.now = opts.now ?? Date.now;
    this.remembered = new LRUCache({ max: 1000, ttl: opts.rememberMs ?? 300_000, perf: { now: () => this.now() } });
    this.ownPool = opts.pool === undefined;
    this.pool = opts.pool ?? new BcryptPool();
  }

  /** Reads the file once; an unreadable file is a start-up error (a ConfigError). */
  static async load(file: string, opts: HtpasswdOptions): Promise<Htpasswd> {
    const h = new Htpasswd(file, opts);
    let id: FileId;
    try {
      id = await fileId(file);
    } catch (err) {
      throw new ConfigError([`auth.htpasswd: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], 'auth files');
    }
    await h.read(id);
    h.lastCheck = h.now();
    return h;
  }

  /** Number of users loaded. */
  get size(): number {
    return this.users.size;
  }

  async has(user: string): Promise<boolean> {
    return (await this.hashOf(user)) !== undefined;
  }

  /** The user's hash as the file has it now; undefined when there is no such user. */
  async hashOf(user: string): Promise<string | undefined> {
    await this.refresh();
    return this.users.get(user);
  }

  async verify(user: string, password: string): Promise<VerifyResult> {
    return (await this.check(user, password)).result;
  }

  /**
   * Checks a password. Rejects with what `gate.admit()` throws (nothing checked), or with
   * HashQueueFullError when the bcrypt queue is full (nothing checked either).
   */
  async check(user: string, password: string, gate?: HashGate): Promise<Checked> {
    await this.refresh();
    const hash = this.users.get(user);
    const key = createHmac('sha256', this.hmacKey).update(user).update('\0').update(password).digest('base64');
    if (hash !== undefined && this.remembered.get(key) === hash) return { result: 'ok', hash };
    const running = this.inFlight.get(key);
    if (running) return running;
    const admitted = gate?.admit();
    const checking = this.pool.compare(password, hash ?? this.dummy).then(
      (ok): Checked => {
        const result: VerifyResult = hash === undefined ? 'unknown-user' : ok ? 'ok' : 'bad-password';
        if (result === 'ok') this.remembered.set(key, hash!);
        admitted?.checked(result);
        return { result, hash: result === 'ok' ? hash! : null };
      },
      (err: unknown) => {
        admitted?.notChecked();
        throw err;
      },
    );
    this.inFlight.set(key, checking);
    try {
      return await checking;
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Stops the bcrypt workers, if they are this Htpasswd's own. */
  async close(): Promise<void> {
    if (this.ownPool) await this.pool.close();
  }

  /** Re-reads the file if it changed since the last look (at most once per interval). */
  async refresh(): Promise<void> {
    if (this.now() - this.lastCheck < this.checkIntervalMs) return;
    this.checking ??= this.checkFile().finally(() => {
      this.lastCheck = this.now();
      this.checking = null;
    });
    await this.checking;
  }

  private async checkFile(): Promise<void> {
    let id: FileId;
    try {
      id = await fileId(this.file);
    } catch (err) {
      if (this.fileId !== null) this.log.error({ file: this.file, code: (err as NodeJS.ErrnoException).code }, 'htpasswd file unreadable; keeping the users loaded before');
      this.fileId = null;
      return;
    }
    const f = this.fileId;
    if (f && f.size === id.size && f.mtimeMs === id.mtimeMs && f.ino === id.ino) return;
    await this.read(id).catch((err: unknown) => {
      this.log.error({ file: this.file, code: (err as NodeJS.ErrnoException).code }, 'htpasswd file unreadable; keeping the users loaded before');
    });
  }

  private async read(id: FileId): Promise<void> {
    const text = await readFile(this.file, 'utf8');
    const { users, problems } = parseHtpasswd(text);
    for (const p of problems) this.log.warn({ file: this.file }, `htpasswd ${p}`);
    const first = this.fileId === null && this.users.size === 0;
    this.users = users;
    this.dummy = dummyHash(usualCost(users.values()));
    this.fileId = id;
    this.log.info({ file: this.file, users: users.size }, first ? 'htpasswd loaded' : 'htpasswd reloaded');
  }
}

async function fileId(file: string): Promise<FileId> {
  const st = await stat(file);
  return { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
}

/** The cost most of the hashes have (the higher on a tie); the default when there are none. */
function usualCost(hashes: Iterable<string>): number {
  const counts = new Map<number, number>();
  for (const h of hashes) {
    const cost = Number(h.slice(4, 6));
    counts.set(cost, (counts.get(cost) ?? 0) + 1);
  }
  let best = DEFAULT_COST;
  let most = 0;
  for (const [cost, n] of counts) {
    if (n > most || (n === most && cost > best)) [best, most] = [cost, n];
  }
  return best;
}

/** A well-formed bcrypt hash of `cost` that no password matches (random salt and digest): made without a bcrypt round. */
function dummyHash(cost: number): string {
  return bcrypt.genSaltSync(cost) + bcrypt.encodeBase64(randomBytes(23), 23);
}
