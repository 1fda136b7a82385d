/**
 * Who did what: one typed record per act (issue 31), emitted once at the place the act happens and
 * handed to every consumer — the audit log (audit-log.ts) and the webhook dispatcher (webhooks.ts).
 * No call site knows who listens; a consumer that throws is logged and never reaches the act's
 * request.
 *
 *   act                          emitted by                                 audit  webhook
 *   push                         manifest PUT (lib/server/create-server)     yes    yes
 *   delete                       manifest / tag / blob DELETE                yes    yes
 *   mount                        a cross-repository blob mount that mounted  yes    -
 *   login / login.failed         a password checked (lib/server/auth)        yes    -
 *   token.issued                 GET / POST /token                           yes    -
 *   access.denied                any 403 DENIED answered (not a signature)   yes    -
 *   signature.refused            a verify policy refused a manifest          yes    yes
 *   config.reloaded              SIGHUP read the configuration again         yes    -
 *   tag.moved                    a revalidation found an upstream tag moved  -      yes
 *   image.gone                   a cached tag the upstream answers 404 for   -      yes
 *   download.verification-failed an upstream download that did not verify    -      yes
 *
 * Never a secret in an act: call sites pass names, digests, scopes and reasons, never a header,
 * password or token. `offline` is a start-up setting with no runtime switch today, so there is no
 * `offline` act.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';

export const ACT_TYPES = [
  'push',
  'delete',
  'mount',
  'login',
  'login.failed',
  'token.issued',
  'access.denied',
  'signature.refused',
  'config.reloaded',
  'tag.moved',
  'image.gone',
  'download.verification-failed',
] as const;
export type ActType = (typeof ACT_TYPES)[number];

/** The acts webhooks can carry (config webhooks.endpoints[].types). */
export const EVENT_TYPES = ['push', 'delete', 'signature.refused', 'tag.moved', 'image.gone', 'download.verification-failed'] as const satisfies readonly ActType[];
export type EventType = (typeof EVENT_TYPES)[number];

/** The acts the audit log records. */
export const AUDITED: ReadonlySet<ActType> = new Set<ActType>(['push', 'delete', 'mount', 'login', 'login.failed', 'token.issued', 'access.denied', 'signature.refused', 'config.reloaded']);

/** What the request an act came from says about who did it. */
export interface ActOrigin {
  /** The user (htpasswd), null for anonymous clients and for acts no request caused. */
  user: string | null;
  /** The client's address (behind auth.trustedProxies, the X-Forwarded-For client). */
  address: string | null;
  reqId: string | null;
}

export interface Act extends ActOrigin {
  type: ActType;
  /**
   * Unique per act; an act several replicas can see alike (an upstream tag that moved) gets the
   * same id on each (`stableActId`), so the cluster delivers its event once.
   */
  id: string;
  /** RFC 3339, milliseconds. */
  time: string;
  /** The canonical repository (`docker.io/library/alpine`, `lab/app`). */
  repository?: string;
  digest?: string;
  tag?: string;
  /** push: the digest the tag named before (null: a new tag). tag.moved: the digest it had. */
  previousDigest?: string | null;
  /** mount: the repository the blob came from. */
  from?: string;
  /** delete: the tags a manifest delete removed; token.issued: the scopes granted. */
  tags?: string[];
  scopes?: string[];
  /** delete: what was deleted. */
  target?: 'manifest' | 'tag' | 'blob';
  /** Why (a refusal's or a failure's reason: never a credential). */
  reason?: string;
  /** login: how the credentials came (basic on /v2/..., or on /token). */
  via?: string;
}

/** What a call site gives: the rest (id, time, origin) is filled in. */
export type ActFields = Omit<Act, 'id' | 'time' | keyof ActOrigin> & Partial<ActOrigin> & { id?: string };

export type ActConsumer = (act: Readonly<Act>) => void;

/** The one emission point: every act goes to every consumer. */
export class Acts {
  private readonly consumers: ActConsumer[] = [];

  constructor(
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** No consumer: emitting costs nothing (the call sites check `active` before building acts). */
  get active(): boolean {
    return this.consumers.length > 0;
  }

  subscribe(consumer: ActConsumer): void {
    this.consumers.push(consumer);
  }

  emit(fields: ActFields): void {
    if (!this.active) return;
    const act: Act = { id: fields.id ?? randomUUID(), time: new Date(this.now()).toISOString(), user: null, address: null, reqId: null, ...fields } as Act;
    for (const consumer of this.consumers) {
      try {
        consumer(act);
      } catch (err) {
        this.log.error({ err, act: act.type }, 'an act consumer failed (the act is lost for it; serving goes on)');
      }
    }
  }

  /** An emitter bound to one request's origin. */
  forRequest(origin: () => ActOrigin): (fields: ActFields) => void {
    return (fields) => {
      if (this.active) this.emit({ ...origin(), ...fields });
    };
  }
}

/** An id that is the same wherever the same fact is seen (e.g. a tag moved from A to B). */
export function stableActId(...parts: string[]): string {
  // A UUID-shaped SHA-256 of the parts: any replica names the fact alike.
  const h = createHash('sha256').update(parts.join('\0')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
