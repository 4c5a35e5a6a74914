import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TaskState as ServerTaskState } from '@orchestra/protocol';
import { InProcessBus } from '../../server/src/bus/bus.ts';
import { EventLog } from '../../server/src/events/event-log.ts';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import {
  type CreateTaskInput,
  isTerminalState,
  Orchestra,
  type Task,
  type TaskState,
  type TaskStreamItem,
} from '../src/index.ts';
import { collect, rejection } from './support.ts';

// `orchestra.tasks` against a real server: every call goes over HTTP to the routes users
// reach. Agents do not exist yet, so tests move tasks the way an agent will, in the store.

const offsets = (items: TaskStreamItem[]) => items.map((i) => ('offset' in i ? i.offset : null));
const types = (items: TaskStreamItem[]) => items.map((i) => i.type);

/**
 * A TCP proxy in front of the server that a test can cut: `cut()` destroys every open
 * connection, then new connections are forwarded, held until `release()`, or refused.
 */
class CuttableProxy {
  readonly #server: Server;
  readonly #open = new Set<Socket>();
  readonly #held: Socket[] = [];
  readonly #idleWaiters: (() => void)[] = [];
  #mode: 'forward' | 'hold' | 'refuse' = 'forward';
  /** Connections forwarded to the server that carried a request. */
  forwarded = 0;
  /** Connections refused so far. */
  refused = 0;
  url = '';
  readonly #target: URL;

