import t from 'tap';
import { LoginThrottle, addressKey } from '../../../lib/server/auth/login-throttle.js';

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
  const th = new LoginThrottle({ maxFailures: 10, maxFailuresPerAddress: 30, windowMs: 60_000, now: () => 0 });
  const attempts = Array.from({ length: 300 }, (_, i) => th.begin({ address: '10.0.0.1', user: `nobody-${i}` }));
  t.equal(attempts.filter((a) => a !== null).length, 30, 'thirty begin (the address allowance), the other 270 are refused');
  const one = Array.from({ length: 300 }, () => th.begin({ address: '10.0.0.2', user: 'alice' }));
  t.equal(one.filter((a) => a !== null).length, 10, 'for one user from one address, ten begin');
});

t.test('a success gives back only its own attempt: it resets neither the (user, address) nor the user', async (t) => {
  const th = new LoginThrottle({ maxFailures: 3, userCeiling: 3, windowMs: 60_000, now: () => 0 });
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  th.begin({ address: '10.0.0.9', user: 'alice' })!.failed();
  th.begin({ address: '10.0.0.9', user: 'alice' })!.failed();
  th.begin({ address: '10.0.0.1', user: 'bob' })!.succeeded();
  th.begin({ address: '10.0.0.9', user: 'bob' })!.succeeded();
  th.begin({ address: '10.0.0.1', user: 'mallory' })!.failed();
  t.ok(th.retryAfter({ address: '10.0.0.1', user: 'mallory' }) > 0, "bob's success did not reset mallory's count at that address");
  th.begin({ address: '10.0.0.7', user: 'alice' })!.failed();
  t.ok(th.delay({ address: '10.0.0.5', user: 'alice' }) > 0, "bob's success did not reset alice's count");
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

t.test('failures for alice from one address refuse alice there only: alice from another address, and bob from that one, are not refused', async (t) => {
  const th = new LoginThrottle({ maxFailures: 10, windowMs: 60_000, now: () => 0 });
  for (let i = 0; i < 11; i++) th.begin({ address: '10.0.1.1', user: 'alice' })?.failed();
  t.ok(th.retryAfter({ address: '10.0.1.1', user: 'alice' }) > 0, 'the guessing address waits for alice');
  t.equal(th.begin({ address: '10.0.1.1', user: 'alice' }), null, 'and nothing more is counted for it');
  t.equal(th.retryAfter({ address: '10.0.1.99', user: 'alice' }), 0, 'alice from another address is not refused');
  t.not(th.begin({ address: '10.0.1.99', user: 'alice' }), null, 'her attempt may be checked');
  t.equal(th.retryAfter({ address: '10.0.1.1', user: 'bob' }), 0, 'bob from the guessing address is not refused either');
});

t.test('past the per-user ceiling (failures from all addresses together), logins for that user are slowed, never refused', async (t) => {
  let now = 0;
  const th = new LoginThrottle({ maxFailures: 10, userCeiling: 10, delayStepMs: 1000, maxDelayMs: 5000, windowMs: 60_000, now: () => now });
  const alice = (i: number): { address: string; user: string } => ({ address: `10.0.2.${i}`, user: 'alice' });
  for (let i = 0; i < 9; i++) th.begin(alice(i))!.failed();
  t.equal(th.delay(alice(99)), 0, 'nine failures: no delay');
  th.begin(alice(9))!.failed();
  t.equal(th.delay(alice(99)), 1000, 'at the ceiling: one step');
  for (let i = 10; i < 40; i++) th.begin(alice(i))!.failed();
  t.equal(th.delay(alice(99)), 5000, 'forty failures: at most maxDelayMs');
  t.equal(th.retryAfter(alice(99)), 0, 'never refused for the user alone');
  t.equal(th.delay({ address: '10.0.2.99', user: 'bob' }), 0, 'another user is not slowed');
  now += 60_000;
  t.equal(th.delay(alice(99)), 0, 'the delay ends with the window');
});

t.test('one address across users: past maxFailuresPerAddress, logins from it are refused whatever user they try', async (t) => {
  const th = new LoginThrottle({ maxFailures: 3, maxFailuresPerAddress: 5, windowMs: 60_000, now: () => 0 });
  for (let i = 0; i < 5; i++) th.begin({ address: '10.0.3.1', user: `user-${i}` })!.failed();
  t.ok(th.retryAfter({ address: '10.0.3.1', user: 'carol' }) > 0, 'the address waits, whatever user it tries next');
  t.equal(th.retryAfter({ address: '10.0.3.2', user: 'carol' }), 0, 'another address does not');
});

t.test('IPv6 addresses count per /64: rotating addresses within one /64 is one client', async (t) => {
  const th = new LoginThrottle({ maxFailures: 3, maxFailuresPerAddress: 5, windowMs: 60_000, now: () => 0 });
  for (let i = 1; i <= 3; i++) th.begin({ address: `2001:db8:1:2::${i}`, user: 'alice' })!.failed();
  t.ok(th.retryAfter({ address: '2001:db8:1:2:ffff:ffff:ffff:ffff', user: 'alice' }) > 0, 'alice from another address of that /64 waits');
  t.ok(th.retryAfter({ address: '2001:0db8:0001:0002:0:0:0:9', user: 'alice' }) > 0, 'however the address is written');
  t.equal(th.retryAfter({ address: '2001:db8:1:3::1', user: 'alice' }), 0, 'the next /64 does not');
  for (let i = 0; i < 2; i++) th.begin({ address: `2001:db8:9:9:${i}::1`, user: `user-${i}` })!.failed();
  for (let i = 2; i < 5; i++) th.begin({ address: `2001:db8:9:9:${i}::2`, user: `user-${i}` })!.failed();
  t.ok(th.retryAfter({ address: '2001:db8:9:9::77', user: 'carol' }) > 0, 'the /64 is one address for the per-address count too');
});

t.test('addressKey: IPv4 as it is, IPv6 as its /64 prefix, also with an embedded IPv4 part or a zone', async (t) => {
  t.equal(addressKey('10.1.2.3'), '10.1.2.3');
  t.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(addressKey('2001:DB8:0:0:1::'), '2001:db8:0:0::/64');
  t.equal(addressKey('::1'), '0:0:0:0::/64');
  t.equal(addressKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
  t.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  t.equal(addressKey('1:2:3:4:5:6:7:8'), '1:2:3:4::/64');
});
