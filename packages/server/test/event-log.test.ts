import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { InProcessBus } from '../src/bus/bus.ts';
import { EventLog, type StreamItem } from '../src/events/event-log.ts';
import { migrations } from '../src/modules.ts';
import { openStore, type RelationalStore } from '../src/store/store.ts';
import { createTestDatabase, STORE_VARIANTS, tempDir } from './helpers.ts';

/** The event-log primitive on every store: offsets, replay, follow, retention. */
for (const variant of STORE_VARIANTS) {
  describe(`event log on ${variant}`, () => {
    let store: RelationalStore;
    let log: EventLog;
    let cleanup: () => Promise<void>;

    before(async () => {
      const dir = tempDir();
      const database = variant === 'postgres' ? await createTestDatabase() : undefined;
      store = await openStore({ databaseUrl: database?.url, dataDir: dir.path });
      await store.migrate(migrations);
      const now = new Date().toISOString();
      await store.db
        .insertInto('tenants')
        .values([
          { id: 'ten-a', name: 'A', kind: 'standard', created_at: now },
          { id: 'ten-b', name: 'B', kind: 'standard', created_at: now },
        ])
        .execute();
      const bus = new InProcessBus();
      log = new EventLog({ store, bus });
      cleanup = async () => {
        await bus.close();
        await store.close();
        await database?.drop();
        dir.remove();
      };
    });
    after(() => cleanup());

    const append = (stream: string, ...types: string[]) =>
      log.transaction((_trx, emit) =>
        emit(
          stream,
          'ten-a',
          types.map((type) => ({ type, data: { type } })),
        ),
      );

    async function collect(items: AsyncIterable<StreamItem>, limit = 1000): Promise<StreamItem[]> {
      const out: StreamItem[] = [];
      for await (const item of items) {
        out.push(item);
        if (out.length >= limit) break;
      }
      return out;
    }

    test('assigns consecutive offsets from 1, in one transaction with other writes', async () => {
      const first = await append('s:basic', 'a', 'b');
      const second = await append('s:basic', 'c');
      assert.deepEqual(
        [...first, ...second].map((e) => [e.offset, e.type]),
        [
          [1, 'a'],
          [2, 'b'],
          [3, 'c'],
        ],
      );
      const page = await log.read('ten-a', 's:basic', 0);
      assert.deepEqual(
        page?.events.map((e) => [e.offset, e.type, e.data]),
        [
          [1, 'a', { type: 'a' }],
          [2, 'b', { type: 'b' }],
          [3, 'c', { type: 'c' }],
        ],
      );
      assert.equal(page?.lastOffset, 3);
      assert.deepEqual(
        (await log.read('ten-a', 's:basic', 2))?.events.map((e) => e.offset),
        [3],
      );
    });

    test('a failed transaction appends nothing', async () => {
      await append('s:atomic', 'kept');
      await assert.rejects(
        log.transaction(async (_trx, emit) => {
          await emit('s:atomic', 'ten-a', [{ type: 'lost', data: null }]);
          throw new Error('boom');
        }),
        /boom/,
      );
      const page = await log.read('ten-a', 's:atomic', 0);
      assert.deepEqual(
        page?.events.map((e) => e.type),
        ['kept'],
      );
      assert.equal(page?.lastOffset, 1);
    });

    test('concurrent appends to one stream get distinct, gap-free offsets', async () => {
      await Promise.all(Array.from({ length: 20 }, (_, i) => append('s:race', `e${i}`, `f${i}`)));
      const page = await log.read('ten-a', 's:race', 0);
      assert.deepEqual(
        page?.events.map((e) => e.offset),
        Array.from({ length: 40 }, (_, i) => i + 1),
      );
      // Each transaction's two events are adjacent.
      const events = page?.events ?? [];
      for (let i = 0; i < events.length; i += 2) {
        assert.equal(events[i]?.type.slice(1), events[i + 1]?.type.slice(1));
      }
    });

    test('another tenant cannot read a stream', async () => {
      await append('s:private', 'secret');
      assert.equal(await log.read('ten-b', 's:private', 0), undefined);
      const followed = await collect(
        log.follow('ten-b', 's:private', 0, { signal: AbortSignal.timeout(5000) }),
      );
      assert.deepEqual(followed, []);
    });

    test('follow replays, then delivers live events, and ends at the last one', async () => {
      await append('s:live', 'queued', 'running');
      const seen: StreamItem[] = [];
      for await (const item of log.follow('ten-a', 's:live', 1, {
        signal: AbortSignal.timeout(30_000),
        isLast: (e) => e.type === 'succeeded',
      })) {
        seen.push(item);
        if (seen.length === 1) {
          // Appended while the follower waits: each must arrive, in order, once.
          await append('s:live', 'progress');
          await append('s:live', 'succeeded');
        }
      }
      assert.deepEqual(
        seen.map((e) => ('offset' in e ? [e.offset, e.type] : e.type)),
        [
          [2, 'running'],
          [3, 'progress'],
          [4, 'succeeded'],
        ],
      );
    });

    test('a last event that is not the newest does not end the stream (a retried task)', async () => {
      await append('s:retried', 'failed', 'retried', 'queued');
      const seen: string[] = [];
      const controller = new AbortController();
      for await (const item of log.follow('ten-a', 's:retried', 0, {
        signal: controller.signal,
        isLast: (e) => e.type === 'failed' || e.type === 'succeeded',
      })) {
        seen.push(item.type);
        if (item.type === 'queued') await append('s:retried', 'succeeded');
      }
      assert.deepEqual(seen, ['failed', 'retried', 'queued', 'succeeded']);
    });

    test('endWhenCaughtUp ends a stream once everything was delivered', async () => {
      await append('s:caught-up', 'only');
      let asked = 0;
      const seen: string[] = [];
      for await (const item of log.follow('ten-a', 's:caught-up', 0, {
        signal: AbortSignal.timeout(30_000),
        endWhenCaughtUp: async () => {
          asked += 1;
          return true;
        },
      })) {
        seen.push(item.type);
      }
      assert.deepEqual(seen, ['only']);
      assert.equal(asked, 1);
    });

    test('follow ends quietly when aborted', async () => {
      await append('s:abort', 'only');
      const controller = new AbortController();
      const seen: StreamItem[] = [];
      for await (const item of log.follow('ten-a', 's:abort', 0, { signal: controller.signal })) {
        seen.push(item);
        controller.abort();
      }
      assert.equal(seen.length, 1);
    });

    test('trimmed events are signalled as a gap, then reading continues', async () => {
      await append('s:trim', 'old-1', 'old-2');
      await store.db
        .updateTable('events')
        .set({ created_at: '2000-01-01T00:00:00.000Z' })
        .where('stream_id', '=', 's:trim')
        .execute();
      await append('s:trim', 'new-3');
      const removed = await log.trim(new Date('2001-01-01T00:00:00.000Z'));
      assert.ok(removed >= 2);
      const page = await log.read('ten-a', 's:trim', 0);
      assert.deepEqual(page?.gap, { type: 'stream.gap', after: 0, first_offset: 3 });
      const items = await collect(
        log.follow('ten-a', 's:trim', 0, {
          signal: AbortSignal.timeout(30_000),
          isLast: (e) => e.type === 'new-3',
        }),
      );
      assert.deepEqual(
        items.map((i) => i.type),
        ['stream.gap', 'new-3'],
      );
      // Reading after the trimmed range needs no gap.
      assert.equal((await log.read('ten-a', 's:trim', 2))?.gap, undefined);
    });
  });
}
