// A chunked upload's Content-Range (distribution spec, "Pushing a blob in chunks"): `<start>-<end>`,
// inclusive, matching ^[0-9]+-[0-9]+$; stevedore also takes a leading `bytes ` or `bytes=`, and at
// most 15 digits a side, so every position is a safe integer. Anything else is BLOB_UPLOAD_INVALID.
import fc from 'fast-check';
import t from 'tap';
import { parseChunkRange } from '../../lib/registry/registry.js';
import { anyString, attempt, charsFrom, holds, mutated } from '../fixtures/property.js';

const MAX = 10 ** 15 - 1;
const position = fc.oneof(fc.nat({ max: 10_000 }), fc.integer({ min: 0, max: MAX }));
const ordered: fc.Arbitrary<[number, number]> = fc.tuple(position, position).map(([a, b]) => (a <= b ? [a, b] : [b, a]));
const prefix = fc.constantFrom('', 'bytes ', 'bytes=');
const padding = charsFrom(' \t', 0, 2);

t.test('every "<start>-<end>" with start ≤ end parses to those positions, with or without a bytes prefix and surrounding spaces', async (t) => {
  holds(
    t,
    fc.property(ordered, prefix, padding, padding, ([start, end], p, before, after) => {
      const r = parseChunkRange(`${before}${p}${start}-${end}${after}`);
      return r.start === start && r.end === end;
    }),
  );
});

t.test('leading zeros do not change a position', async (t) => {
  holds(
    t,
    fc.property(fc.nat({ max: 10 ** 9 }), fc.nat({ max: 5 }), (n, zeros) => {
      const padded = '0'.repeat(zeros) + String(n);
      if (padded.length > 15) return true;
      const r = parseChunkRange(`${padded}-${padded}`);
      return r.start === n && r.end === n;
    }),
  );
});

t.test('an end before the start is refused with BLOB_UPLOAD_INVALID', async (t) => {
  holds(
    t,
    fc.property(ordered.filter(([a, b]) => a < b), ([start, end]) => {
      const outcome = attempt(() => parseChunkRange(`${end}-${start}`));
      return !outcome.ok && outcome.code === 'BLOB_UPLOAD_INVALID' && outcome.status === 400;
    }),
  );
});

t.test('a position of more than 15 digits is refused with BLOB_UPLOAD_INVALID', async (t) => {
  holds(
    t,
    fc.property(charsFrom('0123456789', 16, 25), fc.boolean(), (long, first) => {
      const outcome = attempt(() => parseChunkRange(first ? `${long}-${long}` : `0-${long}`));
      return !outcome.ok && outcome.code === 'BLOB_UPLOAD_INVALID';
    }),
  );
});

t.test('any input parses to safe integers with start ≤ end, or is refused with BLOB_UPLOAD_INVALID; nothing else is thrown', async (t) => {
  const valid = fc.tuple(ordered, prefix).map(([[a, b], p]) => `${p}${a}-${b}`);
  const rangeLike = fc.oneof(anyString, charsFrom('0123456789- ,/*bytes=', 0, 20), mutated(valid, '0123456789-/ *+x'));
  holds(
    t,
    fc.property(rangeLike, (s) => {
      const outcome = attempt(() => parseChunkRange(s));
      if (!outcome.ok) return outcome.code === 'BLOB_UPLOAD_INVALID';
      const { start, end } = outcome.value;
      return Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end && /^\s*(?:bytes[ =])?\d{1,15}-\d{1,15}\s*$/.test(s);
    }),
    { numRuns: 500 },
  );
});
