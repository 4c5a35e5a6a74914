import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { InProcessBus } from '../src/bus/bus.ts';
import { EventLog } from '../src/events/event-log.ts';
import { startServer } from '../src/server.ts';
import {
  createTestDatabase,
  expectError,
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
  tempDir,
  testSettings,
} from './helpers.ts';

interface Item {
  offset?: number;
  type: string;
  data?: any;
}

/** Reads an NDJSON event stream to its end (the server ends it after the terminal event). */
async function readStream(
  server: TestServer,
  taskId: string,
  options: { headers?: Record<string, string>; query?: string; key?: string } = {},
): Promise<{ status: number; contentType: string | null; text: string }> {
  const res = await fetch(`${server.url}/v1/tasks/${taskId}/events${options.query ?? ''}`, {
    headers: { authorization: `Bearer ${options.key ?? server.adminKey}`, ...options.headers },
    signal: AbortSignal.timeout(30_000),
  });
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    text: await res.text(),
  };
}

const ndjson = (text: string): Item[] =>
  text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Item);

for (const store of STORE_VARIANTS) {
  describe(`tasks API on ${store}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store });
      const template = await server.call('POST', '/v1/templates', {
        body: {
          name: 'summarise',
          capabilities: ['llm'],
          input_schema: {
            type: 'object',
            required: ['text'],
            properties: { text: { type: 'string' } },
          },
          default_priority: 7,
          default_max_attempts: 5,
          default_timeout_ms: 60_000,
          strategy: 'round_robin',
        },
      });
      assert.equal(template.status, 201);
    });
    after(() => server.stop());

    const submit = (
      body: Record<string, unknown>,
      options: { key?: string; query?: string } = {},
    ) =>
      server.call('POST', `/v1/tasks${options.query ?? ''}`, {
        body,
        ...(options.key ? { key: options.key } : {}),
      });

    /** Makes a task look as an agent left it, as the agent pool will (not built yet). */
    const setState = (id: string, state: string) =>
      server.store.db
        .updateTable('tasks')
        .set({ state: state as 'running', finished_at: null })
        .where('id', '=', id)
        .execute();

    test('a task from a template takes its defaults and capabilities, and starts queued', async () => {
      const res = await submit({
        template: 'summarise',
        input: { text: 'hello' },
        capabilities: ['gpu'],
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      const t = res.body;
      assert.match(t.id, /^tsk_/);
      assert.deepEqual(
        [t.state, t.attempt, t.priority, t.max_attempts, t.timeout_ms, t.strategy],
        ['queued', 0, 7, 5, 60_000, 'round_robin'],
      );
      assert.deepEqual(t.capabilities, ['llm', 'gpu']);
      assert.deepEqual(t.template.name, 'summarise');
      assert.equal(t.template.version, 1);
      assert.deepEqual(t.input, { text: 'hello' });
      assert.deepEqual((await server.call('GET', `/v1/tasks/${t.id}`)).body, t);
      const head = await server.call('GET', `/v1/tasks/${t.id}?wait=10ms`);
      assert.equal(head.body.state, 'queued');
    });

    test('a task can be routed by capabilities alone; it needs one or the other', async () => {
      const res = await submit({ capabilities: ['shell'], input: [1, 2, 3], priority: -3 });
      assert.equal(res.status, 201);
      assert.deepEqual(
        [res.body.template, res.body.priority, res.body.input],
        [null, -3, [1, 2, 3]],
      );
      const neither = expectError(await submit({ input: {} }), 400, 'VALIDATION_FAILED');
      assert.equal(neither.details.fields[0].field, 'body.template');
      const versionOnly = expectError(
        await submit({ capabilities: ['x'], template_version: 2 }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(versionOnly.details.fields[0].field, 'body.template_version');
    });

    test('input is checked against the template version the task uses', async () => {
      await server.call('POST', '/v1/templates', {
        body: {
          name: 'strict',
          input_schema: { type: 'object', properties: { n: { type: 'integer' } } },
        },
      });
      await server.call('PUT', '/v1/templates/strict', {
        body: {
          input_schema: {
            type: 'object',
            required: ['n'],
            properties: { n: { type: 'integer', minimum: 10 } },
          },
        },
      });
      const onLatest = expectError(
        await submit({ template: 'strict', input: { n: 3 } }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(onLatest.details.fields[0].field, 'body.input');
      assert.match(onLatest.message, /input schema of strict v2: \/n must be >= 10/);
      const pinned = await submit({ template: 'strict', template_version: 1, input: { n: 3 } });
      assert.equal(pinned.status, 201);
      assert.equal(pinned.body.template.version, 1);
      const unknownVersion = expectError(
        await submit({ template: 'strict', template_version: 9, input: {} }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(unknownVersion.details.fields[0].field, 'body.template_version');
      const unknown = expectError(
        await submit({ template: 'no-such', input: {} }),
        400,
        'VALIDATION_FAILED',
      );
      assert.match(unknown.message, /no template "no-such"/);
      expectError(await submit({ capabilities: ['x'], priority: 5000 }), 400, 'VALIDATION_FAILED');
      expectError(await submit({ capabilities: ['x'], surprise: 1 }), 400, 'VALIDATION_FAILED');
    });

    test('the same idempotency key gives the same task, also when submitted concurrently', async () => {
      const first = await submit({
        capabilities: ['x'],
        idempotency_key: `once-${store}`,
        input: 'first',
      });
      assert.equal(first.status, 201);
      const again = await submit({
        capabilities: ['x'],
        idempotency_key: `once-${store}`,
        input: 'second',
      });
      assert.equal(again.status, 200);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal(again.body.id, first.body.id);
      assert.equal(again.body.input, 'first');
      const racing = await Promise.all(
        Array.from({ length: 10 }, () =>
          submit({ capabilities: ['x'], idempotency_key: `race-${store}` }),
        ),
      );
      assert.equal(new Set(racing.map((r) => r.body.id)).size, 1);
      assert.deepEqual(racing.filter((r) => r.status === 201).length, 1);
      const stored = await server.store.db
        .selectFrom('tasks')
        .select('id')
        .where('idempotency_key', '=', `race-${store}`)
        .execute();
      assert.equal(stored.length, 1);
    });

    test('a batch submits each task as a single submit would, in order, and reports each outcome', async () => {
      const used = await submit({ capabilities: ['x'], idempotency_key: `batch-used-${store}` });
      const session = await server.call('POST', '/v1/sessions', {
        body: { multitask_strategy: 'reject' },
      });
      const res = await server.call('POST', '/v1/tasks/batch', {
        body: {
          tasks: [
            { template: 'summarise', input: { text: 'one' } },
            { template: 'summarise', input: { wrong: true } },
            { capabilities: ['x'], idempotency_key: `batch-used-${store}`, input: 'ignored' },
            { capabilities: ['x'], input: 'four', labels: { batch: store } },
            { template: 'no-such' },
            { capabilities: ['x'], session_id: session.body.id, input: 'in session' },
            { capabilities: ['x'], session_id: session.body.id, input: 'refused: session busy' },
            { capabilities: ['x'], idempotency_key: `batch-new-${store}`, input: 'first' },
            { capabilities: ['x'], idempotency_key: `batch-new-${store}`, input: 'second' },
          ],
        },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const items = res.body.items as { status: number; task?: any; error?: any }[];
      assert.deepEqual(
        items.map((i) => i.status),
        [201, 400, 200, 201, 400, 201, 409, 201, 200],
      );
      assert.equal(items[0]?.task.template.name, 'summarise');
      assert.equal(items[1]?.error.code, 'VALIDATION_FAILED');
      assert.equal(items[1]?.error.details.fields[0].field, 'body.tasks.1.input');
      assert.match(items[1]?.error.message, /^body\.tasks\.1\.input: does not match/);
      assert.equal(items[2]?.task.id, used.body.id);
      assert.deepEqual(items[3]?.task.labels, { batch: store });
      assert.match(items[4]?.error.message, /^body\.tasks\.4\.template: no template "no-such"/);
      assert.equal(items[6]?.error.code, 'SESSION_BUSY');
      assert.equal(items[8]?.task.id, items[7]?.task.id);
      assert.equal(items[8]?.task.input, 'first');
      // Stored, in the order given: ids follow it, and each task reads back as returned.
      const created = items.filter((i) => i.status === 201).map((i) => i.task);
      assert.deepEqual(
        created.map((t) => t.id),
        created.map((t) => t.id).toSorted(),
      );
      for (const task of created) {
        assert.deepEqual((await server.call('GET', `/v1/tasks/${task.id}`)).body, task);
      }
    });

    test('a batch that does not match the schema is refused whole, and stores nothing', async () => {
      const before = await server.call('GET', '/v1/tasks?limit=200');
      const tooMany = Array.from({ length: 501 }, () => ({ capabilities: ['x'] }));
      for (const body of [
        { tasks: [] },
        { tasks: tooMany },
        { tasks: [{ capabilities: ['x'] }, { capabilities: ['x'], priority: 'high' }] },
        { tasks: [{ capabilities: ['x'] }], extra: 1 },
        {},
      ]) {
        const error = expectError(
          await server.call('POST', '/v1/tasks/batch', { body }),
          400,
          'VALIDATION_FAILED',
        );
        assert.match(error.details.fields[0].field, /^body/);
      }
      const bad = expectError(
        await server.call('POST', '/v1/tasks/batch', {
          body: { tasks: [{ capabilities: ['x'] }, { capabilities: ['x'], priority: 'high' }] },
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(bad.details.fields[0].field, 'body.tasks.1.priority');
      const afterwards = await server.call('GET', '/v1/tasks?limit=200');
      assert.deepEqual(afterwards.body.items, before.body.items);
    });

    test('lists newest first, page by page, filtered by state, template, label and time', async () => {
      const since = new Date().toISOString();
      const ids: string[] = [];
      for (let i = 0; i < 5; i += 1) {
        ids.push(
          (await submit({ capabilities: ['x'], labels: { batch: `list-${store}` } })).body.id,
        );
      }
      await server.call('POST', `/v1/tasks/${ids[1]}/cancel`);
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const query: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
        const res = await server.call('GET', `/v1/tasks?label=batch=list-${store}&limit=2${query}`);
        assert.equal(res.status, 200);
        seen.push(...res.body.items.map((t: { id: string }) => t.id));
        cursor = res.body.next_cursor;
      } while (cursor !== null);
      assert.deepEqual(seen, [...ids].reverse());
      const cancelled = await server.call(
        'GET',
        `/v1/tasks?label=batch=list-${store}&state=cancelled`,
      );
      assert.deepEqual(
        cancelled.body.items.map((t: { id: string }) => t.id),
        [ids[1]],
      );
      const both = await server.call(
        'GET',
        `/v1/tasks?label=batch=list-${store}&state=cancelled&state=queued&limit=200`,
      );
      assert.equal(both.body.items.length, 5);
      const byTemplate = await server.call('GET', '/v1/tasks?template=summarise&limit=200');
      assert.ok(byTemplate.body.items.length >= 1);
      assert.ok(byTemplate.body.items.every((t: any) => t.template?.name === 'summarise'));
      const recent = await server.call(
        'GET',
        `/v1/tasks?created_after=${encodeURIComponent(since)}&limit=200`,
      );
      assert.ok(recent.body.items.length >= 5);
      const old = await server.call(
        'GET',
        `/v1/tasks?created_before=${encodeURIComponent('2001-01-01T00:00:00Z')}`,
      );
      assert.deepEqual(old.body.items, []);
      expectError(await server.call('GET', '/v1/tasks?state=sleeping'), 400, 'VALIDATION_FAILED');
      expectError(
        await server.call('GET', '/v1/tasks?created_after=yesterday'),
        400,
        'VALIDATION_FAILED',
      );
    });

    test('cancel: queued ends at once; a task an agent holds gets a request; finished ones refuse', async () => {
      const queued = (await submit({ capabilities: ['x'] })).body;
      const cancelled = await server.call('POST', `/v1/tasks/${queued.id}/cancel`);
      assert.deepEqual([cancelled.status, cancelled.body.state], [200, 'cancelled']);
      assert.ok(cancelled.body.finished_at);
      const twice = await server.call('POST', `/v1/tasks/${queued.id}/cancel`);
      assert.deepEqual([twice.status, twice.body.state], [200, 'cancelled']);

      const held = (await submit({ capabilities: ['x'] })).body;
      await setState(held.id, 'running');
      const requested = await server.call('POST', `/v1/tasks/${held.id}/cancel`);
      assert.equal(requested.body.state, 'running');
      assert.ok(requested.body.cancel_requested_at);
      const repeated = await server.call('POST', `/v1/tasks/${held.id}/cancel`);
      assert.equal(repeated.body.cancel_requested_at, requested.body.cancel_requested_at);
      const events = await server.store.db
        .selectFrom('events')
        .select('type')
        .where('stream_id', '=', `task:${held.id}`)
        .orderBy('offset')
        .execute();
      assert.deepEqual(
        events.map((e) => e.type),
        ['task.queued', 'task.cancel_requested'],
      );

      const done = (await submit({ capabilities: ['x'] })).body;
      await setState(done.id, 'succeeded');
      expectError(
        await server.call('POST', `/v1/tasks/${done.id}/cancel`),
        409,
        'TASK_ALREADY_FINISHED',
      );
      expectError(await server.call('POST', '/v1/tasks/tsk_nope/cancel'), 404, 'TASK_NOT_FOUND');
    });

    test('retry queues a task that ended without success; a queued or succeeded one refuses', async () => {
      const task = (await submit({ capabilities: ['x'] })).body;
      expectError(
        await server.call('POST', `/v1/tasks/${task.id}/retry`),
        409,
        'TASK_NOT_RETRYABLE',
      );
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      const retried = await server.call('POST', `/v1/tasks/${task.id}/retry`);
      assert.deepEqual(
        [retried.status, retried.body.state, retried.body.attempt, retried.body.finished_at],
        [200, 'queued', 0, null],
      );
      await setState(task.id, 'succeeded');
      expectError(
        await server.call('POST', `/v1/tasks/${task.id}/retry`),
        409,
        'TASK_NOT_RETRYABLE',
      );
    });

    test('?wait answers when the task ends, or with 202 when the wait runs out', async () => {
      const pending = await submit({ capabilities: ['x'] }, { query: '?wait=200ms' });
      assert.deepEqual([pending.status, pending.body.state], [202, 'queued']);
      const task = (await submit({ capabilities: ['x'] })).body;
      const waiting = server.call('GET', `/v1/tasks/${task.id}?wait=30s`);
      // The long poll is open; ending the task answers it well before the 30 s.
      await new Promise((resolve) => setTimeout(resolve, 100));
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      const answered = await waiting;
      assert.deepEqual([answered.status, answered.body.state], [200, 'cancelled']);
      expectError(
        await submit({ capabilities: ['x'] }, { query: '?wait=10m' }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await submit({ capabilities: ['x'] }, { query: '?wait=soon' }),
        400,
        'VALIDATION_FAILED',
      );
    });

    test('events stream as NDJSON and SSE, resume without gaps or duplicates, and end after the terminal event', async () => {
      const task = (await submit({ capabilities: ['x'] })).body;
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      await server.call('POST', `/v1/tasks/${task.id}/retry`);
      // Live: the stream is open while the task gets cancelled again.
      const live = readStream(server, task.id);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      const all = await live;
      assert.equal(all.status, 200);
      assert.match(all.contentType ?? '', /application\/x-ndjson/);
      const items = ndjson(all.text);
      assert.deepEqual(
        items.map((i) => [i.offset, i.type]),
        [
          [1, 'task.queued'],
          [2, 'task.cancelled'],
          [3, 'task.retried'],
          [4, 'task.queued'],
          [5, 'task.cancelled'],
        ],
      );
      // Resuming after any offset gives exactly the rest.
      for (let afterOffset = 0; afterOffset <= 5; afterOffset += 1) {
        const viaQuery = ndjson(
          (await readStream(server, task.id, { query: `?after=${afterOffset}` })).text,
        );
        const viaHeader = ndjson(
          (await readStream(server, task.id, { headers: { 'last-event-id': String(afterOffset) } }))
            .text,
        );
        const expected = items.filter((i) => (i.offset ?? 0) > afterOffset).map((i) => i.offset);
        assert.deepEqual(
          viaQuery.map((i) => i.offset),
          expected,
        );
        assert.deepEqual(
          viaHeader.map((i) => i.offset),
          expected,
        );
      }
      const sse = await readStream(server, task.id, {
        headers: { accept: 'text/event-stream', 'last-event-id': '3' },
      });
      assert.match(sse.contentType ?? '', /text\/event-stream/);
      assert.match(
        sse.text,
        /^retry: 2000\n\nid: 4\nevent: task\.queued\ndata: \{.*\}\n\nid: 5\nevent: task\.cancelled\ndata: .*\n\nevent: stream\.end\n/,
      );
      // A finished stream read to its end: 204, which stops EventSource from reconnecting.
      const done = await readStream(server, task.id, {
        headers: { accept: 'text/event-stream', 'last-event-id': '5' },
      });
      assert.deepEqual([done.status, done.text], [204, '']);
      expectError(
        await server.call('GET', `/v1/tasks/${task.id}/events?after=99`),
        400,
        'VALIDATION_FAILED',
      );
      expectError(
        await server.call('GET', `/v1/tasks/${task.id}/events`, {
          headers: { 'last-event-id': 'abc' },
        }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(await server.call('GET', '/v1/tasks/tsk_missing/events'), 404, 'TASK_NOT_FOUND');
    });

    test('events trimmed by retention are announced as a gap', async () => {
      const task = (await submit({ capabilities: ['x'] })).body;
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      await server.store.db
        .updateTable('events')
        .set({ created_at: '2000-01-01T00:00:00.000Z' })
        .where('stream_id', '=', `task:${task.id}`)
        .where('offset', '=', 1)
        .execute();
      await new EventLog({ store: server.store, bus: new InProcessBus() }).trim(
        new Date('2001-01-01'),
      );
      const items = ndjson((await readStream(server, task.id)).text);
      assert.deepEqual(items, [
        { type: 'stream.gap', after: 0, first_offset: 2 },
        ...items.slice(1),
      ]);
      assert.equal(items[1]?.type, 'task.cancelled');
    });

    test('a finished task whose events were all trimmed: the stream says so and ends', async () => {
      const task = (await submit({ capabilities: ['x'] })).body;
      await server.call('POST', `/v1/tasks/${task.id}/cancel`);
      await server.store.db
        .updateTable('events')
        .set({ created_at: '2000-01-01T00:00:00.000Z' })
        .where('stream_id', '=', `task:${task.id}`)
        .execute();
      await new EventLog({ store: server.store, bus: new InProcessBus() }).trim(
        new Date('2001-01-01'),
      );
      const items = ndjson((await readStream(server, task.id)).text);
      assert.deepEqual(items, [{ type: 'stream.gap', after: 0, first_offset: 3 }]);
    });

    test('a replayed submit with ?wait waits like the first one', async () => {
      const key = `replay-wait-${store}`;
      await submit({ capabilities: ['x'], idempotency_key: key });
      const pending = await submit(
        { capabilities: ['x'], idempotency_key: key },
        { query: '?wait=200ms' },
      );
      assert.deepEqual([pending.status, pending.headers.get('idempotent-replayed')], [202, 'true']);
      await server.call('POST', `/v1/tasks/${pending.body.id}/cancel`);
      const ended = await submit(
        { capabilities: ['x'], idempotency_key: key },
        { query: '?wait=30s' },
      );
      assert.deepEqual([ended.status, ended.body.state], [200, 'cancelled']);
    });

    test('absurd inputs are 400s: deep nesting, unsafe patterns in schemas', async () => {
      // Written as text: JSON.stringify itself overflows at this depth.
      const deep = `{"capabilities":["x"],"input":${'{"d":'.repeat(5000)}1${'}'.repeat(5000)}}`;
      const nested = expectError(
        await server.call('POST', '/v1/tasks', { body: deep }),
        400,
        'VALIDATION_FAILED',
      );
      assert.match(nested.message, /deeper than 64 levels/);
      // Patterns run on RE2 (linear time); what RE2 cannot run is refused.
      const backreference = await server.call('POST', '/v1/templates', {
        body: {
          name: `backreference-${store}`,
          input_schema: { type: 'string', maxLength: 100, pattern: '^(a+)\\1$' },
        },
      });
      assert.match(expectError(backreference, 400, 'VALIDATION_FAILED').message, /backreference/);
      const unsafe2020 = await server.call('POST', '/v1/templates', {
        body: {
          name: `unsafe-2020-${store}`,
          input_schema: {
            $schema: 'https://json-schema.org/draft/2020-12/schema',
            type: 'array',
            uniqueItems: true,
          },
        },
      });
      assert.match(expectError(unsafe2020, 400, 'VALIDATION_FAILED').message, /not safe/);
    });

    test('roles: viewers read and stream, operators submit, agents do neither', async () => {
      const keys: Record<string, string> = {};
      for (const role of ['viewer', 'operator', 'agent']) {
        keys[role] = (
          await server.call('POST', '/v1/api-keys', { body: { name: role, role } })
        ).body.secret;
      }
      const task = await submit({ capabilities: ['x'] }, { key: keys.operator });
      assert.equal(task.status, 201);
      expectError(
        await submit({ capabilities: ['x'] }, { key: keys.viewer }),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await server.call('POST', '/v1/tasks/batch', {
          body: { tasks: [{ capabilities: ['x'] }] },
          key: keys.viewer,
        }),
        403,
        'PERMISSION_DENIED',
      );
      const batch = await server.call('POST', '/v1/tasks/batch', {
        body: { tasks: [{ capabilities: ['x'] }] },
        key: keys.operator,
      });
      assert.equal(batch.body.items[0].status, 201);
      assert.equal(
        (await server.call('GET', `/v1/tasks/${task.body.id}`, { key: keys.viewer })).status,
        200,
      );
      expectError(
        await server.call('POST', `/v1/tasks/${task.body.id}/cancel`, { key: keys.viewer }),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await server.call('GET', '/v1/tasks', { key: keys.agent }),
        403,
        'PERMISSION_DENIED',
      );
      await server.call('POST', `/v1/tasks/${task.body.id}/cancel`, { key: keys.operator });
      const streamed = await readStream(server, task.body.id, { key: keys.viewer });
      assert.equal(ndjson(streamed.text).at(-1)?.type, 'task.cancelled');
    });

    test('tenant isolation: another tenant never sees or touches these tasks or templates', async () => {
      const task = (await submit({ template: 'summarise', input: { text: 'mine' } })).body;
      const other = await server.call('POST', '/v1/tenants', {
        body: { id: `tasks-iso-${store}` },
      });
      const b = other.body.admin_key.secret as string;
      for (const [method, path] of [
        ['GET', `/v1/tasks/${task.id}`],
        ['POST', `/v1/tasks/${task.id}/cancel`],
        ['POST', `/v1/tasks/${task.id}/retry`],
        ['GET', `/v1/tasks/${task.id}/events`],
      ] as const) {
        expectError(await server.call(method, path, { key: b }), 404, 'TASK_NOT_FOUND');
      }
      assert.deepEqual(
        (await server.call('GET', '/v1/tasks?limit=200', { key: b })).body.items,
        [],
      );
      const batch = await server.call('POST', '/v1/tasks/batch', {
        body: { tasks: [{ template: 'summarise', input: { text: 'x' } }] },
        key: b,
      });
      assert.equal(batch.body.items[0].error.code, 'VALIDATION_FAILED');
      const viaTemplate = await submit({ template: 'summarise', input: { text: 'x' } }, { key: b });
      assert.match(
        expectError(viaTemplate, 400, 'VALIDATION_FAILED').message,
        /no template "summarise"/,
      );
      // The same idempotency key in another tenant is another task.
      const mine = await submit({ capabilities: ['x'], idempotency_key: 'shared-key' });
      const theirs = await submit(
        { capabilities: ['x'], idempotency_key: 'shared-key' },
        { key: b },
      );
      assert.equal(theirs.status, 201);
      assert.notEqual(theirs.body.id, mine.body.id);
      assert.equal((await server.call('GET', `/v1/tasks/${task.id}`)).body.state, 'queued');
    });
  });
}

describe('durability', () => {
  test('acknowledged tasks and their events survive a restart', async () => {
    for (const store of STORE_VARIANTS) {
      const dir = tempDir();
      const database = store === 'postgres' ? await createTestDatabase() : undefined;
      const settings = testSettings(
        dir.path,
        database ? { ORCHESTRA_DATABASE_URL: database.url } : {},
      );
      const log = pino({ level: 'silent' });
      let running: { close(): Promise<void> } | undefined;
      try {
        const first = await startServer(settings, { log });
        running = first;
        const key = readFileSync(join(dir.path, 'admin-key'), 'utf8').trim();
        const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
        const ids: string[] = [];
        for (let i = 0; i < 20; i += 1) {
          const res = await fetch(`${first.url}/v1/tasks`, {
            method: 'POST',
            headers,
            body: JSON.stringify({ capabilities: ['x'], input: { i } }),
          });
          assert.equal(res.status, 201);
          ids.push(((await res.json()) as { id: string }).id);
        }
        await first.close();
        const second = await startServer(settings, { log });
        try {
          for (const [i, id] of ids.entries()) {
            const res = await fetch(`${second.url}/v1/tasks/${id}`, { headers });
            const body = (await res.json()) as { state: string; input: { i: number } };
            assert.deepEqual(
              [res.status, body.state, body.input.i],
              [200, 'queued', i],
              `${store} ${id}`,
            );
          }
          // The history written before the restart is still there, and goes on after it.
          await fetch(`${second.url}/v1/tasks/${ids[0]}/cancel`, { method: 'POST', headers });
          const stream = await fetch(`${second.url}/v1/tasks/${ids[0]}/events`, {
            headers,
            signal: AbortSignal.timeout(30_000),
          });
          const types = (await stream.text())
            .split('\n')
            .filter(Boolean)
            .map((line) => (JSON.parse(line) as { type: string }).type);
          assert.deepEqual(types, ['task.queued', 'task.cancelled'], store);
        } finally {
          await second.close();
        }
      } finally {
        await running?.close(); // already closed unless an assertion failed before that
        await database?.drop();
        dir.remove();
      }
    }
  });
});

describe('event retention', () => {
  test('events older than ORCHESTRA_EVENT_RETENTION_MS are trimmed at start, and readers see the gap', async () => {
    const dir = tempDir();
    const settings = testSettings(dir.path, { ORCHESTRA_EVENT_RETENTION_MS: '3600000' });
    const log = pino({ level: 'silent' });
    try {
      const first = await startServer(settings, { log });
      const key = readFileSync(join(dir.path, 'admin-key'), 'utf8').trim();
      const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const created = await fetch(`${first.url}/v1/tasks`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ capabilities: ['x'] }),
      });
      const { id } = (await created.json()) as { id: string };
      await fetch(`${first.url}/v1/tasks/${id}/cancel`, { method: 'POST', headers });
      // The queued event is two hours old; the cancellation is fresh.
      await first.store.db
        .updateTable('events')
        .set({ created_at: new Date(Date.now() - 7_200_000).toISOString() })
        .where('stream_id', '=', `task:${id}`)
        .where('offset', '=', 1)
        .execute();
      await first.close();
      const second = await startServer(settings, { log });
      try {
        const stream = await fetch(`${second.url}/v1/tasks/${id}/events`, {
          headers,
          signal: AbortSignal.timeout(30_000),
        });
        const items = (await stream.text())
          .split('\n')
          .filter(Boolean)
          .map(
            (line) => JSON.parse(line) as { type: string; offset?: number; first_offset?: number },
          );
        assert.deepEqual(
          items.map((i) => [i.type, i.offset ?? i.first_offset]),
          [
            ['stream.gap', 2],
            ['task.cancelled', 2],
          ],
        );
      } finally {
        await second.close();
      }
    } finally {
      dir.remove();
    }
  });
});

describe('shutdown with open streams', () => {
  test('an open keep-alive event stream does not hold the drain until the deadline', async () => {
    const lines: Record<string, unknown>[] = [];
    const server = await startTestServer({
      logTo: lines,
      env: { ORCHESTRA_SHUTDOWN_TIMEOUT_MS: '20000' },
    });
    const task = await server.call('POST', '/v1/tasks', { body: { capabilities: ['x'] } });
    const stream = await fetch(`${server.url}/v1/tasks/${task.body.id}/events`, {
      headers: { authorization: `Bearer ${server.adminKey}`, accept: 'text/event-stream' },
    });
    assert.equal(stream.status, 200);
    const body = stream.text(); // ends when the server ends the stream
    await server.stop();
    await body;
    const messages = lines.map((l) => l.msg);
    assert.ok(messages.includes('shutdown complete'));
    assert.ok(
      !messages.includes(
        'in-flight requests did not finish before the deadline; closing their connections',
      ),
      'the stream held the shutdown until its deadline',
    );
  });
});

describe('shutdown with connections that never sent a request', () => {
  test('a spare connection (as fetch opens after a cut stream) does not hold the drain', async () => {
    const lines: Record<string, unknown>[] = [];
    const server = await startTestServer({
      logTo: lines,
      env: { ORCHESTRA_SHUTDOWN_TIMEOUT_MS: '20000' },
    });
    // A client that connects and says nothing, like a pooled spare connection.
    const { connect } = await import('node:net');
    const url = new URL(server.url);
    const spare = connect(Number(url.port), url.hostname);
    await new Promise<void>((resolve, reject) => {
      spare.once('connect', () => resolve());
      spare.once('error', reject);
    });
    try {
      await server.stop();
      const messages = lines.map((l) => l.msg);
      assert.ok(messages.includes('shutdown complete'));
      assert.ok(
        !messages.includes(
          'in-flight requests did not finish before the deadline; closing their connections',
        ),
        'a connection without a request held the shutdown until its deadline',
      );
    } finally {
      spare.destroy();
    }
  });
});
