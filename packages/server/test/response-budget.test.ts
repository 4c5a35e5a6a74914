import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../../sdk/test/support.ts';
import { STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';
import { taskOutputs, tenantWithWorker } from './tenant-worker.ts';

/** The budget of these servers: small, so that a few 64 KiB items pass it. */
const BUDGET = 262_144;
const KIB_64 = 65_536;

/** A JSON string value of about `bytes`, different for each `i`. */
const blob = (bytes: number, i: number) => `${i}:`.padEnd(bytes, 'x');

/** Bytes of a response body as the server sent it. */
const sizeOf = (body: unknown) => Buffer.byteLength(JSON.stringify(body));

for (const store of STORE_VARIANTS) {
  describe(`response budget (${store})`, () => {
    let server: TestServer;
    let viewer: string;

    before(async () => {
      server = await startTestServer({
        store,
        env: { ORCHESTRA_RESPONSE_MAX_BYTES: String(BUDGET) },
      });
      const created = await server.call('POST', '/v1/api-keys', {
        body: { name: 'viewer', role: 'viewer' },
      });
      viewer = created.body.secret;
    });
    after(() => server.stop());

    test('topic history ?last=1000 over large messages answered everything at once (500 Invalid string length at 1 MB): now pages within the budget, next_after reaching every message once', async () => {
      const count = 24;
      for (let i = 1; i <= count; i += 1) {
        const published = await server.call('POST', '/v1/topics/big.history/messages', {
          body: { data: blob(KIB_64, i) },
        });
        assert.equal(published.status, 201);
      }
      const seen: number[] = [];
      let query = 'last=1000&limit=1000';
      for (let pages = 0; pages < count + 1; pages += 1) {
        const page = await server.call('GET', `/v1/topics/big.history/messages?${query}`, {
          key: viewer,
        });
        assert.equal(page.status, 200, JSON.stringify(page.body).slice(0, 300));
        assert.ok(page.body.messages.length >= 1, 'every page has a message');
        // The budget, plus at most the one message that passed it.
        assert.ok(sizeOf(page.body) <= BUDGET + KIB_64 + 1024, `page of ${sizeOf(page.body)} B`);
        for (const m of page.body.messages) {
          seen.push(m.offset);
          assert.equal(m.data, blob(KIB_64, m.offset));
        }
        if (page.body.next_after === null) break;
        assert.equal(page.body.next_after, seen[seen.length - 1]);
        query = `after=${page.body.next_after}&limit=1000`;
      }
      assert.deepEqual(
        seen,
        Array.from({ length: count }, (_, i) => i + 1),
      );
    });

    test('a topic message larger than the budget is answered alone on its page, then the rest', async () => {
      for (const bytes of [BUDGET + KIB_64, 1000, 1000]) {
        const published = await server.call('POST', '/v1/topics/big.single/messages', {
          body: { data: 'y'.repeat(bytes) },
        });
        assert.equal(published.status, 201);
      }
      const first = await server.call('GET', '/v1/topics/big.single/messages?after=0', {
        key: viewer,
      });
      assert.equal(first.status, 200);
      assert.deepEqual(
        first.body.messages.map((m: { offset: number }) => m.offset),
        [1],
      );
      assert.equal(first.body.next_after, 1);
      const rest = await server.call('GET', '/v1/topics/big.single/messages?after=1', {
        key: viewer,
      });
      assert.deepEqual(
        rest.body.messages.map((m: { offset: number }) => m.offset),
        [2, 3],
      );
      assert.equal(rest.body.next_after, null);
    });

    test('GET /v1/tasks?limit=200 over large inputs answered them all in one page (208 MB at 1 MB): now pages within the budget, cursors reaching every task once', async () => {
      const capability = `budget-${store}`;
      const ids = new Set<string>();
      for (let i = 0; i < 20; i += 1) {
        const created = await server.call('POST', '/v1/tasks', {
          body: { capabilities: [capability], input: { text: blob(KIB_64, i) } },
        });
        assert.equal(created.status, 201);
        ids.add(created.body.id);
      }
      // One larger than the whole budget: it still comes, alone on its page.
      const huge = await server.call('POST', '/v1/tasks', {
        body: { capabilities: [capability], input: { text: blob(BUDGET + KIB_64, 99) } },
      });
      assert.equal(huge.status, 201);
      ids.add(huge.body.id);

      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `limit=200&${cursor ? `cursor=${cursor}&` : ''}`;
        const page = await server.call('GET', `/v1/tasks?${query}`, { key: viewer });
        assert.equal(page.status, 200);
        assert.ok(page.body.items.length >= 1);
        const isHugeAlone = page.body.items.length === 1 && page.body.items[0].id === huge.body.id;
        if (!isHugeAlone) {
          assert.ok(sizeOf(page.body) <= BUDGET + KIB_64 + 2048, `page of ${sizeOf(page.body)} B`);
        }
        seen.push(...page.body.items.map((t: { id: string }) => t.id));
        cursor = page.body.next_cursor;
        pages += 1;
        assert.ok(pages <= ids.size, 'the cursors end');
      } while (cursor !== null);
      assert.equal(seen.length, ids.size, 'no task twice');
      assert.deepEqual(new Set(seen), ids);
      assert.ok(pages >= 5, `${pages} pages`);
    });

    test('GET /v1/services/{name} answered every instance at once, however large: now pages within the budget, cursors reaching every instance once', async () => {
      const labels = Object.fromEntries(
        Array.from({ length: 50 }, (_, i) => [`label-${i}`, 'v'.repeat(256)]),
      );
      const ids = Array.from({ length: 30 }, (_, i) => `instance-${String(i).padStart(2, '0')}`);
      for (const id of ids) {
        const registered = await server.call('PUT', `/v1/services/big-metadata/instances/${id}`, {
          body: { address: '127.0.0.1', port: 8000, metadata: { labels } },
        });
        assert.equal(registered.status, 201);
      }
      const seen: string[] = [];
      let query = 'all=true';
      for (let pages = 0; pages <= ids.length; pages += 1) {
        const page = await server.call('GET', `/v1/services/big-metadata?${query}`, {
          key: viewer,
        });
        assert.equal(page.status, 200);
        assert.ok(page.body.instances.length >= 1);
        assert.ok(sizeOf(page.body) <= BUDGET + 32_768, `page of ${sizeOf(page.body)} B`);
        seen.push(...page.body.instances.map((i: { id: string }) => i.id));
        if (page.body.next_cursor === null) break;
        query = `all=true&cursor=${page.body.next_cursor}`;
      }
      assert.deepEqual(seen, ids);
    });

    test('templates, config keys and a key’s history answered every item at once: now pages within the budget, cursors reaching every item once', async () => {
      const names = Array.from({ length: 10 }, (_, i) => `budget-${store}-${i}`);
      for (const name of names) {
        const created = await server.call('POST', '/v1/templates', {
          body: { name, capabilities: ['x'], config: { blob: blob(KIB_64, 1) } },
        });
        assert.equal(created.status, 201, JSON.stringify(created.body).slice(0, 200));
      }
      const templates = await followCursors(
        (cursor) => `/v1/templates?limit=200&name_prefix=budget-${store}-${cursor}`,
        (body) => body.items.map((t: { name: string }) => t.name),
      );
      assert.deepEqual(templates.seen, names);
      assert.ok(templates.pages >= 3, `${templates.pages} pages`);

      const keys = Array.from({ length: 8 }, (_, i) => `budget/${store}/k${i}`);
      for (const key of keys) {
        const put = await server.call('PUT', `/v1/config/${key}`, {
          body: { value: blob(100_000, 2) },
        });
        assert.equal(put.status, 201, JSON.stringify(put.body).slice(0, 200));
      }
      const listed = await followCursors(
        (cursor) => `/v1/config?prefix=budget/${store}/&limit=200${cursor}`,
        (body) => body.items.map((i: { key: string }) => i.key),
      );
      assert.deepEqual(listed.seen, keys);
      assert.ok(listed.pages >= 3, `${listed.pages} pages`);

      const key = `budget/${store}/changes`;
      for (let i = 0; i < 8; i += 1) {
        await server.call('PUT', `/v1/config/${key}`, { body: { value: blob(100_000, i) } });
      }
      const versions: number[] = [];
      let query = 'limit=200';
      for (let pages = 0; pages < 10; pages += 1) {
        const page = await server.call('GET', `/v1/config/${key}/history?${query}`, {
          key: viewer,
        });
        assert.equal(page.status, 200);
        assert.ok(sizeOf(page.body) <= BUDGET + 110_000, `page of ${sizeOf(page.body)} B`);
        versions.push(...page.body.items.map((e: { version: number }) => e.version));
        if (page.body.next_before === null) break;
        query = `limit=200&before=${page.body.next_before}`;
      }
      assert.deepEqual(versions, [8, 7, 6, 5, 4, 3, 2, 1]);
    });

    test('config listed at an earlier revision after large changes: the replay reads by the budget and still gives every key as it was', async () => {
      const keys = Array.from({ length: 6 }, (_, i) => `replay/${store}/k${i}`);
      for (const key of keys) {
        await server.call('PUT', `/v1/config/${key}`, { body: { value: blob(100_000, 1) } });
      }
      const { revision } = (await server.call('GET', `/v1/config?prefix=replay/${store}/`)).body;
      for (const key of keys) {
        await server.call('PUT', `/v1/config/${key}`, { body: { value: blob(100_000, 2) } });
      }
      const values: Record<string, unknown> = {};
      let cursor = '';
      for (let pages = 0; pages < 20; pages += 1) {
        const page = await server.call(
          'GET',
          `/v1/config?prefix=replay/${store}/&revision=${revision}${cursor}`,
          { key: viewer },
        );
        assert.equal(page.status, 200, JSON.stringify(page.body).slice(0, 300));
        for (const item of page.body.items) values[item.key] = item.value;
        if (page.body.next_cursor === null) break;
        cursor = `&cursor=${page.body.next_cursor}`;
      }
      assert.deepEqual(values, Object.fromEntries(keys.map((k) => [k, blob(100_000, 1)])));
    });

    test('a task’s event stream read 500 events at a time, however large: now reads by the budget and still ends with every event once, in order', async () => {
      const { tenantKey, worker } = await tenantWithWorker(
        server,
        `budget-events-${store}`,
        'chatty',
        async (_input, context) => {
          for (let i = 0; i < 8; i += 1) context.output(blob(100_000, i));
          return 'done';
        },
      );
      try {
        const task = (
          await server.call('POST', '/v1/tasks?wait=60s', {
            key: tenantKey,
            body: { capabilities: ['chatty'] },
          })
        ).body;
        assert.equal(task.state, 'succeeded');
        const outputs = await taskOutputs(server, task.id, tenantKey);
        assert.deepEqual(
          outputs,
          Array.from({ length: 8 }, (_, i) => blob(100_000, i)),
        );
      } finally {
        await worker.stop();
      }
    });

    /** Follows `next_cursor` from the first page; `path` gets `&cursor=…` (or '') appended. */
    async function followCursors(
      path: (cursor: string) => string,
      idsOf: (body: any) => string[],
    ): Promise<{ seen: string[]; pages: number }> {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await server.call('GET', path(cursor ? `&cursor=${cursor}` : ''), {
          key: viewer,
        });
        assert.equal(page.status, 200, JSON.stringify(page.body).slice(0, 300));
        assert.ok(sizeOf(page.body) <= BUDGET + 110_000, `page of ${sizeOf(page.body)} B`);
        seen.push(...idsOf(page.body));
        cursor = page.body.next_cursor;
        pages += 1;
        assert.ok(pages <= 50, 'the cursors end');
      } while (cursor !== null);
      return { seen, pages };
    }
  });
}

