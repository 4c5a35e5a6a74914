import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { InProcessBus } from '../src/bus/bus.ts';
import { EventLog } from '../src/events/event-log.ts';
import { EmbeddedKv } from '../src/kv/embedded.ts';
import { EtcdKv } from '../src/kv/etcd.ts';
import {
  type KvChangeBatch,
  KvCompactedError,
  KvLeaseNotFoundError,
  type KvStore,
} from '../src/kv/kv.ts';
import { migrations } from '../src/modules.ts';
import { openStore } from '../src/store/store.ts';
import { EtcdServer } from './etcd-server.ts';
import { createTestDatabase, tempDir } from './helpers.ts';

// One contract for both KV adapters: the embedded one (on SQLite and on PostgreSQL) and
// etcd v3 against a real etcd server.

const VARIANTS = ['embedded-sqlite', 'embedded-postgres', 'etcd'] as const;

async function openKv(
  variant: (typeof VARIANTS)[number],
): Promise<{ kv: KvStore; close: () => Promise<void> }> {
  if (variant === 'etcd') {
    const etcd = await EtcdServer.start();
    const kv = new EtcdKv({ endpoints: [etcd.endpoint], prefix: '/orchestra-test/' });
    return {
      kv,
      close: async () => {
        await kv.close();
        await etcd.stop();
      },
    };
  }
  const dir = tempDir();
  const database = variant === 'embedded-postgres' ? await createTestDatabase() : undefined;
  const store = await openStore({ databaseUrl: database?.url, dataDir: dir.path });
  await store.migrate(migrations);
  const now = new Date().toISOString();
  await store.db
    .insertInto('tenants')
    .values(
      ['ten-a', 'ten-b', 'ten-m'].map((id) => ({
        id,
        name: id,
        kind: 'standard',
        created_at: now,
      })),
    )
    .execute();
  const bus = new InProcessBus();
  const kv = new EmbeddedKv({
    store,
    events: new EventLog({ store, bus }),
    bus,
    log: pino({ level: 'silent' }),
    retainedRevisions: 100_000,
  });
  kv.start();
  return {
    kv,
    close: async () => {
      await kv.close();
      await bus.close();
      await store.close();
      await database?.drop();
      dir.remove();
    },
  };
}

