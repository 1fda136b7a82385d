import t from 'tap';
import { LoginThrottle } from '../../../lib/server/auth/login-throttle.js';

const alice = (address = '10.0.0.1'): { address: string; user: string } => ({ address, user: 'alice' });

t.test('after maxFailures failed attempts in the window, the client waits until the window ends', async (t) => {
  let now = 1_000_000;
  const th = new LoginThrottle({ maxFailures: 3, windowMs: 60_000, now: () => now });
  for (let i = 0; i < 3; i++) {
    t.equal(th.retryAfter(alice()), 0, `attempt ${i + 1} may go`);
    th.begin(alice())!.failed();
    now += 1000;
  }
  t.equal(th.retryAfter(alice()), 57_000, 'blocked until 60 s after the first attempt');
  t.equal(th.begin(alice()), null, 'no attempt is counted while blocked');
  t.equal(th.retryAfter({ address: '10.0.0.2', user: 'bob' }), 0, 'other addresses and users are not affected');
  now += 57_000;
  t.equal(th.retryAfter(alice()), 0, 'free again once the window has passed');
  th.begin(alice())!.failed();
  t.equal(th.retryAfter(alice()), 0, 'a new window starts with one attempt');
});

t.test('attempts are counted when they begin: parallel attempts beyond the allowance are refused before any is settled', async (t) => {
  const th = new LoginThrottle({ maxFailures: 10, windowMs: 60_000, now: () => 0 });
  const attempts = Array.from({ length: 300 }, (_, i) => th.begin({ address: '10.0.0.1', user: `nobody-${i}` }));
  t.equal(attempts.filter((a) => a !== null).length, 10, 'ten begin, the other 290 are refused');
});

t.test('a success gives back only its own attempt: it resets neither the address nor another user', async (t) => {
  const th = new LoginThrottle({ maxFailures: 3, windowMs: 60_000, now: () => 0 });
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  th.begin({ address: '10.0.0.9', user: 'alice' })!.failed();
  th.begin({ address: '10.0.0.9', user: 'alice' })!.failed();
  th.begin({ address: '10.0.0.1', user: 'bob' })!.succeeded();
  th.begin({ address: '10.0.0.9', user: 'bob' })!.succeeded();
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  t.ok(th.retryAfter({ address: '10.0.0.1', user: 'bob' }) > 0, "bob's success did not reset his address's count");
  th.begin({ address: '10.0.0.7', user: 'alice' })!.failed();
  t.ok(th.retryAfter({ address: '10.0.0.5', user: 'alice' }) > 0, "bob's success did not reset alice's count");
});

t.test('a successful attempt, or one never checked, does not count', async (t) => {
  const th = new LoginThrottle({ maxFailures: 2, windowMs: 60_000, now: () => 0 });
  for (let i = 0; i < 5; i++) th.begin(alice())!.succeeded();
  for (let i = 0; i < 5; i++) th.begin(alice())!.cancelled();
  t.equal(th.retryAfter(alice()), 0);
  th.begin(alice())!.failed();
  th.begin(alice())!.failed();
  t.ok(th.retryAfter(alice()) > 0);
});

t.test('one user is throttled across addresses; one address across users', async (t) => {
  const th = new LoginThrottle({ maxFailures: 3, windowMs: 60_000, now: () => 0 });
  for (let i = 0; i < 3; i++) th.begin({ address: `10.0.1.${i}`, user: 'alice' })!.failed();
  t.ok(th.retryAfter({ address: '10.0.1.99', user: 'alice' }) > 0, 'alice from a new address waits');
  t.equal(th.retryAfter({ address: '10.0.1.99', user: 'bob' }), 0, 'bob from that address does not');
  for (let i = 0; i < 3; i++) th.begin({ address: '10.0.2.1', user: `user-${i}` })!.failed();
  t.ok(th.retryAfter({ address: '10.0.2.1', user: 'carol' }) > 0, 'the address waits, whatever user it tries next');
});
