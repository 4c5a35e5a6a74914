import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type Candidate,
  createBalancer,
  STRATEGY_NAMES,
  updateEwma,
} from '../src/balancing/strategies.ts';

const agent = (id: string, extra: Partial<Candidate> = {}): Candidate => ({
  id,
  inFlight: 0,
  maxConcurrency: 4,
  ...extra,
});

const picks = (
  strategy: Parameters<typeof createBalancer>[0],
  pool: Candidate[],
  n: number,
  key?: string,
) => {
  const balancer = createBalancer(strategy);
  return Array.from({ length: n }, () => balancer.pick(pool, { key })?.id);
};

describe('every strategy', () => {
  for (const strategy of STRATEGY_NAMES) {
    test(`${strategy}: never picks a full candidate; undefined when all are full or none`, () => {
      const balancer = createBalancer(strategy);
      assert.equal(balancer.pick([]), undefined);
      const full = agent('full', {
        inFlight: 4,
        latencyEwmaMs: 1,
        load: { cpu: 0, memory: 0 },
        weight: 100,
      });
      const pool = [
        full,
        agent('open', { inFlight: 3, latencyEwmaMs: 999, load: { cpu: 1, memory: 1 } }),
      ];
      for (let i = 0; i < 20; i += 1) {
        assert.equal(balancer.pick(pool, { key: `k${i}` })?.id, 'open');
      }
      assert.equal(balancer.pick([full]), undefined);
    });
  }
});

test('round_robin takes each in id order, wraps, and keeps its place when the pool changes', () => {
  const pool = [agent('c'), agent('a'), agent('b')];
  assert.deepEqual(picks('round_robin', pool, 7), ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  const balancer = createBalancer('round_robin');
  assert.equal(balancer.pick(pool)?.id, 'a');
  assert.equal(balancer.pick(pool)?.id, 'b');
  // b left and d joined: the turn goes on after b, not back to the start.
  assert.equal(balancer.pick([agent('a'), agent('c'), agent('d')])?.id, 'c');
  assert.equal(balancer.pick([agent('a'), agent('c'), agent('d')])?.id, 'd');
});

test('weighted gives each its share of the weight, interleaved', () => {
  const pool = [agent('a', { weight: 3 }), agent('b', { weight: 1 })];
  assert.deepEqual(picks('weighted', pool, 8), ['a', 'a', 'b', 'a', 'a', 'a', 'b', 'a']);
  const counts = new Map<string, number>();
  for (const id of picks(
    'weighted',
    [agent('x', { weight: 5 }), agent('y', { weight: 2 }), agent('z')],
    800,
  )) {
    counts.set(String(id), (counts.get(String(id)) ?? 0) + 1);
  }
  assert.deepEqual(Object.fromEntries(counts), { x: 500, y: 200, z: 100 });
});

test('least_connections picks the fewest in flight per unit of weight', () => {
  const pool = [
    agent('a', { inFlight: 2 }),
    agent('b', { inFlight: 1 }),
    agent('c', { inFlight: 3 }),
  ];
  assert.equal(createBalancer('least_connections').pick(pool)?.id, 'b');
  // b holds 2 of weight 4 (0.5 each); a holds 1 of weight 1.
  const weighted = [agent('a', { inFlight: 1 }), agent('b', { inFlight: 2, weight: 4 })];
  assert.equal(createBalancer('least_connections').pick(weighted)?.id, 'b');
  // Ties go to the lower id.
  assert.equal(createBalancer('least_connections').pick([agent('z'), agent('y')])?.id, 'y');
});

test('latency picks the lowest moving average, and tries an unmeasured candidate first', () => {
  const pool = [agent('slow', { latencyEwmaMs: 900 }), agent('fast', { latencyEwmaMs: 40 })];
  assert.equal(createBalancer('latency').pick(pool)?.id, 'fast');
  assert.equal(createBalancer('latency').pick([...pool, agent('new')])?.id, 'new');
  assert.equal(updateEwma(undefined, 100), 100);
  assert.equal(updateEwma(100, 200), 130);
  let average: number | undefined;
  for (let i = 0; i < 50; i += 1) average = updateEwma(average, 10);
  assert.equal(Math.round(average ?? 0), 10);
});

test('resource picks the least loaded by its most constrained resource', () => {
  const pool = [
    agent('cpu-bound', { load: { cpu: 0.9, memory: 0.1 } }),
    agent('memory-bound', { load: { cpu: 0.1, memory: 0.8 } }),
    agent('busy', { inFlight: 3, load: { cpu: 0.2, memory: 0.2 } }),
    agent('balanced', { load: { cpu: 0.5, memory: 0.5 } }),
  ];
  assert.equal(createBalancer('resource').pick(pool)?.id, 'balanced');
  assert.equal(createBalancer('resource').pick([...pool, agent('quiet')])?.id, 'quiet');
});

test('consistent_hash keeps a key on one candidate, and moves only the keys of one that leaves', () => {
  const pool = ['a', 'b', 'c', 'd'].map((id) => agent(id));
  const balancer = createBalancer('consistent_hash');
  const keys = Array.from({ length: 400 }, (_, i) => `session-${i}`);
  const before = new Map(keys.map((k) => [k, balancer.pick(pool, { key: k })?.id]));
  for (const k of keys) assert.equal(balancer.pick(pool, { key: k })?.id, before.get(k), 'stable');
  const share = new Map<string, number>();
  for (const id of before.values()) share.set(String(id), (share.get(String(id)) ?? 0) + 1);
  for (const count of share.values()) assert.ok(count > 60 && count < 140, `uneven: ${[...share]}`);
  const without = pool.filter((c) => c.id !== 'b');
  for (const k of keys) {
    const after = balancer.pick(without, { key: k })?.id;
    if (before.get(k) !== 'b')
      assert.equal(after, before.get(k), `${k} moved although its candidate stayed`);
  }
  // A full candidate hands its keys on, and gets them back when it has room again.
  const someKey = keys.find((k) => before.get(k) === 'a') ?? '';
  const aFull = pool.map((c) => (c.id === 'a' ? { ...c, inFlight: 4 } : c));
  assert.notEqual(balancer.pick(aFull, { key: someKey })?.id, 'a');
  assert.equal(balancer.pick(pool, { key: someKey })?.id, 'a');
  // Without a key it balances by connections.
  assert.equal(balancer.pick([agent('p', { inFlight: 2 }), agent('q')])?.id, 'q');
});
