import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EtcdKv } from '../src/kv/etcd.ts';
import { type KvChangeBatch, KvCompactedError } from '../src/kv/kv.ts';
import { EtcdServer } from './etcd-server.ts';

// The etcd KV shares one etcd watch per tenant among its watchers. What etcd itself counts
// (its `etcd_debugging_mvcc_watcher_total` gauge) shows whether they share; the changes
// each watcher gets show that sharing changes nothing they can see.

let etcd: EtcdServer;

before(async () => {
  etcd = await EtcdServer.start();
});

after(async () => {
  await etcd.stop();
});

async function etcdWatchers(): Promise<number> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`)).text();
  const found = /^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text)?.[1];
  assert.ok(found !== undefined, 'etcd reports its watchers');
  return Number(found);
}

/** Waits until etcd counts `expected` watchers, and fails with the last count if it never does. */
async function expectEtcdWatchers(expected: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  let seen = await etcdWatchers();
  while (seen !== expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    seen = await etcdWatchers();
  }
  assert.equal(seen, expected, 'watchers etcd counts');
}

/** A watch read on demand, so that a test decides when it falls behind. */
function open(kv: EtcdKv, tenant: string, prefix: string, from: number) {
  const controller = new AbortController();
  const iterator = kv.watch(tenant, prefix, from, controller.signal)[Symbol.asyncIterator]();
  return {
    async take(count: number): Promise<KvChangeBatch[]> {
      const out: KvChangeBatch[] = [];
      const timer = setTimeout(() => controller.abort(), 10_000);
      try {
        while (out.length < count) {
          const next = await iterator.next();
          if (next.done) break;
          out.push(next.value);
        }
      } finally {
        clearTimeout(timer);
      }
      return out;
    },
    first: iterator.next(),
    async stop(): Promise<void> {
      controller.abort();
      await iterator.return?.();
    },
  };
}

const keysOf = (batches: KvChangeBatch[]) => batches.flatMap((b) => b.changes.map((c) => c.key));

describe('etcd KV: one shared watch per tenant', () => {
  let kv: EtcdKv;
  let base: number;
  before(async () => {
    kv = new EtcdKv({
      endpoints: [etcd.endpoint],
      prefix: '/orchestra-feed/',
      feedRing: 3,
      feedMaxBehind: 5,
    });
    base = await etcdWatchers();
  });
  after(async () => {
    await kv.close();
  });

  const put = async (tenant: string, key: string, value = 'v') =>
    (await kv.txn(tenant, { compare: [], ops: [{ type: 'put', key, value }] })).revision;

  test('watchers of different prefixes share one etcd watch and each get exactly theirs', async () => {
    const from = (await kv.revision('ten-s')) + 1;
    const watches = ['a/', 'b/', 'a/x', ''].flatMap((prefix) =>
      Array.from({ length: 5 }, () => ({ prefix, watch: open(kv, 'ten-s', prefix, from) })),
    );
    await expectEtcdWatchers(base + 1);
    await put('ten-s', 'a/x1');
    await put('ten-s', 'b/1');
    await put('ten-s', 'a/y1');
    await put('ten-s', 'c/1');
    const expected: Record<string, string[]> = {
      'a/': ['a/x1', 'a/y1'],
      'b/': ['b/1'],
      'a/x': ['a/x1'],
      '': ['a/x1', 'b/1', 'a/y1', 'c/1'],
    };
    for (const { prefix, watch } of watches) {
      const first = await watch.first;
      const rest = await watch.take((expected[prefix]?.length ?? 0) - 1);
      assert.deepEqual(
        keysOf([first.value as KvChangeBatch, ...rest]),
        expected[prefix],
        `prefix "${prefix}"`,
      );
    }
    assert.equal(await etcdWatchers(), base + 1, 'still one etcd watch');
    // Another tenant has a shared watch of its own.
    const other = open(kv, 'ten-t', '', (await kv.revision('ten-t')) + 1);
    await expectEtcdWatchers(base + 2);
    await put('ten-t', 'x');
    assert.deepEqual(keysOf([(await other.first).value as KvChangeBatch]), ['x']);
    await other.stop();
    for (const { watch } of watches) await watch.stop();
    // With every watcher gone, the shared watch is cancelled.
    await expectEtcdWatchers(base);
  });

  test('a watcher that falls behind leaves the shared watch and still gets every change in order', async () => {
    const from = (await kv.revision('ten-s')) + 1;
    const fast = open(kv, 'ten-s', 'slow/', from);
    const slow = open(kv, 'ten-s', 'slow/', from);
    await expectEtcdWatchers(base + 1);
    const keys = Array.from({ length: 12 }, (_, i) => `slow/${String(i).padStart(2, '0')}`);
    await put('ten-s', keys[0] ?? '');
    assert.deepEqual(keysOf([(await slow.first).value as KvChangeBatch]), [keys[0]]);
    for (const key of keys.slice(1)) await put('ten-s', key);
    // The fast one reads everything while the slow one reads nothing: past 5 unread batches,
    // the slow one leaves the shared watch, and reads the rest from an etcd watch of its own.
    const fastFirst = (await fast.first).value as KvChangeBatch;
    assert.deepEqual(keysOf([fastFirst, ...(await fast.take(11))]), keys);
    assert.deepEqual(keysOf(await slow.take(11)), keys.slice(1));
    await expectEtcdWatchers(base + 2);
    // And it follows live changes from there.
    const live = await put('ten-s', 'slow/live');
    const [next] = await slow.take(1);
    assert.equal(next?.revision, live);
    await fast.stop();
    await slow.stop();
    await expectEtcdWatchers(base);
  });

  test('a late watcher joins from what the shared watch holds; one from further back reads etcd', async () => {
    const start = (await kv.revision('ten-s')) + 1;
    const first = open(kv, 'ten-s', 'late/', start);
    await expectEtcdWatchers(base + 1);
    const revisions: number[] = [];
    for (let i = 0; i < 6; i++) revisions.push(await put('ten-s', `late/${i}`));
    await first.first;
    assert.equal(keysOf(await first.take(5)).length, 5);
    // The shared watch keeps the last 3 batches: revisions[3] on is there, revisions[1] is not.
    const recent = open(kv, 'ten-s', 'late/', revisions[3] ?? 0);
    const older = open(kv, 'ten-s', 'late/', revisions[1] ?? 0);
    const recentFirst = (await recent.first).value as KvChangeBatch;
    assert.deepEqual(keysOf([recentFirst, ...(await recent.take(2))]), [
      'late/3',
      'late/4',
      'late/5',
    ]);
    const olderFirst = (await older.first).value as KvChangeBatch;
    assert.deepEqual(keysOf([olderFirst, ...(await older.take(4))]), [
      'late/1',
      'late/2',
      'late/3',
      'late/4',
      'late/5',
    ]);
    await expectEtcdWatchers(base + 2);
    const live = await put('ten-s', 'late/6');
    for (const watch of [first, recent, older]) {
      assert.equal((await watch.take(1))[0]?.revision, live);
    }
    for (const watch of [first, recent, older]) await watch.stop();
    await expectEtcdWatchers(base);
  });

  test('a compacted start is refused even when the shared watch saw those revisions', async () => {
    const start = (await kv.revision('ten-s')) + 1;
    const running = open(kv, 'ten-s', 'cmp/', start);
    await expectEtcdWatchers(base + 1);
    const old = await put('ten-s', 'cmp/1');
    const current = await put('ten-s', 'cmp/2');
    assert.equal(((await running.first).value as KvChangeBatch).revision, old);
    await kv.compact('ten-s', current);
    const refused = open(kv, 'ten-s', 'cmp/', old);
    await assert.rejects(refused.first, KvCompactedError);
    // The running watcher goes on.
    assert.equal((await running.take(1))[0]?.revision, current);
    const live = await put('ten-s', 'cmp/3');
    assert.equal((await running.take(1))[0]?.revision, live);
    await running.stop();
    await expectEtcdWatchers(base);
  });

  test('closing the KV with watches still open leaves nothing running: the process exits', async () => {
    // Without cancelling each etcd watch before closing the client, the client retries its
    // watch stream on a timer for ever and the process never exits.
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, 'fixtures/etcd-watch-then-close.ts'), etcd.endpoint],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (d) => {
      output += String(d);
    });
    child.stderr.on('data', (d) => {
      output += String(d);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(timer);
    assert.equal(signal, null, `still running a minute after close: ${output}`);
    assert.equal(code, 0, output);
    assert.match(output, /closed/);
  });
});