/** Reads a watch until `count` batches arrived (or `timeoutMs` passed), then stops it. */
async function collect(
  kv: KvStore,
  tenant: string,
  prefix: string,
  from: number,
  count: number,
  timeoutMs = 10_000,
): Promise<KvChangeBatch[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const out: KvChangeBatch[] = [];
  try {
    for await (const batch of kv.watch(tenant, prefix, from, controller.signal)) {
      out.push(batch);
      if (out.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return out;
}

const put = (kv: KvStore, tenant: string, key: string, value: string, lease?: string) =>
  kv.txn(tenant, {
    compare: [],
    ops: [{ type: 'put', key, value, ...(lease ? { lease } : {}) }],
  });

for (const variant of VARIANTS) {
  describe(`KV contract: ${variant}`, () => {
    let kv: KvStore;
    let close: () => Promise<void>;
    before(async () => {
      ({ kv, close } = await openKv(variant));
    });
    after(() => close());

    test('puts and deletes: versions, revisions, compare-and-set', async () => {
      const first = await put(kv, 'ten-a', 'cas/x', '1');
      assert.equal(first.succeeded, true);
      const created = await kv.get('ten-a', 'cas/x');
      assert.equal(created?.value, '1');
      assert.equal(created?.version, 1);
      assert.equal(created?.createRevision, first.revision);
      assert.equal(created?.modRevision, first.revision);

      // Compare on the version: the right one wins, a stale one changes nothing.
      const second = await kv.txn('ten-a', {
        compare: [{ key: 'cas/x', version: 1 }],
        ops: [{ type: 'put', key: 'cas/x', value: '2' }],
      });
      assert.equal(second.succeeded, true);
      assert.ok(second.revision > first.revision);
      const stale = await kv.txn('ten-a', {
        compare: [{ key: 'cas/x', version: 1 }],
        ops: [{ type: 'put', key: 'cas/x', value: 'stale' }],
      });
      assert.equal(stale.succeeded, false);
      const now = await kv.get('ten-a', 'cas/x');
      assert.equal(now?.value, '2');
      assert.equal(now?.version, 2);
      assert.equal(now?.createRevision, first.revision);
      // Version 0 means "absent": create-only.
      assert.equal(
        (
          await kv.txn('ten-a', {
            compare: [{ key: 'cas/x', version: 0 }],
            ops: [{ type: 'put', key: 'cas/x', value: 'again' }],
          })
        ).succeeded,
        false,
      );
      // Compare on the revision of the last change.
      assert.equal(
        (
          await kv.txn('ten-a', {
            compare: [{ key: 'cas/x', modRevision: second.revision }],
            ops: [{ type: 'delete', key: 'cas/x' }],
          })
        ).succeeded,
        true,
      );
      assert.equal(await kv.get('ten-a', 'cas/x'), undefined);
      const recreated = await put(kv, 'ten-a', 'cas/x', '3');
      const back = await kv.get('ten-a', 'cas/x');
      assert.equal(back?.version, 1, 'a re-created key starts at version 1');
      assert.equal(back?.createRevision, recreated.revision);
      assert.ok((await kv.revision('ten-a')) >= recreated.revision);
    });

    test('a transaction changes several keys at one revision, or none', async () => {
      const both = await kv.txn('ten-a', {
        compare: [{ key: 'multi/a', version: 0 }],
        ops: [
          { type: 'put', key: 'multi/a', value: 'a' },
          { type: 'put', key: 'multi/b', value: 'b' },
        ],
      });
      assert.equal(both.succeeded, true);
      assert.equal((await kv.get('ten-a', 'multi/a'))?.modRevision, both.revision);
      assert.equal((await kv.get('ten-a', 'multi/b'))?.modRevision, both.revision);
      const none = await kv.txn('ten-a', {
        compare: [{ key: 'multi/a', version: 0 }],
        ops: [{ type: 'put', key: 'multi/c', value: 'c' }],
      });
      assert.equal(none.succeeded, false);
      assert.equal(await kv.get('ten-a', 'multi/c'), undefined);
    });

    test('range: prefix, byte order, pages, and the keys as they were at a revision', async () => {
      for (const key of ['r/b', 'r/a', 'r/a/1', 'r/c', 'r/B', 'rx'])
        await put(kv, 'ten-a', key, key);
      const all = await kv.range('ten-a', { prefix: 'r/', limit: 100 });
      assert.deepEqual(
        all.entries.map((e) => e.key),
        ['r/B', 'r/a', 'r/a/1', 'r/b', 'r/c'],
      );
      assert.equal(all.more, false);
      const page1 = await kv.range('ten-a', { prefix: 'r/', limit: 2 });
      assert.deepEqual(
        page1.entries.map((e) => e.key),
        ['r/B', 'r/a'],
      );
      assert.equal(page1.more, true);
      const page2 = await kv.range('ten-a', {
        prefix: 'r/',
        limit: 2,
        after: 'r/a',
        revision: page1.revision,
      });
      assert.deepEqual(
        page2.entries.map((e) => e.key),
        ['r/a/1', 'r/b'],
      );

      // Change things after page 1: a page at its revision still shows the old state.
      const at = all.revision;
      await kv.txn('ten-a', { compare: [], ops: [{ type: 'delete', key: 'r/b' }] });
      await put(kv, 'ten-a', 'r/a', 'changed');
      await put(kv, 'ten-a', 'r/aa', 'new');
      const then = await kv.range('ten-a', { prefix: 'r/', limit: 100, revision: at });
      assert.deepEqual(
        then.entries.map((e) => [e.key, e.value]),
        [
          ['r/B', 'r/B'],
          ['r/a', 'r/a'],
          ['r/a/1', 'r/a/1'],
          ['r/b', 'r/b'],
          ['r/c', 'r/c'],
        ],
      );
      assert.equal(then.revision, at);
      const thenPaged = await kv.range('ten-a', { prefix: 'r/', limit: 3, revision: at });
      assert.deepEqual(
        thenPaged.entries.map((e) => e.key),
        ['r/B', 'r/a', 'r/a/1'],
      );
      assert.equal(thenPaged.more, true);
      const now = await kv.range('ten-a', { prefix: 'r/', limit: 100 });
      assert.deepEqual(
        now.entries.map((e) => [e.key, e.value]),
        [
          ['r/B', 'r/B'],
          ['r/a', 'changed'],
          ['r/a/1', 'r/a/1'],
          ['r/aa', 'new'],
          ['r/c', 'r/c'],
        ],
      );
    });

    test('count: the keys that start with a prefix now, in this tenant only', async () => {
      for (const key of ['cnt/a', 'cnt/b', 'cnt/b/c', 'cnt0', 'cnu/x'])
        await put(kv, 'ten-a', key, '1');
      await put(kv, 'ten-b', 'cnt/z', '1');
      assert.equal(await kv.count('ten-a', 'cnt/'), 3);
      assert.equal(await kv.count('ten-a', 'cnt'), 4);
      assert.equal(await kv.count('ten-a', 'nothing/'), 0);
      await kv.txn('ten-a', { compare: [], ops: [{ type: 'delete', key: 'cnt/a' }] });
      assert.equal(await kv.count('ten-a', 'cnt/'), 2);
      assert.equal(await kv.count('ten-b', 'cnt/'), 1);
      await kv.txn('ten-b', { compare: [], ops: [{ type: 'delete', key: 'cnt/z' }] });
    });

    test('folders: the names under a prefix with their key counts, in key order, paged, per tenant', async () => {
      for (const key of [
        'f/prod/a',
        'f/prod/b/c',
        'f/dev/x',
        'f/prod-eu/y',
        'f/loose',
        'f/staging/z',
        'f/_/1',
        'fg/not-under/f',
        'g/other/q',
      ])
        await put(kv, 'ten-a', key, '1');
      await put(kv, 'ten-b', 'f/theirs/k', '1');
      // `prod-eu/` sorts before `prod/` ('-' before '/'); `f/loose` is in no folder.
      const expected = [
        { name: '_', keys: 1 },
        { name: 'dev', keys: 1 },
        { name: 'prod-eu', keys: 1 },
        { name: 'prod', keys: 2 },
        { name: 'staging', keys: 1 },
      ];
      assert.deepEqual(await kv.folders('ten-a', { prefix: 'f/', limit: 100 }), {
        folders: expected,
        more: false,
      });
      const pages = [];
      let after: string | undefined;
      for (;;) {
        const page = await kv.folders('ten-a', {
          prefix: 'f/',
          limit: 2,
          ...(after !== undefined ? { after } : {}),
        });
        pages.push(page.folders.map((f) => f.name));
        if (!page.more) break;
        after = page.folders.at(-1)?.name;
      }
      assert.deepEqual(pages, [['_', 'dev'], ['prod-eu', 'prod'], ['staging']]);
      assert.deepEqual(await kv.folders('ten-a', { prefix: 'f/prod/', limit: 10 }), {
        folders: [{ name: 'b', keys: 1 }],
        more: false,
      });
      assert.deepEqual(await kv.folders('ten-a', { prefix: 'nothing/', limit: 10 }), {
        folders: [],
        more: false,
      });
      // A folder goes with its last key; another tenant's folders are its own.
      await kv.txn('ten-a', { compare: [], ops: [{ type: 'delete', key: 'f/dev/x' }] });
      await kv.txn('ten-a', { compare: [], ops: [{ type: 'delete', key: 'f/prod/a' }] });
      assert.deepEqual(
        (await kv.folders('ten-a', { prefix: 'f/', limit: 100 })).folders,
        expected
          .filter((f) => f.name !== 'dev')
          .map((f) => (f.name === 'prod' ? { ...f, keys: 1 } : f)),
      );
      assert.deepEqual(await kv.folders('ten-b', { prefix: 'f/', limit: 100 }), {
        folders: [{ name: 'theirs', keys: 1 }],
        more: false,
      });
      await kv.txn('ten-b', { compare: [], ops: [{ type: 'delete', key: 'f/theirs/k' }] });
    });

    test('watch replays from a revision, then follows live, one batch per revision', async () => {
      const start = await put(kv, 'ten-a', 'w/1', 'one');
      await put(kv, 'ten-a', 'other/1', 'not watched');
      const pair = await kv.txn('ten-a', {
        compare: [],
        ops: [
          { type: 'put', key: 'w/1', value: 'uno' },
          { type: 'put', key: 'w/2', value: 'two' },
        ],
      });
      const watching = collect(kv, 'ten-a', 'w/', start.revision, 4);
      // Live changes, after the watch has started.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const del = await kv.txn('ten-a', { compare: [], ops: [{ type: 'delete', key: 'w/2' }] });
      const last = await put(kv, 'ten-a', 'w/3', 'three');
      const batches = await watching;
      assert.deepEqual(
        batches.map((b) => b.revision),
        [start.revision, pair.revision, del.revision, last.revision],
      );
      assert.deepEqual(batches[0]?.changes, [
        { type: 'put', key: 'w/1', value: 'one', version: 1, revision: start.revision },
      ]);
      assert.deepEqual(
        batches[1]?.changes.map((c) => [c.type, c.key, c.value, c.prevValue, c.version]),
        [
          ['put', 'w/1', 'uno', 'one', 2],
          ['put', 'w/2', 'two', undefined, 1],
        ],
      );
      assert.deepEqual(
        batches[2]?.changes.map((c) => [c.type, c.key, c.value, c.prevValue]),
        [['delete', 'w/2', undefined, 'two']],
      );

      // Resuming after any revision gives exactly what followed it.
      const resumed = await collect(kv, 'ten-a', 'w/', pair.revision + 1, 2);
      assert.deepEqual(
        resumed.map((b) => b.revision),
        [del.revision, last.revision],
      );
    });

    test('many watchers at once, starting before, at and after each other, each get exactly theirs', async () => {
      const early = await put(kv, 'ten-m', 'm/a/0', 'early');
      // A long-lived watcher of everything, started now.
      const everything = collect(kv, 'ten-m', '', early.revision + 1, 6);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const revisions: number[] = [];
      for (let i = 1; i <= 3; i++) {
        revisions.push((await put(kv, 'ten-m', `m/${i % 2 ? 'a' : 'b'}/${i}`, `v${i}`)).revision);
      }
      // Watchers that start in the past (before and within what the first has seen) and now.
      const fromEarly = collect(kv, 'ten-m', 'm/a/', early.revision, 4);
      const fromMiddle = collect(kv, 'ten-m', 'm/', revisions[1] ?? 0, 5);
      const fromNow = collect(kv, 'ten-m', 'm/b/', (revisions[2] ?? 0) + 1, 1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (let i = 4; i <= 6; i++) {
        revisions.push((await put(kv, 'ten-m', `m/${i % 2 ? 'a' : 'b'}/${i}`, `v${i}`)).revision);
      }
      const keys = (batches: KvChangeBatch[]) =>
        batches.flatMap((b) => b.changes.map((c) => c.key));
      assert.deepEqual(keys(await everything), [
        'm/a/1',
        'm/b/2',
        'm/a/3',
        'm/b/4',
        'm/a/5',
        'm/b/6',
      ]);
      assert.deepEqual(keys(await fromEarly), ['m/a/0', 'm/a/1', 'm/a/3', 'm/a/5']);
      assert.deepEqual(keys(await fromMiddle), ['m/b/2', 'm/a/3', 'm/b/4', 'm/a/5', 'm/b/6']);
      assert.deepEqual(keys(await fromNow), ['m/b/4']);
      // With every watcher gone, a new one works as the first did.
      const later = collect(kv, 'ten-m', 'm/', (revisions[5] ?? 0) + 1, 1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const last = await put(kv, 'ten-m', 'm/c/7', 'v7');
      assert.deepEqual(
        (await later).map((b) => b.revision),
        [last.revision],
      );
    });

    test('a compacted revision is refused to watch and to range, with KvCompactedError', async () => {
      const old = await put(kv, 'ten-a', 'c/1', 'a');
      await put(kv, 'ten-a', 'c/1', 'b');
      const current = await put(kv, 'ten-a', 'c/1', 'c');
      await kv.compact('ten-a', current.revision);
      await assert.rejects(collect(kv, 'ten-a', 'c/', old.revision, 1), KvCompactedError);
      await assert.rejects(
        kv.range('ten-a', { prefix: 'c/', limit: 10, revision: old.revision }),
        KvCompactedError,
      );
      // From the compaction on, everything works.
      const from = await collect(kv, 'ten-a', 'c/', current.revision, 1);
      assert.equal(from[0]?.changes[0]?.value, 'c');
    });

    test('leases: keys go when the lease expires or is revoked, and stay while kept alive', async () => {
      const lease = await kv.grantLease('ten-a', 1000);
      assert.ok(lease.ttlMs >= 1000);
      await put(kv, 'ten-a', 'l/kept', 'v', lease.id);
      assert.equal((await kv.get('ten-a', 'l/kept'))?.lease, lease.id);
      const watch = collect(kv, 'ten-a', 'l/', (await kv.revision('ten-a')) + 1, 1, 30_000);
      // Kept alive past its TTL, it stays.
      const keepUntil = Date.now() + lease.ttlMs + 1000;
      while (Date.now() < keepUntil) {
        assert.ok(await kv.keepAlive('ten-a', lease.id), 'keep-alive succeeds');
        await new Promise((resolve) => setTimeout(resolve, lease.ttlMs / 4));
      }
      assert.ok(await kv.get('ten-a', 'l/kept'), 'kept alive: still there');
      const info = await kv.lease('ten-a', lease.id);
      assert.ok(info && info.remainingMs > 0 && info.remainingMs <= info.ttlMs);
      // No more keep-alives: gone within TTL + 1 s, and the watch sees the delete.
      const stopped = Date.now();
      const [gone] = await watch;
      assert.deepEqual(
        gone?.changes.map((c) => [c.type, c.key, c.prevValue]),
        [['delete', 'l/kept', 'v']],
      );
      assert.ok(
        Date.now() - stopped <= lease.ttlMs + 1000 + 1000,
        'deleted about TTL after the last keep-alive',
      );
      assert.equal(await kv.get('ten-a', 'l/kept'), undefined);
      assert.equal(await kv.keepAlive('ten-a', lease.id), undefined);
      assert.equal(await kv.lease('ten-a', lease.id), undefined);
      await assert.rejects(put(kv, 'ten-a', 'l/late', 'v', lease.id), KvLeaseNotFoundError);

      const revoked = await kv.grantLease('ten-a', 60_000);
      await put(kv, 'ten-a', 'l/revoked', 'v', revoked.id);
      assert.equal(await kv.revokeLease('ten-a', revoked.id), true);
      assert.equal(await kv.get('ten-a', 'l/revoked'), undefined);
      assert.equal(await kv.revokeLease('ten-a', revoked.id), false);
    });

    test('tenants never see each other’s keys, changes or leases', async () => {
      await put(kv, 'ten-a', 'iso/secret', 'a');
      const lease = await kv.grantLease('ten-a', 60_000);
      const bWatch = collect(kv, 'ten-b', 'iso/', (await kv.revision('ten-b')) + 1, 1, 1500);
      await put(kv, 'ten-a', 'iso/live', 'a');
      assert.equal(await kv.get('ten-b', 'iso/secret'), undefined);
      assert.deepEqual((await kv.range('ten-b', { prefix: '', limit: 100 })).entries, []);
      assert.deepEqual(await bWatch, []);
      assert.equal(await kv.lease('ten-b', lease.id), undefined);
      assert.equal(await kv.keepAlive('ten-b', lease.id), undefined);
      assert.equal(await kv.revokeLease('ten-b', lease.id), false);
      await assert.rejects(put(kv, 'ten-b', 'iso/x', 'b', lease.id), KvLeaseNotFoundError);
      assert.ok(await kv.lease('ten-a', lease.id), 'still A’s');
      await kv.revokeLease('ten-a', lease.id);
    });
  });
}
