// Requests between stevedore processes are signed per request (issue 25): the shared secret never
// goes on the wire, and a signature is good only for its method, path (digest), target origin and
// half a minute.
import t from 'tap';
import { PeerRequestAuth } from '../../lib/cluster/peer-auth.js';

const SECRET = 'a-shared-secret-0123456789';
const SELF = 'http://10.0.0.7:5001';
const PATH = `/_stevedore/peer/v1/blobs/sha256:${'a'.repeat(64)}`;

function at(ms: number, secret = SECRET, self = SELF): PeerRequestAuth {
  return new PeerRequestAuth(secret, self, 'node.peers.token', () => ms);
}

t.test('a request signed for this instance, method and path is accepted', async (t) => {
  const now = 1_800_000_000_000;
  const header = at(now, SECRET, 'http://10.0.0.1:5001').sign('GET', `${SELF}${PATH}`);
  t.equal(at(now).check('GET', PATH, header), null);
});

t.test('the header carries neither the secret nor anything that reads as it', async (t) => {
  const header = at(Date.now()).sign('GET', `${SELF}${PATH}`);
  t.notMatch(header, SECRET);
  t.notMatch(header, Buffer.from(SECRET).toString('base64'));
  t.match(header, /^Stevedore-Signature exp=\d+, sig=[A-Za-z0-9_-]{43}$/);
});

t.test('a signature collected at another address is refused here', async (t) => {
  const now = Date.now();
  const collected = at(now).sign('GET', `http://10.0.0.66:5001${PATH}`);
  t.match(at(now).check('GET', PATH, collected), /does not match/);
});

t.test('a signature for another digest is refused', async (t) => {
  const now = Date.now();
  const other = at(now).sign('GET', `${SELF}/_stevedore/peer/v1/blobs/sha256:${'b'.repeat(64)}`);
  t.match(at(now).check('GET', PATH, other), /does not match/);
});

t.test('a signature for GET covers HEAD, not POST', async (t) => {
  const now = Date.now();
  const get = at(now).sign('GET', `${SELF}${PATH}`);
  t.equal(at(now).check('HEAD', PATH, get), null);
  t.match(at(now).check('POST', PATH, get), /does not match/);
});

t.test('a signature made with another secret is refused', async (t) => {
  const now = Date.now();
  t.match(at(now).check('GET', PATH, at(now, 'another-secret-0123456789').sign('GET', `${SELF}${PATH}`)), /does not match/);
});

t.test('a signature is good for half a minute (and a little skew), not later', async (t) => {
  const now = 1_800_000_000_000;
  const header = at(now).sign('GET', `${SELF}${PATH}`);
  t.equal(at(now + 55_000).check('GET', PATH, header), null, 'within lifetime and skew');
  t.match(at(now + 61_000).check('GET', PATH, header), /expired/);
});

t.test('a signature that would live long (a skewed or forged clock) is refused', async (t) => {
  const now = 1_800_000_000_000;
  const header = at(now + 3_600_000).sign('GET', `${SELF}${PATH}`);
  t.match(at(now).check('GET', PATH, header), /too far in the future/);
});

t.test('a bearer token, a malformed or tampered header is refused', async (t) => {
  const now = Date.now();
  const good = at(now).sign('GET', `${SELF}${PATH}`);
  const tampered = good.replace(/exp=(\d+)/, (_, e: string) => `exp=${Number(e) + 1}`);
  for (const h of [undefined, '', `Bearer ${SECRET}`, 'Stevedore-Signature exp=1, sig=x', tampered]) {
    t.not(at(now).check('GET', PATH, h), null, String(h));
  }
});
