// Durations and sizes as people write them in the config file:
//   duration := ( number unit )+ | number           unit: ms s m h d w (any case); a bare number is seconds
//   size     := number [ unit ]                     unit: b k kb ki kib m ... tib (any case); a bare number is bytes
//   number   := digits [ "." digits ]
// The result is whole milliseconds or bytes (a safe integer), or null for anything else.
import fc from 'fast-check';
import t from 'tap';
import { formatBytes, parseDuration, parseSize } from '../../lib/config/units.js';
import { anyString, charsFrom, holds } from '../fixtures/property.js';

const DURATION_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
type DurationUnit = keyof typeof DURATION_MS;
const durationUnit = fc.constantFrom(...(Object.keys(DURATION_MS) as DurationUnit[]));

const SIZE_BYTES: Record<string, number> = {
  b: 1,
  k: 1e3,
  kb: 1e3,
  ki: 2 ** 10,
  kib: 2 ** 10,
  m: 1e6,
  mb: 1e6,
  mi: 2 ** 20,
  mib: 2 ** 20,
  g: 1e9,
  gb: 1e9,
  gi: 2 ** 30,
  gib: 2 ** 30,
  t: 1e12,
  tb: 1e12,
  ti: 2 ** 40,
  tib: 2 ** 40,
};
const sizeUnit = fc.constantFrom(...Object.keys(SIZE_BYTES));

/** Randomly upper-cases letters: units are case-insensitive. */
function anyCase(s: string): fc.Arbitrary<string> {
  return fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }).map((up) => [...s].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));
}

const spaces = charsFrom(' ', 0, 2);
const wholeNumber = fc.nat({ max: 1_000_000 });
/** A decimal number as written: digits, optionally a fraction of up to three digits. */
const decimal = fc
  .tuple(fc.nat({ max: 100_000 }), fc.option(charsFrom('0123456789', 1, 3), { nil: undefined }))
  .map(([i, f]) => (f === undefined ? String(i) : `${i}.${f}`));

const isWhole = (v: number | null): boolean => v !== null && Number.isSafeInteger(v) && v >= 0;

// ---- durations ----------------------------------------------------------------------------------

t.test('a number followed by a unit is that many units in whole milliseconds, in any case and with spaces around', async (t) => {
  holds(
    t,
    fc.property(decimal, durationUnit.chain((u) => anyCase(u).map((written) => [u, written] as const)), spaces, spaces, spaces, (n, [unit, written], a, b, c) => {
      return parseDuration(`${a}${n}${b}${written}${c}`) === Math.round(Number(n) * DURATION_MS[unit]);
    }),
  );
});

t.test('a bare number is seconds', async (t) => {
  holds(
    t,
    fc.property(decimal, (n) => parseDuration(n) === Math.round(Number(n) * 1000)),
  );
});

t.test('a sequence of whole amounts with units is the sum of its parts', async (t) => {
  const part = fc.tuple(fc.nat({ max: 1000 }), durationUnit);
  holds(
    t,
    fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), fc.constantFrom('', ' '), (ps, sep) => {
      const text = ps.map(([n, u]) => `${n}${u}`).join(sep);
      return parseDuration(text) === ps.reduce((sum, [n, u]) => sum + n * DURATION_MS[u], 0);
    }),
  );
});

t.test('durations grow with their number', async (t) => {
  holds(
    t,
    fc.property(decimal, decimal, durationUnit, (a, b, u) => {
      const [lo, hi] = Number(a) <= Number(b) ? [a, b] : [b, a];
      return parseDuration(`${lo}${u}`)! <= parseDuration(`${hi}${u}`)!;
    }),
  );
});

t.test('for the same number, a longer unit is a longer duration (ms < s < m < h < d < w)', async (t) => {
  const order: DurationUnit[] = ['ms', 's', 'm', 'h', 'd', 'w'];
  holds(
    t,
    fc.property(fc.integer({ min: 1, max: 1_000_000 }), (n) => {
      const values = order.map((u) => parseDuration(`${n}${u}`)!);
      return values.every((v, i) => i === 0 || v > values[i - 1]!);
    }),
  );
});

t.test('a numeric duration is the same as its decimal text', async (t) => {
  // YAML gives `ttl: 30` as a number and `ttl: "30"` as a string: both mean the same.
  const n = fc.oneof(
    fc.double({ min: 0, max: 1e20, noNaN: true }),
    fc.nat({ max: 1_000_000 }),
    fc.double({ min: 1e-6, max: 1, noNaN: true }),
  ).filter((x) => !String(x).includes('e'));
  holds(
    t,
    fc.property(n, (x) => parseDuration(x) === parseDuration(String(x))),
  );
});

t.test('a duration is whole milliseconds or null, whatever the input, and never throws', async (t) => {
  const durationLike = fc.oneof(anyString, charsFrom('0123456789.msMShdw -+e,:', 0, 12));
  const numberLike = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(Infinity, -Infinity, NaN, -0, Number.MAX_VALUE, Number.MIN_VALUE));
  holds(
    t,
    fc.property(fc.oneof(durationLike, numberLike), (x) => {
      const v = parseDuration(x);
      return v === null || isWhole(v);
    }),
    { numRuns: 500 },
  );
});

