import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker, type TaskContext } from '@orchestra/sdk';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

interface Item {
  offset: number;
  type: string;
  data: { task_id?: string; [key: string]: unknown };
}

/** A handler whose tasks wait until the test releases them (or they are cancelled). */
function gatedAgent() {
  const started: string[] = [];
  const gates = new Map<string, () => void>();
  const waiters: (() => void)[] = [];
  const handler = async (input: unknown, ctx: TaskContext) => {
    const name = (input as { name: string }).name;
    started.push(name);
    for (const w of waiters.splice(0)) w();
    await new Promise<void>((resolve, reject) => {
      gates.set(name, resolve);
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
    });
    return { name };
  };
  return {
    handler,
    started,
    release(name: string) {
      const gate = gates.get(name);
      assert.ok(gate, `task ${name} has not started`);
      gate();
    },
    /** Resolves once `count` tasks have started. */
    async waitStarted(count: number) {
      const deadline = Date.now() + 20_000;
      while (started.length < count) {
        assert.ok(Date.now() < deadline, `only ${started.length} of ${count} tasks started`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
  };
}

async function readEvents(server: TestServer, sessionId: string, query = ''): Promise<Item[]> {
  const res = await fetch(`${server.url}/v1/sessions/${sessionId}/events?follow=false${query}`, {
    headers: { authorization: `Bearer ${server.adminKey}` },
    signal: AbortSignal.timeout(20_000),
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Item);
}

async function waitState(server: TestServer, id: string, states: string[]): Promise<void> {
  const res = await server.call('GET', `/v1/tasks/${id}?wait=20s`);
  assert.ok(states.includes((res.body as { state: string }).state), JSON.stringify(res.body));
}

for (const store of STORE_VARIANTS) {
  describe(`sessions on ${store}`, () => {
    let server: TestServer;
    let agentKey: string;
    const workers: AgentWorker[] = [];

    before(async () => {
      server = await startTestServer({ store });
      const key = await server.call('POST', '/v1/api-keys', {
        body: { name: 'agents', role: 'agent' },
      });
      agentKey = (key.body as { secret: string }).secret;
    });
    after(async () => {
      await Promise.all(workers.map((w) => w.stop({ drain: false })));
      await server?.close();
    });

    async function startAgent(
      capability: string,
      handler: ReturnType<typeof gatedAgent>['handler'],
    ) {
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: `agent-${capability}`,
        capabilities: [capability],
        concurrency: 4,
        handleSignals: false,
        handler,
      });
      await worker.start();
      workers.push(worker);
      return worker;
    }

    async function createSession(body: Record<string, unknown> = {}) {
      const res = await server.call('POST', '/v1/sessions', { body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { id: string; multitask_strategy: string };
    }

    async function submit(sessionId: string, capability: string, name: string) {
      return server.call('POST', '/v1/tasks', {
        body: { capabilities: [capability], session_id: sessionId, input: { name } },
      });
    }

    test('create, get, list with labels and pages, validation', async () => {
      const a = await createSession({
        name: 'chat with ada',
        labels: { user: 'ada' },
        metadata: { title: 'Hello' },
      });
      assert.equal(a.multitask_strategy, 'enqueue');
      const b = await createSession({ labels: { user: 'bob' }, multitask_strategy: 'reject' });
      const got = await server.call('GET', `/v1/sessions/${a.id}`);
      assert.equal(got.status, 200);
      assert.deepEqual((got.body as { metadata: unknown }).metadata, { title: 'Hello' });
      assert.deepEqual((got.body as { tasks: unknown }).tasks, { total: 0, unfinished: [] });

      const byLabel = await server.call('GET', '/v1/sessions?label=user=bob');
      assert.deepEqual(
        (byLabel.body as { items: { id: string }[] }).items.map((s) => s.id),
        [b.id],
      );
      const first = await server.call('GET', '/v1/sessions?limit=1');
      const page = first.body as { items: { id: string }[]; next_cursor: string };
      assert.equal(page.items.length, 1);
      const second = await server.call('GET', `/v1/sessions?limit=1&cursor=${page.next_cursor}`);
      assert.notEqual((second.body as { items: { id: string }[] }).items[0]?.id, page.items[0]?.id);

      expectError(
        await server.call('POST', '/v1/sessions', { body: { multitask_strategy: 'sometimes' } }),
        400,
        'VALIDATION_FAILED',
      );
      expectError(await server.call('GET', '/v1/sessions/ses_nope'), 404, 'SESSION_NOT_FOUND');
      const unknown = await server.call('POST', '/v1/tasks', {
        body: { capabilities: ['x'], session_id: 'ses_nope' },
      });
      expectError(unknown, 400, 'VALIDATION_FAILED');
      assert.match(JSON.stringify(unknown.body), /body\.session_id/);
    });

    test('enqueue: tasks of a session run one at a time, in submission order', async () => {
      const gate = gatedAgent();
      await startAgent('enqueue', gate.handler);
      const session = await createSession();
      const ids: string[] = [];
      for (const name of ['one', 'two', 'three']) {
        const res = await submit(session.id, 'enqueue', name);
        assert.equal(res.status, 201);
        ids.push((res.body as { id: string }).id);
      }
      await gate.waitStarted(1);
      // The agent has room for four, yet the second waits for the first.
      const second = await server.call('GET', `/v1/tasks/${ids[1]}`);
      assert.equal((second.body as { state: string }).state, 'queued');
      gate.release('one');
      await gate.waitStarted(2);
      gate.release('two');
      await gate.waitStarted(3);
      gate.release('three');
      for (const id of ids) await waitState(server, id, ['succeeded']);
      assert.deepEqual(gate.started, ['one', 'two', 'three']);

      const events = await readEvents(server, session.id);
      assert.equal(events[0]?.type, 'session.created');
      const offsets = events.map((e) => e.offset);
      assert.deepEqual(
        offsets,
        [...offsets].sort((x, y) => x - y),
      );
      const succeeded = events
        .filter((e) => e.type === 'task.succeeded')
        .map((e) => e.data.task_id);
      assert.deepEqual(succeeded, ids);
      // Every task event carries its task; resuming after an offset skips what came before.
      assert.ok(events.slice(1).every((e) => typeof e.data.task_id === 'string'));
      const third = events[2];
      assert.ok(third);
      const rest = await readEvents(server, session.id, `&after=${third.offset}`);
      assert.deepEqual(
        rest.map((e) => e.offset),
        offsets.slice(3),
      );
      const listed = await server.call('GET', `/v1/tasks?session_id=${session.id}`);
      assert.equal((listed.body as { items: unknown[] }).items.length, 3);
    });

    test('reject: a second task while one is unfinished is a 409 SESSION_BUSY', async () => {
      const gate = gatedAgent();
      await startAgent('reject', gate.handler);
      const session = await createSession({ multitask_strategy: 'reject' });
      const first = await submit(session.id, 'reject', 'first');
      assert.equal(first.status, 201);
      await gate.waitStarted(1);
      const busy = await submit(session.id, 'reject', 'second');
      expectError(busy, 409, 'SESSION_BUSY');
      assert.deepEqual(
        (busy.body as { error: { details: { unfinished: string[] } } }).error.details.unfinished,
        [(first.body as { id: string }).id],
      );
      gate.release('first');
      await waitState(server, (first.body as { id: string }).id, ['succeeded']);
      const later = await submit(session.id, 'reject', 'third');
      assert.equal(later.status, 201);
      await gate.waitStarted(2);
      gate.release('third');
      await waitState(server, (later.body as { id: string }).id, ['succeeded']);
    });

    test('interrupt: the running task is cancelled, then the new one runs', async () => {
      const gate = gatedAgent();
      await startAgent('interrupt', gate.handler);
      const session = await createSession({ multitask_strategy: 'interrupt' });
      const first = await submit(session.id, 'interrupt', 'old');
      await gate.waitStarted(1);
      const second = await submit(session.id, 'interrupt', 'new');
      assert.equal(second.status, 201);
      await waitState(server, (first.body as { id: string }).id, ['cancelled']);
      await gate.waitStarted(2);
      gate.release('new');
      await waitState(server, (second.body as { id: string }).id, ['succeeded']);
      assert.deepEqual(gate.started, ['old', 'new']);
    });

    test('delete is refused while a task is unfinished, then removes tasks and history', async () => {
      const session = await createSession();
      // No agent has this capability: the task stays queued.
      const task = await submit(session.id, 'nobody-has-this', 'waiting');
      const taskId = (task.body as { id: string }).id;
      expectError(await server.call('DELETE', `/v1/sessions/${session.id}`), 409, 'SESSION_BUSY');
      assert.equal((await server.call('POST', `/v1/tasks/${taskId}/cancel`)).status, 200);
      assert.equal((await server.call('DELETE', `/v1/sessions/${session.id}`)).status, 204);
      expectError(await server.call('GET', `/v1/sessions/${session.id}`), 404, 'SESSION_NOT_FOUND');
      expectError(await server.call('GET', `/v1/tasks/${taskId}`), 404, 'TASK_NOT_FOUND');
    });

    test('another tenant sees none of these sessions and cannot use them', async () => {
      const session = await createSession();
      const tenant = await server.call('POST', '/v1/tenants', { body: { id: `other-${store}` } });
      const otherKey = (tenant.body as { admin_key: { secret: string } }).admin_key.secret;
      expectError(
        await server.call('GET', `/v1/sessions/${session.id}`, { key: otherKey }),
        404,
        'SESSION_NOT_FOUND',
      );
      const list = await server.call('GET', '/v1/sessions', { key: otherKey });
      assert.deepEqual((list.body as { items: unknown[] }).items, []);
      expectError(
        await server.call('POST', '/v1/tasks', {
          key: otherKey,
          body: { capabilities: ['x'], session_id: session.id },
        }),
        400,
        'VALIDATION_FAILED',
      );
    });
  });
}
