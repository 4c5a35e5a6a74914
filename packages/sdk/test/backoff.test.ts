import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff, backoffDelayMs } from '../src/backoff.ts';

// The one backoff behind the agent's and the realtime client's reconnects, the agent's
// retries of a task's result, the REST client's retries and stream resumes, and the config
// and service clients' retries (all through `Backoff`). `random` is fixed at the ends of
// its range, so the bounds are exact.

const LOW = () => 0;
const HIGH = () => 1;

test('the step doubles from initialDelayMs with each failure, up to maxDelayMs', () => {
  const options = { initialDelayMs: 100, maxDelayMs: 1_000, jitter: 'full', random: HIGH } as const;
  const steps = [1, 2, 3, 4, 5, 6].map((failures) => backoffDelayMs(failures, options));
  assert.deepEqual(steps, [100, 200, 400, 800, 1_000, 1_000]);
});

test('full jitter draws from 0 to the step; equal jitter from half the step to the step', () => {
  const base = { initialDelayMs: 100, maxDelayMs: 10_000 };
  assert.equal(backoffDelayMs(3, { ...base, jitter: 'full', random: LOW }), 0);
  assert.equal(backoffDelayMs(3, { ...base, jitter: 'full', random: HIGH }), 400);
  assert.equal(backoffDelayMs(3, { ...base, jitter: 'equal', random: LOW }), 200);
  assert.equal(backoffDelayMs(3, { ...base, jitter: 'equal', random: HIGH }), 400);
  for (let i = 0; i < 200; i += 1) {
    const delay = backoffDelayMs(3, { ...base, jitter: 'equal' });
    assert.ok(delay >= 200 && delay <= 400, `${delay} is within [200, 400]`);
  }
});

test("a server's Retry-After is a floor, not a cap", () => {
  const options = {
    initialDelayMs: 100,
    maxDelayMs: 1_000,
    jitter: 'equal',
    random: HIGH,
  } as const;
  assert.equal(backoffDelayMs(1, { ...options, atLeastMs: 3_000 }), 3_000);
  assert.equal(backoffDelayMs(4, { ...options, atLeastMs: 50 }), 800);
});

test('a long outage stays at the ceiling instead of overflowing', () => {
  const options = {
    initialDelayMs: 250,
    maxDelayMs: 10_000,
    jitter: 'full',
    random: HIGH,
  } as const;
  for (const failures of [31, 1_100, Number.MAX_SAFE_INTEGER]) {
    assert.equal(backoffDelayMs(failures, options), 10_000);
  }
  assert.equal(backoffDelayMs(0, options), 250, 'no failure yet counts as the first');
});

test('Backoff counts failures until a success resets them; the reconnect option overrides the defaults', () => {
  const backoff = new Backoff(
    { maxDelayMs: 300 },
    { initialDelayMs: 100, maxDelayMs: 10_000, jitter: 'equal' },
  );
  const delays = [backoff.fail(), backoff.fail(), backoff.fail()];
  assert.equal(backoff.failures, 3);
  assert.ok(delays[0] !== undefined && delays[0] >= 50 && delays[0] <= 100, String(delays[0]));
  assert.ok(delays[2] !== undefined && delays[2] >= 150 && delays[2] <= 300, String(delays[2]));
  assert.equal(backoff.fail(5_000), 5_000, 'a Retry-After floor');
  backoff.reset();
  assert.equal(backoff.failures, 0);
  assert.ok(backoff.fail() <= 100);
});

test('Backoff refuses a negative or non-numeric delay', () => {
  const defaults = { initialDelayMs: 100, maxDelayMs: 1_000, jitter: 'full' } as const;
  assert.throws(() => new Backoff({ initialDelayMs: -1 }, defaults), RangeError);
  assert.throws(() => new Backoff({ maxDelayMs: Number.NaN }, defaults), RangeError);
});
