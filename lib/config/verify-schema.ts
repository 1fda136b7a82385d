/**
 * `verify:` — signature policies (lib/verify): which repositories must carry a valid signature
 * before a manifest is served, and what counts as one. The first policy whose `repository`
 * pattern matches the canonical repository name (`<upstream>/<name>`, or the hosted name, as the
 * access rules write it) decides; no match: not checked.
 */
import { z } from 'zod';
import { repositoryPattern } from './auth-schema.js';

/** A JavaScript regular expression, checked when the configuration is read (matched whole). */
const regExp = z.string().min(1).superRefine((v, ctx) => {
  try {
    new RegExp(v, 'u');
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `not a regular expression: ${(err as Error).message}` });
  }
});

/** Who may have signed (keyless): the certificate's identity (SAN) and the OIDC issuer, exactly or as a regular expression. */
const identitySchema = z
  .object({
    /** The certificate's subject alternative name (an e-mail, or a CI workflow URI), exactly. */
    subject: z.string().min(1).optional(),
    /** ... or a regular expression the whole subject must match. */
    subjectRegExp: regExp.optional(),
    /** The OIDC issuer written in the certificate (https://token.actions.githubusercontent.com), exactly. */
    issuer: z.string().min(1).optional(),
    /** ... or a regular expression the whole issuer must match. */
    issuerRegExp: regExp.optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.subject === undefined) === (v.subjectRegExp === undefined)) ctx.addIssue({ code: 'custom', message: 'give subject or subjectRegExp (one of them)' });
    if ((v.issuer === undefined) === (v.issuerRegExp === undefined)) ctx.addIssue({ code: 'custom', message: 'give issuer or issuerRegExp (one of them)' });
  });

const policySchema = z
  .object({
    /** Repositories this policy covers (`docker.io/library/*`, `lab/**`, `**`), as the access rules name them. */
    repository: repositoryPattern,
    /** require: refuse what does not verify (403 DENIED); warn: serve it, log and count it; off: not checked. */
    mode: z.enum(['require', 'warn', 'off']).default('require'),
    /** PEM public keys (ECDSA P-256, RSA, Ed25519): a signature by any one of them is valid. */
    keys: z.array(z.string().min(1)).default([]),
    /** Keyless signatures (Fulcio certificates, transparency log entries), checked offline against a trusted root. */
    keyless: z
      .object({
        /** sigstore's trusted_root.json: the certificate authorities, transparency and CT logs trusted. */
        trustedRoot: z.string().min(1),
        /** Who may have signed: any one of these. */
        identities: z.array(identitySchema).min(1),
      })
      .strict()
      .nullable()
      .default(null),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.mode !== 'off' && v.keys.length === 0 && v.keyless === null) {
      ctx.addIssue({ code: 'custom', path: ['keys'], message: 'a policy that is not off needs keys, keyless, or both (what counts as a valid signature)' });
    }
  });

export const verifySchema = z
  .object({
    /** Policies in order: the first whose repository matches decides. */
    policies: z.array(policySchema).default([]),
  })
  .strict()
  .default({ policies: [] });

export type VerifyConfig = z.output<typeof verifySchema>;
export type VerifyPolicyConfig = VerifyConfig['policies'][number];
