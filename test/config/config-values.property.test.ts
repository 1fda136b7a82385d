// Values the config parser reads from text, checked through parseConfig so the key path of each
// refusal is part of the property:
//
//   listen   := [ host ] ":" port | port          host: a name, an IPv4 address or a bracketed IPv6 one
//   port     := 1 to 5 digits, at most 65535       no host (":5000", "5000", 5000): 0.0.0.0
//   durations and sizes: whatever units.ts accepts (test/config/units.property.test.ts), under their key
import fc from 'fast-check';
import t from 'tap';
import { ConfigError, parseConfig } from '../../lib/config/config.js';
import { parseDuration, parseSize } from '../../lib/config/units.js';
import { anyString, charsFrom, holds } from '../fixtures/property.js';

/** The problems of a refused config, or null when it was accepted. Any other exception propagates. */
function problemsOf(raw: unknown): string[] | null {
  try {
    parseConfig(raw);
    return null;
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

const port = fc.integer({ min: 0, max: 65535 });
const host = fc.oneof(
  fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }).map((b) => b.join('.')),
  fc.array(charsFrom('abcxyz0189-', 1, 8), { minLength: 1, maxLength: 3 }).map((l) => l.join('.')),
  fc.constantFrom('localhost', '::1', '::', 'fe80::1', '2001:db8::42', '::ffff:127.0.0.1'),
);

t.test('every HOST:PORT, :PORT or PORT listens there (an IPv6 host in brackets, no host meaning 0.0.0.0)', async (t) => {
  holds(
    t,
    fc.property(fc.option(host, { nil: undefined }), port, fc.constantFrom('text', 'bare', 'number'), (h, p, form) => {
      const value = h !== undefined ? `${h.includes(':') ? `[${h}]` : h}:${p}` : form === 'number' ? p : form === 'bare' ? String(p) : `:${p}`;
      const listen = parseConfig({ listen: value }).listen;
      return listen.host === (h ?? '0.0.0.0') && listen.port === p;
    }),
  );
});

t.test('a port above 65535 or of more than 5 digits is refused under the key listen', async (t) => {
  holds(
    t,
    fc.property(fc.option(host, { nil: undefined }), fc.oneof(fc.integer({ min: 65536, max: 99999 }).map(String), charsFrom('0123456789', 6, 12)), (h, p) => {
      const value = h !== undefined ? `${h.includes(':') ? `[${h}]` : h}:${p}` : `:${p}`;
      const problems = problemsOf({ listen: value });
      return problems !== null && problems.length === 1 && problems[0]!.startsWith('listen: ');
    }),
  );
});

t.test('any listen value is a port of 0 to 65535 on some host, or a problem under the key listen; nothing else is thrown', async (t) => {
  holds(
    t,
    fc.property(fc.oneof(anyString, fc.double(), fc.integer(), charsFrom('[]:.0123456789abc ', 0, 14)), (v) => {
      const problems = problemsOf({ listen: v });
      if (problems !== null) return problems.length > 0 && problems.every((p) => p.startsWith('listen: '));
      const { host: h, port: p } = parseConfig({ listen: v }).listen;
      return Number.isInteger(p) && p >= 0 && p <= 65535 && typeof h === 'string' && h.length > 0 && !/\s/.test(h);
    }),
    { numRuns: 300 },
  );
});

t.test('a duration key takes exactly what parseDuration accepts, and reports anything else under its own path', async (t) => {
  const durationLike = fc.oneof(anyString, charsFrom('0123456789.msMShdw -', 0, 10), fc.double(), fc.nat());
  holds(
    t,
    fc.property(durationLike, (v) => {
      const ms = parseDuration(v);
      const problems = problemsOf({ cache: { tagTTL: v } });
      if (ms === null) return problems !== null && problems.every((p) => p.startsWith('cache.tagTTL: '));
      return problems === null && parseConfig({ cache: { tagTTL: v } }).cache.tagTTL === ms;
    }),
    { numRuns: 200 },
  );
});

t.test('a size key takes exactly what parseSize accepts, and reports anything else under its own path', async (t) => {
  const sizeLike = fc.oneof(anyString, charsFrom('0123456789.bkmgtiBKMGTI -', 0, 10), fc.double(), fc.nat());
  holds(
    t,
    fc.property(sizeLike, (v) => {
      const bytes = parseSize(v);
      const problems = problemsOf({ cache: { manifestMaxSize: v } });
      if (bytes === null) return problems !== null && problems.every((p) => p.startsWith('cache.manifestMaxSize: '));
      return problems === null && parseConfig({ cache: { manifestMaxSize: v } }).cache.manifestMaxSize === bytes;
    }),
    { numRuns: 200 },
  );
});
