import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientNetwork, InMemoryRateLimiter } from '../src/platform/rate-limit.ts';

test('a bucket allows its burst, then refills at the sustained rate', () => {
  let now = 0;
  const limiter = new InMemoryRateLimiter({ ratePerSecond: 2, burst: 3, now: () => now });
  try {
    const taken = [1, 2, 3, 4].map(() => limiter.consume('k'));
    assert.deepEqual(
      taken.map((d) => [d.allowed, d.remaining]),
      [
        [true, 2],
        [true, 1],
        [true, 0],
        [false, 0],
      ],
    );
    assert.equal(taken[3]?.retryAfterSeconds, 1);
    assert.equal(taken[3]?.resetSeconds, 2);
    now += 500; // one token back at 2 per second
    assert.equal(limiter.consume('k').allowed, true);
    assert.equal(limiter.consume('k').allowed, false);
    now += 10_000; // refills to the burst, no further
    assert.equal(limiter.consume('k').remaining, 2);
  } finally {
    limiter.close();
  }
});

test('when full, the least recently used key is dropped, not a busy one', () => {
  const limiter = new InMemoryRateLimiter({
    ratePerSecond: 0.001,
    burst: 2,
    maxKeys: 2,
    now: () => 0,
  });
  try {
    limiter.consume('busy');
    limiter.consume('idle');
    limiter.consume('busy'); // busy is now the most recently used, with no tokens left
    limiter.consume('newcomer'); // evicts idle
    assert.equal(limiter.consume('busy').allowed, false, 'a busy key must keep its empty bucket');
  } finally {
    limiter.close();
  }
});

test('IPv6 clients are limited by their /64; IPv4 and mapped IPv4 by address', () => {
  assert.equal(clientNetwork('203.0.113.9'), '203.0.113.9');
  assert.equal(clientNetwork('::ffff:203.0.113.9'), '203.0.113.9');
  assert.equal(clientNetwork('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(clientNetwork('::1'), '0:0:0:0::/64');
  assert.equal(clientNetwork('fe80::1%eth0'), 'fe80:0:0:0::/64');
});