  constructor(target: string) {
    this.#target = new URL(target);
    this.#server = createServer((client) => this.#accept(client));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Destroys every open connection; later ones are handled as `then` says. */
  cut(then: 'forward' | 'hold' | 'refuse' = 'forward'): void {
    this.#mode = then;
    for (const socket of this.#open) socket.destroy();
  }

  /** Forwards the held connections, and new ones again. */
  release(): void {
    this.#mode = 'forward';
    for (const client of this.#held.splice(0)) this.#forward(client);
  }

  /** Resolves once no connection is open. */
  idle(): Promise<void> {
    if (this.#open.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.cut('refuse');
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #track(socket: Socket): void {
    this.#open.add(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.#open.delete(socket);
      if (this.#open.size === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
    });
  }

  #accept(client: Socket): void {
    if (this.#mode === 'refuse') {
      this.refused += 1;
      client.destroy();
      return;
    }
    this.#track(client);
    if (this.#mode === 'hold') this.#held.push(client);
    else this.#forward(client);
  }

  #forward(client: Socket): void {
    // Counted on their first bytes: fetch may open a spare connection that it never uses.
    client.once('data', () => {
      this.forwarded += 1;
    });
    const { hostname, port } = this.#target;
    const upstream = connect(Number(port), hostname);
    this.#track(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    // Whatever the client sent while held is still buffered in its socket.
    client.pipe(upstream).pipe(client);
  }
}

describe('orchestra.tasks', () => {
  let server: TestServer;
  let admin: Orchestra;
  let events: EventLog;

  before(async () => {
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
    // Appends events as agents will; followers pick them up on their next poll.
    events = new EventLog({ store: server.store, bus: new InProcessBus() });
    await admin.templates.create({
      name: 'sdk-summarise',
      capabilities: ['llm'],
      input_schema: {
        type: 'object',
        required: ['text'],
        properties: { text: { type: 'string' } },
      },
      default_priority: 7,
    });
  });
  after(async () => {
    await server.stop();
  });

  /** Makes a task look as an agent left it, as the agent pool will (not built yet). */
  const setState = async (id: string, state: TaskState) => {
    await server.store.db
      .updateTable('tasks')
      .set({ state: state as ServerTaskState, finished_at: null })
      .where('id', '=', id)
      .execute();
  };

  /** Appends a `task.progress` event to the task's stream, as an agent will. */
  const progress = (task: Task, done: number, total: number) =>
    events.transaction((_trx, emit) =>
      emit(`task:${task.id}`, task.tenant_id, [
        { type: 'task.progress', data: { progress: done, total } },
      ]),
    );

  test('create from a template takes its defaults and capabilities; by capabilities alone, none', async () => {
    const task = await admin.tasks.create({
      template: 'sdk-summarise',
      input: { text: 'hello' },
      capabilities: ['gpu'],
      labels: { suite: 'create' },
    });
    assert.match(task.id, /^tsk_/);
    assert.equal(task.state, 'queued');
    assert.equal(task.template?.name, 'sdk-summarise');
    assert.equal(task.template?.version, 1);
    assert.deepEqual(task.capabilities, ['llm', 'gpu']);
    assert.deepEqual(task.input, { text: 'hello' });
    assert.equal(task.priority, 7);
    assert.deepEqual(task.labels, { suite: 'create' });
    assert.deepEqual(await admin.tasks.get(task.id), task);

    const routed = await admin.tasks.createDetailed({ capabilities: ['shell'], priority: -3 });
    assert.equal(routed.replayed, false);
    assert.equal(routed.task.template, null);
    assert.deepEqual(routed.task.capabilities, ['shell']);
    assert.equal(routed.task.priority, -3);
    assert.equal(routed.task.input, null);
  });

  test('an idempotency key replays the first task, whatever the body; createDetailed says so', async () => {
    const first = await admin.tasks.createDetailed({
      capabilities: ['x'],
      idempotency_key: 'sdk-order-1',
      input: { n: 1 },
    });
    assert.equal(first.replayed, false);
    const again = await admin.tasks.createDetailed({
      capabilities: ['y'],
      idempotency_key: 'sdk-order-1',
      input: { n: 2 },
    });
    assert.equal(again.replayed, true);
    assert.deepEqual(again.task, first.task);
    const plain = await admin.tasks.create({ capabilities: ['x'], idempotency_key: 'sdk-order-1' });
    assert.equal(plain.id, first.task.id);
  });

  test('create with wait answers with the task still queued when the wait runs out', async () => {
    const task = await admin.tasks.create({ capabilities: ['nobody-has-this'] }, { wait: 50 });
    assert.equal(task.state, 'queued');
    const invalid = await rejection(() =>
      admin.tasks.create({ capabilities: ['x'] }, { wait: 300_001 }),
    );
    assert.equal(invalid.code, 'VALIDATION_FAILED');
    assert.match(invalid.message, /querystring\.wait/);
    await assert.rejects(
      () => admin.tasks.create({ capabilities: ['x'] }, { wait: -1 }),
      RangeError,
    );
  });

  test('a replay with wait waits for the earlier task too, and resolves once it ends', async () => {
    const task = await admin.tasks.create({ capabilities: ['x'], idempotency_key: 'sdk-wait-1' });
    const replaying = admin.tasks.createDetailed(
      { capabilities: ['x'], idempotency_key: 'sdk-wait-1' },
      { wait: 120_000 },
    );
    await admin.tasks.cancel(task.id);
    const replay = await replaying;
    assert.equal(replay.replayed, true);
    assert.equal(replay.task.id, task.id);
    assert.equal(replay.task.state, 'cancelled');
  });

  test('errors carry the server codes: VALIDATION_FAILED names the field, TASK_NOT_FOUND', async () => {
    const badInput = await rejection(() =>
      admin.tasks.create({ template: 'sdk-summarise', input: { text: 42 } }),
    );
    assert.equal(badInput.code, 'VALIDATION_FAILED');
    assert.equal(badInput.status, 400);
    const fields = (badInput.details as { fields: { field: string }[] }).fields;
    assert.equal(fields[0]?.field, 'body.input');

    const neither = await rejection(() => admin.tasks.create({ input: {} }));
    assert.equal(
      (neither.details as { fields: { field: string }[] }).fields[0]?.field,
      'body.template',
    );

    for (const call of [
      () => admin.tasks.get('tsk_missing'),
      () => admin.tasks.get('tsk_missing', { wait: 10 }),
      () => admin.tasks.wait('tsk_missing'),
      () => admin.tasks.cancel('tsk_missing'),
      () => admin.tasks.retry('tsk_missing'),
      () => collect(admin.tasks.events('tsk_missing')),
    ]) {
      const missing = await rejection(call);
      assert.deepEqual([missing.code, missing.status], ['TASK_NOT_FOUND', 404]);
    }
  });

  /** A client that records the path of every request it sends. */
  const recording = (options: { batchSubmits?: boolean; apiKey?: string } = {}) => {
    const paths: string[] = [];
    const client = new Orchestra({
      url: server.url,
      apiKey: options.apiKey ?? server.adminKey,
      ...(options.batchSubmits === undefined ? {} : { batchSubmits: options.batchSubmits }),
      fetch: (input, init) => {
        paths.push(new URL(String(input)).pathname);
        return fetch(input, init);
      },
    });
    return { client, paths };
  };

  test('concurrent creates go out as one batch; each resolves or rejects as it would alone', async () => {
    const { client, paths } = recording();
    const settled = await Promise.allSettled([
      client.tasks.create({ template: 'sdk-summarise', input: { text: 'a' } }),
      client.tasks.create({ template: 'sdk-summarise', input: { text: 42 } }),
      client.tasks.createDetailed({ capabilities: ['x'], idempotency_key: 'sdk-batched-1' }),
      client.tasks.createDetailed({ capabilities: ['x'], idempotency_key: 'sdk-batched-1' }),
      client.tasks.create({ template: 'no-such-template' }),
    ]);
    assert.deepEqual(paths, ['/v1/tasks/batch']);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'rejected'],
    );
    const [created, badInput, first, replay, unknown] = settled;
    assert.equal(created?.status === 'fulfilled' && created.value.state, 'queued');
    // The error a submit sent alone gets: same code, status and field name.
    const error = badInput?.status === 'rejected' ? badInput.reason : undefined;
    assert.deepEqual([error.code, error.status], ['VALIDATION_FAILED', 400]);
    assert.equal(error.details.fields[0].field, 'body.input');
    assert.match(error.message, /^body\.input: does not match/);
    assert.ok(error.requestId);
    const alone = await rejection(() =>
      admin.tasks.create({ template: 'sdk-summarise', input: { text: 42 } }),
    );
    assert.equal(alone.message, error.message);
    assert.ok(first?.status === 'fulfilled' && replay?.status === 'fulfilled');
    assert.equal(first.value.replayed, false);
    assert.equal(replay.value.replayed, true);
    assert.equal(replay.value.task.id, first.value.task.id);
    assert.match(String(unknown?.status === 'rejected' && unknown.reason.message), /no template/);

    // One create alone is a plain submit; one with wait is never batched.
    paths.length = 0;
    await client.tasks.create({ capabilities: ['x'] });
    await Promise.all([
      client.tasks.create({ capabilities: ['nobody'] }, { wait: 10 }),
      client.tasks.create({ capabilities: ['nobody'] }, { wait: 10 }),
    ]);
    assert.deepEqual(paths, ['/v1/tasks', '/v1/tasks', '/v1/tasks']);
  });

  test('batchSubmits: false sends every create alone; a batch refused whole rejects every call', async () => {
    const { client, paths } = recording({ batchSubmits: false });
    await Promise.all([
      client.tasks.create({ capabilities: ['x'] }),
      client.tasks.create({ capabilities: ['x'] }),
    ]);
    assert.deepEqual(paths, ['/v1/tasks', '/v1/tasks']);

    const viewerKey = (await admin.apiKeys.create({ name: 'sdk-batch-viewer', role: 'viewer' }))
      .secret;
    const viewer = recording({ apiKey: viewerKey });
    const refused = await Promise.allSettled([
      viewer.client.tasks.create({ capabilities: ['x'] }),
      viewer.client.tasks.create({ capabilities: ['x'] }),
    ]);
    assert.deepEqual(viewer.paths, ['/v1/tasks/batch']);
    for (const outcome of refused) {
      assert.equal(outcome.status, 'rejected');
      assert.equal(outcome.status === 'rejected' && outcome.reason.code, 'PERMISSION_DENIED');
    }
  });

  test('createMany: one outcome per input, in order, in requests of at most 500', async () => {
    const { client, paths } = recording();
    assert.deepEqual(await client.tasks.createMany([]), []);
    assert.deepEqual(paths, []);
    const inputs: CreateTaskInput[] = Array.from({ length: 501 }, (_, i) => ({
      capabilities: ['x'],
      input: i,
      labels: { suite: 'create-many' },
    }));
    const outcomes = await client.tasks.createMany([
      ...inputs.slice(0, 2),
      { template: 'sdk-summarise', input: { text: 7 } },
      ...inputs.slice(2),
    ]);
    assert.deepEqual(paths, ['/v1/tasks/batch', '/v1/tasks/batch']);
    assert.equal(outcomes.length, 502);
    const refused = outcomes[2];
    assert.ok(refused !== undefined && !refused.ok);
    assert.equal(refused.error.code, 'VALIDATION_FAILED');
    assert.equal(
      (refused.error.details as { fields: { field: string }[] }).fields[0]?.field,
      'body.tasks.2.input',
    );
    const tasks = outcomes.flatMap((o) => (o.ok ? [o.task] : []));
    assert.deepEqual(
      tasks.map((t) => t.input),
      Array.from({ length: 501 }, (_, i) => i),
    );
    // Ids, and so first-in-first-out dispatch, follow the order given, across requests.
    const ids = tasks.map((t) => t.id);
    assert.deepEqual(ids, ids.toSorted());
    const listed = await collect(client.tasks.listAll({ labels: { suite: 'create-many' } }));
    assert.equal(listed.length, 501);
  });

  test('list filters by state, template, label and creation time, newest first; listAll pages', async () => {
    const labels = { suite: 'list' };
    const since = new Date();
    const a = await admin.tasks.create({ template: 'sdk-summarise', input: { text: 'a' }, labels });
    const b = await admin.tasks.create({ capabilities: ['x'], labels });
    const c = await admin.tasks.create({
      capabilities: ['x'],
      labels: { ...labels, tier: 'gold' },
    });
    await admin.tasks.cancel(b.id);
    const ids = (page: { items: Task[] }) => page.items.map((t) => t.id);

    assert.deepEqual(ids(await admin.tasks.list({ labels })), [c.id, b.id, a.id]);
    assert.deepEqual(ids(await admin.tasks.list({ labels, state: 'cancelled' })), [b.id]);
    assert.deepEqual(ids(await admin.tasks.list({ labels, state: ['queued', 'cancelled'] })), [
      c.id,
      b.id,
      a.id,
    ]);
    assert.deepEqual(ids(await admin.tasks.list({ labels, template: 'sdk-summarise' })), [a.id]);
    const templateId = a.template?.id ?? '';
    assert.deepEqual(ids(await admin.tasks.list({ labels, template: templateId })), [a.id]);
    assert.deepEqual(ids(await admin.tasks.list({ labels: { ...labels, tier: 'gold' } })), [c.id]);
    assert.deepEqual(ids(await admin.tasks.list({ labels, created_after: since })), [
      c.id,
      b.id,
      a.id,
    ]);
    assert.deepEqual(ids(await admin.tasks.list({ labels, created_before: since })), []);

    const first = await admin.tasks.list({ labels, limit: 2 });
    assert.deepEqual(ids(first), [c.id, b.id]);
    assert.ok(first.next_cursor);
    const second = await admin.tasks.list({ labels, limit: 2, cursor: first.next_cursor });
    assert.deepEqual([ids(second), second.next_cursor], [[a.id], null]);
    const all = await collect(admin.tasks.listAll({ labels, limit: 1 }));
    assert.deepEqual(
      all.map((t) => t.id),
      [c.id, b.id, a.id],
    );
  });

  test('get with wait answers with the task still queued; wait resolves once another call cancels it', async () => {
    const task = await admin.tasks.create({ capabilities: ['x'] });
    assert.equal((await admin.tasks.get(task.id, { wait: 20 })).state, 'queued');
    assert.equal((await admin.tasks.wait(task.id, { timeoutMs: 20 })).state, 'queued');

    const waiting = admin.tasks.wait(task.id);
    const cancelled = await admin.tasks.cancel(task.id);
    const ended = await waiting;
    assert.equal(ended.state, 'cancelled');
    assert.equal(ended.finished_at, cancelled.finished_at);
    assert.ok(isTerminalState(ended.state));
    // An ended task answers at once.
    assert.equal((await admin.tasks.wait(task.id, { timeoutMs: 0 })).state, 'cancelled');
  });

  test('wait rejects with the reason when its signal aborts', async () => {
    const task = await admin.tasks.create({ capabilities: ['x'] });
    const controller = new AbortController();
    const waiting = admin.tasks.wait(task.id, { signal: controller.signal });
    controller.abort(new Error('no longer interested'));
    await assert.rejects(waiting, /no longer interested/);
    assert.equal((await admin.tasks.get(task.id)).state, 'queued');
  });

  test('cancel and retry: states, repeated calls, and the 409 codes', async () => {
    const task = await admin.tasks.create({ capabilities: ['x'], max_attempts: 2 });
    const cancelled = await admin.tasks.cancel(task.id);
    assert.equal(cancelled.state, 'cancelled');
    assert.ok(cancelled.finished_at);
    assert.deepEqual(await admin.tasks.cancel(task.id), cancelled);

    const retried = await admin.tasks.retry(task.id);
    assert.deepEqual(
      [retried.state, retried.attempt, retried.finished_at, retried.cancel_requested_at],
      ['queued', 0, null, null],
    );
    const notRetryable = await rejection(() => admin.tasks.retry(task.id));
    assert.deepEqual([notRetryable.code, notRetryable.status], ['TASK_NOT_RETRYABLE', 409]);

    await setState(task.id, 'running');
    const requested = await admin.tasks.cancel(task.id);
    assert.equal(requested.state, 'running');
    assert.ok(requested.cancel_requested_at);

    await setState(task.id, 'succeeded');
    const finished = await rejection(() => admin.tasks.cancel(task.id));
    assert.deepEqual([finished.code, finished.status], ['TASK_ALREADY_FINISHED', 409]);
    assert.equal((await rejection(() => admin.tasks.retry(task.id))).code, 'TASK_NOT_RETRYABLE');
  });

  describe('events', () => {
    /** Runs `body` with a proxy the test can cut, and a client that talks through it. */
    async function withProxy(body: (proxy: CuttableProxy, viaProxy: Orchestra) => Promise<void>) {
      const proxy = new CuttableProxy(server.url);
      await proxy.listen();
      try {
        await body(proxy, new Orchestra({ url: proxy.url, apiKey: server.adminKey }));
      } finally {
        await proxy.close();
      }
    }

    test('replays an ended task and ends after its terminal event; after skips what was seen', async () => {
      const task = await admin.tasks.create({ capabilities: ['x'] });
      await admin.tasks.cancel(task.id);
      const items = await collect(admin.tasks.events(task.id));
      assert.deepEqual(types(items), ['task.queued', 'task.cancelled']);
      assert.deepEqual(offsets(items), [1, 2]);
      assert.deepEqual((items[1] as { data: unknown }).data, {
        state: 'cancelled',
        attempt: 0,
        agent_id: null,
        reason: 'cancelled while queued',
      });
      assert.deepEqual(offsets(await collect(admin.tasks.events(task.id, { after: 1 }))), [2]);
      assert.deepEqual(await collect(admin.tasks.events(task.id, { after: 2 })), []);
      const beyond = await rejection(() => collect(admin.tasks.events(task.id, { after: 3 })));
      assert.equal(beyond.code, 'VALIDATION_FAILED');
    });

    test('follows live events past an earlier terminal event and ends after the last one', async () => {
      const task = await admin.tasks.create({ capabilities: ['x'] });
      await admin.tasks.cancel(task.id);
      await admin.tasks.retry(task.id);
      const seen: TaskStreamItem[] = [];
      for await (const item of admin.tasks.events(task.id)) {
        seen.push(item);
        // Each step happens only after the previous event arrived: these are live.
        if (seen.length === 4) {
          await setState(task.id, 'running');
          await admin.tasks.cancel(task.id);
        }
        if (item.type === 'task.cancel_requested') {
          await setState(task.id, 'queued');
          await admin.tasks.cancel(task.id);
        }
      }
      assert.deepEqual(types(seen), [
        'task.queued',
        'task.cancelled',
        'task.retried',
        'task.queued',
        'task.cancel_requested',
        'task.cancelled',
      ]);
      assert.deepEqual(offsets(seen), [1, 2, 3, 4, 5, 6]);
    });

    test('announces events removed by retention with a gap, then goes on', async () => {
      const task = await admin.tasks.create({ capabilities: ['x'] });
      await admin.tasks.cancel(task.id);
      await server.store.db
        .deleteFrom('events')
        .where('stream_id', '=', `task:${task.id}`)
        .where('offset', '=', 1)
        .execute();
      const items = await collect(admin.tasks.events(task.id));
      assert.deepEqual(items[0], { type: 'stream.gap', after: 0, first_offset: 2 });
      assert.deepEqual(types(items), ['stream.gap', 'task.cancelled']);
    });

    test('resumes transparently after dropped connections, without gaps or duplicates', async () => {
      await withProxy(async (proxy, viaProxy) => {
        const task = await admin.tasks.create({ capabilities: ['x'] });
        const seen: TaskStreamItem[] = [];
        for await (const item of viaProxy.tasks.events(task.id)) {
          seen.push(item);
          if ('offset' in item && item.offset < 4) {
            // Drop the connection, add an event while the client cannot connect, let it in.
            proxy.cut('hold');
            await progress(task, item.offset, 3);
            proxy.release();
          } else if ('offset' in item && item.offset === 4) {
            await admin.tasks.cancel(task.id);
          }
        }
        assert.deepEqual(offsets(seen), [1, 2, 3, 4, 5]);
        assert.deepEqual(types(seen), [
          'task.queued',
          'task.progress',
          'task.progress',
          'task.progress',
          'task.cancelled',
        ]);
        assert.deepEqual((seen[3] as { data: unknown }).data, { progress: 3, total: 3 });
        assert.equal(proxy.forwarded, 4, 'one connection, then one after each of 3 cuts');
      });
    });

    test('gives up with CONNECTION_FAILED after maxReconnects failed reconnections', async () => {
      await withProxy(async (proxy, viaProxy) => {
        const task = await admin.tasks.create({ capabilities: ['x'] });
        const seen: TaskStreamItem[] = [];
        const failure = await rejection(async () => {
          for await (const item of viaProxy.tasks.events(task.id, { maxReconnects: 2 })) {
            seen.push(item);
            proxy.cut('refuse');
          }
        });
        assert.equal(failure.code, 'CONNECTION_FAILED');
        assert.match(failure.message, /after offset 1 and could not resume it in 2 attempts/);
        assert.deepEqual(offsets(seen), [1]);
        assert.equal(proxy.refused, 2);
      });
    });

    test('the first connection is not retried: a server that is down rejects at once', async () => {
      await withProxy(async (proxy, viaProxy) => {
        proxy.cut('refuse');
        const failure = await rejection(() => collect(viaProxy.tasks.events('tsk_whatever')));
        assert.equal(failure.code, 'CONNECTION_FAILED');
        assert.equal(proxy.refused, 1);
      });
    });

    test('an aborted signal ends the iteration with its reason, also while reconnecting', async () => {
      // Through the proxy, so that the second half can refuse reconnections.
      await withProxy(async (proxy, viaProxy) => {
        const task = await admin.tasks.create({ capabilities: ['x'] });
        const live = new AbortController();
        await assert.rejects(async () => {
          for await (const _item of viaProxy.tasks.events(task.id, { signal: live.signal })) {
            live.abort(new Error('stop following'));
          }
        }, /stop following/);

        const reconnecting = new AbortController();
        await assert.rejects(async () => {
          for await (const _item of viaProxy.tasks.events(task.id, {
            signal: reconnecting.signal,
            maxReconnects: 1000,
          })) {
            proxy.cut('refuse');
            // Aborts while the iterator backs off between refused reconnections.
            setImmediate(() => reconnecting.abort(new Error('gave up waiting')));
          }
        }, /gave up waiting/);
      });
    });

    test('leaving the loop early closes the connection', async () => {
      await withProxy(async (proxy, viaProxy) => {
        const task = await admin.tasks.create({ capabilities: ['x'] });
        for await (const _item of viaProxy.tasks.events(task.id)) break;
        // The server would follow the queued task for ever if the client kept reading.
        await proxy.idle();
        assert.equal(proxy.forwarded, 1);
      });
    });
  });
});
