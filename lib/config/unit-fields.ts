/**
 * The configuration's units as zod fields, for every schema file: a duration (to milliseconds) and a
 * size (to bytes), each written as text ("30s", "4MiB") or a plain number. `examples` goes into the
 * message a wrong value gets ("not a size: "big" (use e.g. 4MiB, 50GiB)"): the units that make
 * sense where the field is.
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

export function durationField(examples: string) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (use e.g. ${examples})` });
      return z.NEVER;
    }
    return ms;
  });
}

export function sizeField(examples: string) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === null) {
      ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (use e.g. ${examples})` });
      return z.NEVER;
    }
    return bytes;
  });
}
