import t from 'tap';
import { LoginThrottle } from '../../../lib/server/auth/login-throttle.js';

t.test('after maxFailures failures in the window, the client waits until the window ends', async (t) => {
  let now = 1_000_000;
  const th = new LoginThrottle({ maxFailures: 3, windowMs: 60_000, now: () => now });
  for (let i = 0; i < 3; i++) {
    t.equal(th.retryAfter('10.0.0.1'), 0, `attempt ${i + 1} may go`);
    th.failed('10.0.0.1');
    now += 1000;
  }
  t.equal(th.retryAfter('10.0.0.1'), 57_000, 'blocked until 60 s after the first failure');
  t.equal(th.retryAfter('10.0.0.2'), 0, 'other addresses are not affected');
  now += 57_000;
  t.equal(th.retryAfter('10.0.0.1'), 0, 'free again once the window has passed');
  th.failed('10.0.0.1');
  t.equal(th.retryAfter('10.0.0.1'), 0, 'a new window starts with one failure');
});

t.test('a success clears the failures', async (t) => {
  const th = new LoginThrottle({ maxFailures: 2, windowMs: 60_000, now: () => 0 });
  th.failed('a');
  th.succeeded('a');
  th.failed('a');
  t.equal(th.retryAfter('a'), 0);
  th.failed('a');
  t.ok(th.retryAfter('a') > 0);
});
