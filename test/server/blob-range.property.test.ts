// The Range header on blob GETs (RFC 9110 §14), as blob-response.ts answers it:
//
//   Range       = range-unit "=" OWS range-set          ("bytes", case-insensitive; OWS after "=": erratum 7306)
//   range-set   = range-spec *( OWS "," OWS range-spec )
//   range-spec  = first-pos "-" [ last-pos ] | "-" suffix-length
//
// A header outside that grammar is refused (416 RANGE_INVALID) before anything is opened. For a
// blob of known size: the satisfiable specs, merged, make one range → 206 with that range; several
// disjoint ranges → 200 with the whole blob (RFC 9110 lets a server ignore Range); none → 416
// with `Content-Range: bytes */size`. Satisfiable (§14.1.2): first-pos below the size, or a
// non-zero suffix-length (a suffix longer than the blob means the whole blob).
import type { ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import fc from 'fast-check';
import t from 'tap';
import { checkRangeSyntax, sendBlob, type BlobOutcome } from '../../lib/server/blob-response.js';
import { anyString, attempt, attemptAsync, charsFrom, holds, holdsAsync, mutated } from '../fixtures/property.js';

type Spec = { kind: 'int'; first: bigint; last: bigint } | { kind: 'open'; first: bigint } | { kind: 'suffix'; length: bigint };

/** Positions: around small sizes, anywhere in the safe integers, and far beyond them. */
const position = fc.oneof(
  fc.bigInt({ min: 0n, max: 3000n }),
  fc.bigInt({ min: 0n, max: BigInt(Number.MAX_SAFE_INTEGER) }),
  fc.bigInt({ min: 0n, max: 10n ** 30n }),
);
/** Blob sizes: small ones (most ranges then fall outside) and large ones. */
const blobSize = fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));

const validSpec: fc.Arbitrary<Spec> = fc.oneof(
  fc.tuple(position, position).map(([a, b]): Spec => ({ kind: 'int', first: a < b ? a : b, last: a < b ? b : a })),
  position.map((first): Spec => ({ kind: 'open', first })),
  position.map((length): Spec => ({ kind: 'suffix', length })),
);
/** An int-range whose last-pos is below its first-pos: invalid (§14.1.1), ignored in a set. */
const invalidSpec: fc.Arbitrary<Spec> = fc
  .tuple(position, position)
  .filter(([a, b]) => a !== b)
  .map(([a, b]): Spec => ({ kind: 'int', first: a > b ? a : b, last: a > b ? b : a }));

/** Positions may be written with leading zeros (1*DIGIT). */
const digits = (n: bigint, zeros: number): string => '0'.repeat(zeros) + n.toString();
function writeSpec(s: Spec, zeros = 0): string {
  if (s.kind === 'int') return `${digits(s.first, zeros)}-${digits(s.last, zeros)}`;
  if (s.kind === 'open') return `${digits(s.first, zeros)}-`;
  return `-${digits(s.length, zeros)}`;
}

const ows = charsFrom(' \t', 0, 2);
const unit = fc.constantFrom('bytes', 'Bytes', 'BYTES');

function header(specs: Spec[]): fc.Arbitrary<string> {
  return fc
    .tuple(unit, ows, fc.array(ows, { minLength: specs.length * 2, maxLength: specs.length * 2 }), fc.nat({ max: 2 }))
    .map(([u, afterEquals, spaces, zeros]) => `${u}=${afterEquals}${specs.map((s, i) => writeSpec(s, zeros) + (i < specs.length - 1 ? `${spaces[2 * i]},${spaces[2 * i + 1]}` : '')).join('')}`);
}

/** The bytes a satisfiable spec selects in a blob of `size` bytes, or null (§14.1.2). */
function selects(s: Spec, size: bigint): [bigint, bigint] | null {
  if (s.kind === 'suffix') return s.length > 0n && size > 0n ? [s.length >= size ? 0n : size - s.length, size - 1n] : null;
  if (s.kind === 'int' && s.last < s.first) return null;
  if (s.first >= size) return null;
  const last = s.kind === 'int' && s.last < size - 1n ? s.last : size - 1n;
  return [s.first, last];
}

/** The merged ranges (overlapping or adjacent ones joined), in order. */
function merge(ranges: Array<[bigint, bigint]>): Array<[bigint, bigint]> {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Array<[bigint, bigint]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1n) last[1] = r[1] > last[1] ? r[1] : last[1];
    else out.push([r[0], r[1]]);
  }
  return out;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  sent: { start: number; end: number } | 'whole' | null;
  released: boolean;
  outcome: BlobOutcome;
}

/** Answers a blob GET of a blob of `size` bytes with `range` through sendBlob, on a recording response. */
async function answer(size: number | null, range: string): Promise<Answer | { refused: string; status: number; headers: Record<string, string>; released: boolean }> {
  const a: Answer = { status: 0, headers: {}, sent: null, released: false, outcome: {} };
  const res = {
    destroyed: false,
    writeHead(status: number, headers: Record<string, string>) {
      a.status = status;
      a.headers = { ...headers };
      return res;
    },
    destroy() {
      res.destroyed = true;
    },
  };
  const blob = {
    size,
    sendTo: async (_dest: Writable, r?: { start: number; end: number }) => {
      a.sent = r ?? 'whole';
    },
    release: async () => {
      a.released = true;
    },
  };
  const outcome = await attemptAsync(() => sendBlob(res as unknown as ServerResponse, range, {}, blob, a.outcome));
  if (!outcome.ok) return { refused: outcome.code, status: outcome.status, headers: outcome.error.headers, released: a.released };
  return a;
}

