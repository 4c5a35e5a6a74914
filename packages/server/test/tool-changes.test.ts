import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import pino from 'pino';
import { InProcessBus } from '../src/bus/bus.ts';
import { NatsBus } from '../src/bus/nats.ts';
import { TenantMemo, ToolChanges } from '../src/tools/index.ts';

// The change notices of a tenant's tools, policies and views, and the per-tenant memo that
// the call path reads through: what is kept, and when it is dropped.

const NATS_URL = process.env.ORCHESTRA_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A loader that counts its loads and answers `value()`. */
function counted<V>(value: () => V) {
  const loader = {
    loads: 0,
    load: async () => {
      loader.loads += 1;
      return value();
    },
  };
  return loader;
}

describe('tool change notices and the tenant memo', () => {
  test('a value is read once, and again after a notice for its tenant only', async () => {
    const changes = new ToolChanges(new InProcessBus());
    const memo = new TenantMemo<string>(changes);
    let version = 1;
    const a = counted(() => `a${version}`);
    const b = counted(() => `b${version}`);
    assert.equal(await memo.get('t1', 'k', a.load), 'a1');
    assert.equal(await memo.get('t1', 'k', a.load), 'a1');
    assert.equal(await memo.get('t2', 'k', b.load), 'b1');
    assert.equal(a.loads, 1);
    version = 2;
    // The in-process bus delivers during the write: the next read already sees the change.
    changes.changed('t1');
    assert.equal(await memo.get('t1', 'k', a.load), 'a2');
    assert.equal(await memo.get('t2', 'k', b.load), 'b1', "another tenant's value is kept");
    assert.deepEqual([a.loads, b.loads], [2, 1]);
    memo.close();
    changes.close();
  });

  test('a value loaded while a notice arrives is not kept', async () => {
    const changes = new ToolChanges(new InProcessBus());
    const memo = new TenantMemo<number>(changes);
    let loads = 0;
    const first = memo.get('t', 'k', async () => {
      loads += 1;
      changes.changed('t'); // the tenant changes while this load reads the old value
      return 1;
    });
    assert.equal(await first, 1);
    assert.equal(await memo.get('t', 'k', async () => ++loads), 2);
    assert.equal(await memo.get('t', 'k', async () => ++loads), 2);
    memo.close();
    changes.close();
  });

  test('a kept value expires after 5 s even when no notice comes', async () => {
    const changes = new ToolChanges(new InProcessBus());
    let now = 1_000_000;
    const memo = new TenantMemo<number>(changes, () => now);
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await memo.get('t', 'k', load), 1);
    now += 4_999;
    assert.equal(await memo.get('t', 'k', load), 1);
    now += 2;
    assert.equal(await memo.get('t', 'k', load), 2);
    memo.close();
    changes.close();
  });

  test('a tenant keeps 1,000 values at most: unknown names cannot grow it without end', async () => {
    const changes = new ToolChanges(new InProcessBus());
    const memo = new TenantMemo<null>(changes);
    for (let i = 0; i < 1_500; i += 1) await memo.get('t', `missing-${i}`, async () => null);
    assert.equal(memo.size('t'), 1_000);
    let loads = 0;
    // The newest are the ones kept.
    await memo.get('t', 'missing-1499', async () => {
      loads += 1;
      return null;
    });
    await memo.get('t', 'missing-0', async () => {
      loads += 1;
      return null;
    });
    assert.equal(loads, 1);
    memo.close();
    changes.close();
  });

  test('listeners hear one notice for changes close together', async () => {
    const changes = new ToolChanges(new InProcessBus());
    let heard = 0;
    const stop = changes.listen('t', () => {
      heard += 1;
    });
    changes.changed('t');
    changes.changed('t');
    changes.changed('other');
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(heard, 1);
    stop();
    changes.changed('t');
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(heard, 1, 'nothing after the listener stopped');
    changes.close();
  });

  test('over NATS, a change on one node drops what another node kept', async () => {
    const prefix = `test-${randomUUID()}`;
    const log = pino({ level: 'silent' });
    const connect = (name: string) =>
      NatsBus.connect({ servers: [NATS_URL], prefix, name: `orchestra test ${name}`, log });
    const busA = await connect('a');
    const busB = await connect('b');
    const [a, b] = [new ToolChanges(busA), new ToolChanges(busB)] as const;
    const memo = new TenantMemo<number>(b);
    try {
      let loads = 0;
      const load = async () => ++loads;
      assert.equal(await memo.get('t', 'k', load), 1);
      // The subscription is in place once NATS has seen it: a round trip makes sure.
      await busB.ping(5_000);
      a.changed('t');
      const deadline = Date.now() + 10_000;
      while ((await memo.get('t', 'k', load)) === 1) {
        if (Date.now() > deadline) assert.fail('the notice never reached the other node');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(loads, 2);
    } finally {
      memo.close();
      a.close();
      b.close();
      await Promise.all([busA.close(), busB.close()]);
    }
  });
});
