// The index snapshot as read back at start-up (lib/storage/index-snapshot.ts): its order, what it
// skips, marks.
import t from 'tap';
import { IndexSnapshot } from '../../lib/storage/index-snapshot.js';

/** A snapshot file's bytes. */
const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const C = `sha256:${'c'.repeat(64)}`;

t.test('entries come back in the order written, with their size and recency', async (t) => {
  const s = IndexSnapshot.parse(bytes(`stevedore-index 1\n${B} 20 2000\n${A} 10 1000\n`));
  t.equal(s.size, 2);
  t.same([...s.entries()], [
    { digest: B, size: 20, mtime: 2000 },
    { digest: A, size: 10, mtime: 1000 },
  ]);
  t.equal(s.mtime(A), 1000);
  t.equal(s.mtime(C), null);
});

t.test('a text without the header, or none, is an empty snapshot', async (t) => {
  t.equal(IndexSnapshot.parse(null).size, 0);
  t.equal(IndexSnapshot.parse(bytes(`${A} 10 1000\n`)).size, 0);
  t.equal(IndexSnapshot.parse(bytes('stevedore-index 2\n')).size, 0, 'another version');
});

t.test('lines that do not parse are skipped; a repeated digest keeps its first place and its last figures', async (t) => {
  const s = IndexSnapshot.parse(bytes(`stevedore-index 1\n${A} 10 1000\ngarbage\n${B} x 5\n${C} 1.5 7\n\n${A} 11 1100\n${C} 30 3000`));
  t.same([...s.entries()], [
    { digest: A, size: 11, mtime: 1100 },
    { digest: C, size: 30, mtime: 3000 },
  ], 'a last line without its newline counts');
});

t.test('marked entries only, when asked; marking an unknown digest says so', async (t) => {
  const s = IndexSnapshot.parse(bytes(`stevedore-index 1\n${A} 10 1000\n${B} 20 2000\n${C} 30 3000\n`));
  t.ok(s.mark(C));
  t.ok(s.mark(A));
  t.notOk(s.mark(`sha256:${'d'.repeat(64)}`));
  t.same([...s.entries(true)].map((e) => e.digest), [A, C], 'in the snapshot order');
  t.equal([...s.entries()].length, 3);
});

t.test('a file cut short after its header, or of the header alone, is an empty snapshot', async (t) => {
  t.equal(IndexSnapshot.parse(bytes('stevedore-index 1\n')).size, 0);
  t.equal(IndexSnapshot.parse(bytes('stevedore-ind')).size, 0);
  t.equal(IndexSnapshot.parse(bytes(`stevedore-index 1\n${A} 10`)).size, 0, 'a line without its recency');
});
