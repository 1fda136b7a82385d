/**
 * The configuration's units as zod fields, for every schema file: a duration (to milliseconds) and a
 * size (to bytes), each written as text ("30s", "4MiB") or a plain number. `examples` goes into the
 * message a wrong value gets ("not a size: "big" (use e.g. 4MiB, 50GiB)"): the units that make
 * sense where the field is.
 */
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

function unitField(unit: 'duration' | 'size', parse: (v: string | number) => number | null, examples: string) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = parse(v);
    if (n === null) {
      ctx.addIssue({ code: 'custom', message: `not a ${unit}: ${JSON.stringify(v)} (use e.g. ${examples})` });
      return z.NEVER;
    }
    return n;
  });
}

export const durationField = (examples: string) => unitField('duration', parseDuration, examples);
export const sizeField = (examples: string) => unitField('size', parseSize, examples);
