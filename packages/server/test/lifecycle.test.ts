import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Lifecycle } from '../src/platform/lifecycle.ts';

// The server's start registers the stop of every step it takes; a close and a failed start
// both give them back through this, once, last taken first (issue 19, module contract).

test('stops run once, last registered first, and a failing stop does not skip the rest', async () => {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (line: string) => void lines.push(JSON.parse(line)) },
  );
  const lifecycle = new Lifecycle(log);
  const order: string[] = [];
  lifecycle.add('store', () => void order.push('store'));
  lifecycle.add('bus', () => {
    order.push('bus');
    throw new Error('NATS is gone');
  });
  lifecycle.add('http', async () => {
    await new Promise((r) => setTimeout(r, 5));
    order.push('http');
  });
  assert.deepEqual(lifecycle.names, ['store', 'bus', 'http']);
  const [first, second] = [lifecycle.stopAll(), lifecycle.stopAll()];
  assert.equal(first, second, 'a second close waits for the first');
  await first;
  await lifecycle.stopAll();
  assert.deepEqual(order, ['http', 'bus', 'store']);
  assert.deepEqual(
    lines.map((l) => [l.msg, l.step, (l.err as { message: string }).message]),
    [['could not stop bus', 'bus', 'NATS is gone']],
  );
  assert.throws(() => lifecycle.add('late', () => {}), /late: started while stopping/);
});