t.test('text with a character that is no digit, ".", space or unit letter is not a duration', async (t) => {
  const junk = fc.constantFrom(...'abcefgijklnopqrtuvxyz-+,;:/e_éÅ');
  holds(
    t,
    fc.property(charsFrom('0123456789.msMShdw ', 0, 8), junk, charsFrom('0123456789.msMShdw ', 0, 8), (a, j, b) => parseDuration(a + j + b) === null),
  );
});

t.test('a negative duration is refused, as text or as a number', async (t) => {
  holds(
    t,
    fc.property(decimal.filter((n) => Number(n) > 0), durationUnit, (n, u) => parseDuration(`-${n}${u}`) === null && parseDuration(-Number(n)) === null),
  );
});

// ---- sizes --------------------------------------------------------------------------------------

t.test('a whole number followed by a unit is that many units in bytes, in any case and with spaces around', async (t) => {
  holds(
    t,
    fc.property(wholeNumber, sizeUnit.chain((u) => anyCase(u).map((written) => [u, written] as const)), spaces, spaces, spaces, (n, [unit, written], a, b, c) => {
      const bytes = n * SIZE_BYTES[unit]!;
      return parseSize(`${a}${n}${b}${written}${c}`) === (Number.isSafeInteger(bytes) ? bytes : null);
    }),
  );
});

t.test('a fraction of a unit is rounded to whole bytes; a fraction of a byte is not a size', async (t) => {
  holds(
    t,
    fc.property(decimal, sizeUnit, (n, unit) => {
      const exact = Number(n) * SIZE_BYTES[unit]!;
      const got = parseSize(`${n}${unit}`);
      if (unit === 'b' && !Number.isInteger(Number(n))) return got === null && parseSize(n) === null;
      return got === (Number.isSafeInteger(Math.round(exact)) ? Math.round(exact) : null);
    }),
  );
});

t.test('sizes grow with their number, up to 2^53 bytes, beyond which they are refused', async (t) => {
  holds(
    t,
    fc.property(decimal, decimal, sizeUnit.filter((u) => u !== 'b'), (a, b, u) => {
      const [lo, hi] = Number(a) <= Number(b) ? [a, b] : [b, a];
      const [small, large] = [parseSize(`${lo}${u}`), parseSize(`${hi}${u}`)];
      if (large === null) return Number(hi) * SIZE_BYTES[u]! > Number.MAX_SAFE_INTEGER;
      return small !== null && small <= large;
    }),
  );
});

t.test('for the same number, units order as B < KB < KiB < MB < MiB < GB < GiB < TB < TiB', async (t) => {
  const order = ['b', 'kb', 'kib', 'mb', 'mib', 'gb', 'gib', 'tb', 'tib'];
  holds(
    t,
    fc.property(fc.integer({ min: 1, max: 1000 }), (n) => {
      const values = order.map((u) => parseSize(`${n}${u}`)!);
      return values.every((v, i) => i === 0 || v > values[i - 1]!);
    }),
  );
});

t.test('a size is whole bytes or null, whatever the input, and never throws', async (t) => {
  const sizeLike = fc.oneof(anyString, charsFrom('0123456789.bkmgtiBKMGTI -+e', 0, 12));
  const numberLike = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(Infinity, -Infinity, NaN, -0, Number.MAX_VALUE, 2 ** 53));
  holds(
    t,
    fc.property(fc.oneof(sizeLike, numberLike), (x) => {
      const v = parseSize(x);
      return v === null || isWhole(v);
    }),
    { numRuns: 500 },
  );
});

t.test('a negative size or an unknown unit is refused', async (t) => {
  const unknownUnit = charsFrom('abcdefghijklmnopqrstuvwxyz', 1, 4).filter((u) => !(u in SIZE_BYTES));
  holds(
    t,
    fc.property(wholeNumber, unknownUnit, sizeUnit, (n, bad, good) => parseSize(`${n}${bad}`) === null && parseSize(`-${n + 1}${good}`) === null && parseSize(-(n + 1)) === null),
  );
});

t.test('formatBytes prints a size (up to a pebibyte) that parses back to within half a tenth of its unit', async (t) => {
  // Above 2^53 - 0.05 TiB the rounded text ("8192.0TiB") is itself beyond what parseSize accepts.
  holds(
    t,
    fc.property(fc.oneof(fc.nat({ max: 1 << 20 }), fc.integer({ min: 0, max: 2 ** 50 })), (n) => {
      const text = formatBytes(n);
      const back = parseSize(text);
      const unit = SIZE_BYTES[text.replace(/^[\d.]+/, '').toLowerCase()]!;
      return back !== null && Math.abs(back - n) <= 0.05 * unit + 1;
    }),
  );
});
