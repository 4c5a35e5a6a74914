import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { ByteCharge, clientNetwork, InMemoryRateLimiter } from '../src/platform/rate-limit.ts';
import { RedisRateLimiter } from '../src/platform/redis-rate-limit.ts';
import { RedisServer } from './redis-server.ts';

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

test('a charge takes tokens after the fact: the bucket goes into debt, at most one burst deep, and refuses until it has refilled', () => {
  let now = 0;
  const limiter = new InMemoryRateLimiter({ ratePerSecond: 10, burst: 20, now: () => now });
  try {
    assert.equal(limiter.consume('k').remaining, 19);
    const charged = limiter.charge('k', 25);
    assert.equal(charged.allowed, true, 'a charge is never refused');
    assert.equal(charged.remaining, 0, 'a bucket in debt has nothing left, not less');
    assert.equal(charged.resetSeconds, 3); // from -6 to 20 at 10 per second
    const refused = limiter.consume('k');
    assert.equal(refused.allowed, false);
    assert.equal(refused.retryAfterSeconds, 1); // from -6 to 1 at 10 per second: 0.7 s
    now += 600; // -6 + 6 = 0: still short of one token
    assert.equal(limiter.consume('k').allowed, false);
    now += 100;
    assert.equal(limiter.consume('k').allowed, true);
    // A charge larger than anything the bucket could hold stops at -burst.
    assert.equal(limiter.charge('k', 1_000_000).resetSeconds, 4); // from -20 to 20
    assert.equal(limiter.consume('k').retryAfterSeconds, 3); // from -20 to 1: 2.1 s
    now += 2_100;
    assert.equal(limiter.consume('k').allowed, true);
    // Other keys are not charged.
    assert.equal(limiter.consume('other').remaining, 19);
  } finally {
    limiter.close();
  }
});