t.test('every Range header of the RFC 9110 bytes grammar passes the syntax check', async (t) => {
  holds(
    t,
    fc.property(fc.array(fc.oneof(validSpec, invalidSpec), { minLength: 1, maxLength: 4 }).chain(header), (h) => attempt(() => checkRangeSyntax(h)).ok),
  );
});

t.test('a header outside the grammar is refused with RANGE_INVALID (416); what passes is only "bytes=", digits, "-", "," and spaces', async (t) => {
  const rangeLike = fc.oneof(
    anyString,
    charsFrom('bytes=0123456789-, \tB', 0, 20),
    mutated(fc.array(validSpec, { minLength: 1, maxLength: 3 }).chain(header), 'x=;/-,.+ ab'),
  );
  holds(
    t,
    fc.property(rangeLike, (h) => {
      const outcome = attempt(() => checkRangeSyntax(h));
      if (outcome.ok) return /^bytes=[\d\s,-]*$/i.test(h);
      return outcome.code === 'RANGE_INVALID' && outcome.status === 416;
    }),
    { numRuns: 500 },
  );
});

t.test('one range-spec on a blob of known size is answered with exactly the bytes RFC 9110 selects (206), or 416 when it selects none', async (t) => {
  const oneSpec = validSpec.chain((spec) => header([spec]).map((h) => [spec, h] as const));
  await holdsAsync(
    t,
    fc.asyncProperty(blobSize, oneSpec, async (size, [spec, h]) => {
      const got = await answer(size, h);
      if (size === 0 && spec.kind === 'suffix' && spec.length > 0n) {
        // An empty blob: a suffix range may be ignored or refused (RFC 9110 §14.1.2, §15.5.17).
        return 'refused' in got ? got.status === 416 : got.status === 200;
      }
      const want = selects(spec, BigInt(size));
      if (want === null) return 'refused' in got && got.refused === 'RANGE_INVALID' && got.status === 416 && got.headers['Content-Range'] === `bytes */${size}` && got.released;
      if ('refused' in got) return false;
      const [start, end] = [Number(want[0]), Number(want[1])];
      return (
        got.status === 206 &&
        got.headers['Content-Range'] === `bytes ${start}-${end}/${size}` &&
        got.headers['Content-Length'] === String(end - start + 1) &&
        typeof got.sent === 'object' &&
        got.sent?.start === start &&
        got.sent.end === end &&
        got.outcome.bytes === end - start + 1
      );
    }),
    { numRuns: 500 },
  );
});

t.test('a set of ranges gets 206 with the one range it merges into, 200 with the whole blob when it stays several, 416 when it selects nothing', async (t) => {
  const specs = fc.array(fc.oneof(validSpec, validSpec, invalidSpec), { minLength: 1, maxLength: 5 });
  await holdsAsync(
    t,
    fc.asyncProperty(
      blobSize.filter((s) => s > 0),
      specs.chain((ss) => header(ss).map((h) => [ss, h] as const)),
      async (size, [ss, h]) => {
        const got = await answer(size, h);
        const selected = ss.map((s) => selects(s, BigInt(size))).filter((r): r is [bigint, bigint] => r !== null);
        const merged = merge(selected);
        if (merged.length === 0) return 'refused' in got && got.status === 416 && got.headers['Content-Range'] === `bytes */${size}` && got.released;
        if ('refused' in got) return false;
        if (merged.length > 1) return got.status === 200 && got.headers['Content-Length'] === String(size) && got.sent === 'whole' && got.outcome.bytes === size;
        const [start, end] = [Number(merged[0]![0]), Number(merged[0]![1])];
        return got.status === 206 && got.headers['Content-Range'] === `bytes ${start}-${end}/${size}` && typeof got.sent === 'object' && got.sent?.start === start && got.sent.end === end;
      },
    ),
    { numRuns: 300 },
  );
});

t.test('a 206 never reaches outside the blob, whatever the header that passed the syntax check', async (t) => {
  const rangeLike = fc.oneof(charsFrom('0123456789-, ', 0, 16).map((s) => `bytes=${s}`), fc.array(validSpec, { minLength: 1, maxLength: 3 }).chain(header));
  await holdsAsync(
    t,
    fc.asyncProperty(blobSize, rangeLike, async (size, h) => {
      if (!attempt(() => checkRangeSyntax(h)).ok) return true;
      const got = await answer(size, h);
      if ('refused' in got) return got.refused === 'RANGE_INVALID' && got.status === 416;
      if (got.status === 200) return got.sent === 'whole';
      const sent = got.sent;
      return got.status === 206 && typeof sent === 'object' && sent !== null && sent.start >= 0 && sent.start <= sent.end && sent.end < size;
    }),
    { numRuns: 300 },
  );
});

t.test('a blob of unknown size is sent whole and Range is ignored', async (t) => {
  await holdsAsync(
    t,
    fc.asyncProperty(fc.array(validSpec, { minLength: 1, maxLength: 3 }).chain(header), async (h) => {
      const got = await answer(null, h);
      return !('refused' in got) && got.status === 200 && got.sent === 'whole' && got.headers['Content-Length'] === undefined;
    }),
  );
});
