import t from 'tap';
import { formatBytes, parseDuration, parseSize } from '../../lib/config/units.js';

const durations: Array<[string, string, number]> = [
  ['milliseconds', '250ms', 250],
  ['seconds', '30s', 30_000],
  ['minutes', '5m', 300_000],
  ['hours', '1h', 3_600_000],
  ['days', '7d', 604_800_000],
  ['weeks', '1w', 604_800_000],
  ['a combination of units', '1h30m', 5_400_000],
  ['a combination with a space', '1h 30m', 5_400_000],
  ['minutes then seconds (m is not taken for ms)', '1m5s', 65_000],
  ['a space between number and unit', '5 m', 300_000],
  ['a fraction', '1.5s', 1_500],
  ['upper-case units', '30S', 30_000],
  ['an upper-case M, which is still minutes', '5M', 300_000],
  ['surrounding spaces', ' 5m ', 300_000],
  ['a bare number, read as seconds', '5', 5_000],
  ['a bare fraction, read as seconds', '1.5', 1_500],
  ['zero', '0', 0],
];
for (const [what, input, ms] of durations) {
  t.test(`a duration in ${what} (${JSON.stringify(input)}) is ${ms} ms`, async (t) => {
    t.equal(parseDuration(input), ms);
  });
}

t.test('a duration below a millisecond rounds to whole milliseconds', async (t) => {
  t.equal(parseDuration('0.4ms'), 0);
  t.equal(parseDuration('1.6ms'), 2);
});

const badDurations: Array<[string, string]> = [
  ['empty', ''],
  ['blank', '   '],
  ['negative', '-5s'],
  ['an unknown unit', '5x'],
  ['a unit with no number', 'ms'],
  ['a trailing number with no unit', '1m30'],
  ['trailing text after a unit', '5s5'],
  ['two decimal points', '1.5.5s'],
  ['exponent notation', '1e3'],
  ['NaN', 'NaN'],
  ['months or years', '1y'],
  ['a word', 'forever'],
];
for (const [what, input] of badDurations) {
  t.test(`a duration that is ${what} (${JSON.stringify(input)}) is refused`, async (t) => {
    t.equal(parseDuration(input), null);
  });
}

t.test('a numeric duration is seconds', async (t) => {
  t.equal(parseDuration(30), 30_000);
  t.equal(parseDuration(0), 0);
  t.equal(parseDuration(0.5), 500);
});

t.test('a negative or non-finite numeric duration is refused', async (t) => {
  t.equal(parseDuration(-1), null);
  t.equal(parseDuration(Number.NaN), null);
  t.equal(parseDuration(Number.POSITIVE_INFINITY), null);
});

const sizes: Array<[string, string, number]> = [
  ['MiB', '4MiB', 4 * 1024 ** 2],
  ['lower-case mib', '4mib', 4 * 1024 ** 2],
  ['a space before the unit', '4 MiB', 4 * 1024 ** 2],
  ['GiB', '50GiB', 50 * 1024 ** 3],
  ['TiB', '1TiB', 1024 ** 4],
  ['KiB', '512KiB', 512 * 1024],
  ['Ki without B', '1Ki', 1024],
  ['decimal GB with a fraction', '1.5GB', 1_500_000_000],
  ['decimal KB', '1KB', 1000],
  ['k alone', '1k', 1000],
  ['K alone', '1K', 1000],
  ['M alone (decimal)', '2M', 2_000_000],
  ['T alone (decimal)', '1T', 1e12],
  ['b', '10b', 10],
  ['a bare number (bytes)', '10', 10],
  ['zero', '0', 0],
];
for (const [what, input, bytes] of sizes) {
  t.test(`a size in ${what} (${JSON.stringify(input)}) is ${bytes} bytes`, async (t) => {
    t.equal(parseSize(input), bytes);
  });
}

const badSizes: Array<[string, string]> = [
  ['empty', ''],
  ['negative', '-1'],
  ['an unknown unit', '4XB'],
  ['a unit with no number', 'B'],
  ['a unit with spaces inside', '4 M i B'],
  ['petabytes', '1PB'],
  ['two numbers', '1 2'],
  ['exponent notation', '1e6'],
];
for (const [what, input] of badSizes) {
  t.test(`a size that is ${what} (${JSON.stringify(input)}) is refused`, async (t) => {
    t.equal(parseSize(input), null);
  });
}

t.test('a numeric size is bytes', async (t) => {
  t.equal(parseSize(4), 4);
  t.equal(parseSize(0), 0);
});

t.test('a numeric size that is fractional, negative, unsafe or not finite is refused', async (t) => {
  t.equal(parseSize(1.5), null);
  t.equal(parseSize(-1), null);
  t.equal(parseSize(2 ** 53), null);
  t.equal(parseSize(Number.NaN), null);
  t.equal(parseSize(Number.POSITIVE_INFINITY), null);
});

const formatted: Array<[number, string]> = [
  [0, '0B'],
  [1, '1B'],
  [1023, '1023B'],
  [1024, '1.0KiB'],
  [1536, '1.5KiB'],
  [4 * 1024 ** 2, '4.0MiB'],
  [50 * 1024 ** 3, '50.0GiB'],
  [1024 ** 4, '1.0TiB'],
  [1024 ** 5, '1024.0TiB'],
];
for (const [n, text] of formatted) {
  t.test(`formatBytes(${n}) is ${text}`, async (t) => {
    t.equal(formatBytes(n), text);
  });
}

t.test('formatBytes output of a binary size parses back to the same size', async (t) => {
  for (const n of [1024, 4 * 1024 ** 2, 50 * 1024 ** 3]) t.equal(parseSize(formatBytes(n)), n);
});