test('a byte charge costs one token per whole bytesPerToken, summed across writes', () => {
  const limiter = new InMemoryRateLimiter({ ratePerSecond: 0.001, burst: 100, now: () => 0 });
  try {
    const small = new ByteCharge(limiter, 'k', 1000);
    assert.equal(small.add(999), undefined, 'less than one token costs nothing');
    assert.equal(limiter.consume('k').remaining, 99);
    const answer = new ByteCharge(limiter, 'k', 1000);
    assert.equal((answer.add(4_500) as { remaining: number }).remaining, 95);
    const stream = new ByteCharge(limiter, 'k', 1000);
    for (let i = 0; i < 10; i += 1) stream.add(300); // 3,000 bytes in all
    assert.equal(limiter.consume('k').remaining, 91);
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

describe('rate limits in Redis', () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await redis.stop();
  });

  const limiter = (ratePerSecond: number, burst: number, prefix: string) =>
    new RedisRateLimiter({
      url: redis.url,
      ratePerSecond,
      burst,
      prefix,
      log: pino({ level: 'silent' }),
      timeoutMs: 2_000,
    });

  /** Asks every 60 ms, for up to 10 s, until the key's bucket lets a request through. */
  async function refilled(node: RedisRateLimiter, key: string) {
    let decision = await node.consume(key);
    const deadline = Date.now() + 10_000;
    while (!decision.allowed && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 60));
      decision = await node.consume(key);
    }
    return decision;
  }

  test('nodes take from one bucket: the burst holds across them, and it refills', async () => {
    // A rate this slow refills nothing noticeable during the test.
    const nodes = [limiter(0.01, 5, 'rl1:'), limiter(0.01, 5, 'rl1:'), limiter(0.01, 5, 'rl1:')];
    try {
      await Promise.all(nodes.map((n) => n.ready(5_000)));
      const decisions = await Promise.all(
        Array.from({ length: 9 }, (_, i) => nodes[i % 3]?.consume('tenant-a')),
      );
      assert.equal(decisions.filter((d) => d?.allowed).length, 5);
      const refused = decisions.find((d) => d?.allowed === false);
      assert.equal(refused?.limit, 5);
      assert.equal(refused?.remaining, 0);
      assert.ok((refused?.retryAfterSeconds ?? 0) >= 1);
      // Another key has a bucket of its own; another prefix too.
      assert.equal((await nodes[0]?.consume('tenant-b'))?.allowed, true);
      const stranger = limiter(0.01, 5, 'rl2:');
      try {
        await stranger.ready(5_000);
        assert.equal((await stranger.consume('tenant-a')).allowed, true);
      } finally {
        stranger.close();
      }
    } finally {
      for (const n of nodes) n.close();
    }
    // Refill, measured on Redis's clock: at 20 per second, an emptied bucket has tokens
    // again once Redis's own time has moved on.
    const fast = limiter(20, 2, 'rl3:');
    try {
      await fast.ready(5_000);
      await fast.consume('k');
      await fast.consume('k');
      assert.equal((await fast.consume('k')).allowed, false);
      assert.equal((await refilled(fast, 'k')).allowed, true);
    } finally {
      fast.close();
    }
  });

  test('a charge on one node drains the shared bucket into debt, atomically, and every node refuses until it refills', async () => {
    const nodes = [limiter(0.01, 10, 'rl5:'), limiter(0.01, 10, 'rl5:')];
    try {
      await Promise.all(nodes.map((n) => n.ready(5_000)));
      assert.equal((await nodes[0]?.consume('k'))?.remaining, 9);
      // Charged from both nodes at once: each script sees the other's result.
      const charged = await Promise.all([nodes[0]?.charge('k', 6), nodes[1]?.charge('k', 6)]);
      assert.deepEqual(
        charged.map((d) => d?.allowed),
        [true, true],
      );
      assert.deepEqual(charged.map((d) => d?.remaining).sort(), [0, 3]);
      const refused = await nodes[1]?.consume('k');
      assert.equal(refused?.allowed, false);
      assert.equal(refused?.remaining, 0);
      // From -3 to 1 at 0.01 per second.
      assert.equal(refused?.retryAfterSeconds, 400);
      // The debt stops at -burst.
      const deep = await nodes[0]?.charge('k', 1_000_000);
      assert.equal(deep?.resetSeconds, 2_000); // from -10 to 10 at 0.01 per second
      assert.equal((await nodes[1]?.consume('k'))?.retryAfterSeconds, 1_100);
      assert.equal((await nodes[1]?.consume('another'))?.allowed, true);
    } finally {
      for (const n of nodes) n.close();
    }
    // Refilled on Redis's clock: at 5 per second, a bucket 2 deep in debt lets a request
    // through again once Redis's time has moved on (0.6 s).
    const fast = limiter(5, 2, 'rl6:');
    try {
      await fast.ready(5_000);
      await fast.charge('k', 4);
      assert.equal((await fast.consume('k')).allowed, false);
      assert.equal((await refilled(fast, 'k')).allowed, true);
    } finally {
      fast.close();
    }
  });

  test('Redis down: each node limits on its own; Redis back: shared again', async () => {
    const node = limiter(0.01, 2, 'rl4:');
    try {
      await node.ready(5_000);
      await node.consume('k');
      await node.consume('k');
      assert.equal((await node.consume('k')).allowed, false, 'shared bucket empty');
      await redis.kill();
      const deadline = Date.now() + 10_000;
      while (node.connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(node.connected, false);
      await assert.rejects(node.ping(500));
      // The node's own bucket: a full burst, then refusals. Never an error.
      const alone = [await node.consume('k'), await node.consume('k'), await node.consume('k')];
      assert.deepEqual(
        alone.map((d) => d.allowed),
        [true, true, false],
      );
      await redis.resume();
      await node.ready(20_000);
      await node.ping(2_000);
      // Redis kept nothing on disk: the shared bucket starts full again.
      assert.equal((await node.consume('k')).allowed, true);
    } finally {
      node.close();
    }
  });
});