// The store whose reads run on the event loop, where one oversized answer stalls everyone.
describe('noisy neighbour (sqlite)', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({
      env: {
        ORCHESTRA_RESPONSE_MAX_BYTES: String(BUDGET),
        // A short lease, so that a stall of the event loop costs a healthy agent its task.
        ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
        ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '1500',
      },
    });
  });
  after(() => server.stop());

  test('topic history of 1 MB messages stalled the server until another tenant’s healthy agent lost its lease and its task ran again: now the agent keeps it (attempt 1)', async () => {
    const messageBytes = 1_000_000;
    for (let i = 1; i <= 100; i += 1) {
      const published = await server.call('POST', '/v1/topics/noisy.big/messages', {
        body: { data: blob(messageBytes, i) },
      });
      assert.equal(published.status, 201);
    }
    const viewer = (
      await server.call('POST', '/v1/api-keys', { body: { name: 'noisy', role: 'viewer' } })
    ).body.secret;

    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const attempts: number[] = [];
    const { tenantKey, worker } = await tenantWithWorker(
      server,
      'quiet-neighbour',
      'quiet',
      async (_input, context) => {
        attempts.push(context.task.attempt);
        await released;
        return 'done';
      },
    );
    try {
      const task = (
        await server.call('POST', '/v1/tasks', {
          key: tenantKey,
          body: { capabilities: ['quiet'], max_attempts: 3 },
        })
      ).body;
      await eventually('the task running', async () => {
        const current = await server.call('GET', `/v1/tasks/${task.id}`, { key: tenantKey });
        return current.body.state === 'running' ? true : undefined;
      });
      // The attack: a viewer of another tenant asks for the whole history, 4 at a time.
      for (let round = 0; round < Number(process.env.ROUNDS ?? 3); round += 1) {
        const answers = await Promise.all(
          Array.from({ length: 4 }, () =>
            server.call('GET', '/v1/topics/noisy.big/messages?last=1000&limit=1000', {
              key: viewer,
            }),
          ),
        );
        for (const answer of answers) {
          assert.equal(answer.status, 200);
          assert.notEqual(answer.body.next_after, null, 'the rest is behind next_after');
        }
      }
      release();
      const ended = await eventually('the task ending', async () => {
        const current = await server.call('GET', `/v1/tasks/${task.id}`, { key: tenantKey });
        return current.body.state === 'succeeded' ? current.body : undefined;
      });
      assert.equal(ended.attempt, 1, 'the task was never dispatched again');
      assert.deepEqual(attempts, [1]);
    } finally {
      release();
      await worker.stop();
    }
  });
});
