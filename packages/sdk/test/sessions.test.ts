import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { AgentWorker, Orchestra, type SessionStreamItem, TaskFailedError } from '../src/index.ts';
import { rejection } from './support.ts';

for (const store of STORE_VARIANTS) {
  describe(`SDK sessions on ${store}`, () => {
    let server: TestServer;
    let client: Orchestra;
    let worker: AgentWorker;
    /** The session each task had when it reached the agent, by task id. */
    const sessionsSeen = new Map<string, string | null>();

    before(async () => {
      server = await startTestServer({ store });
      client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      const key = await client.apiKeys.create({ name: 'agent', role: 'agent' });
      worker = new AgentWorker({
        url: server.url,
        apiKey: key.secret,
        agentId: 'echo',
        capabilities: ['echo'],
        concurrency: 2,
        handleSignals: false,
        handler: async (input, ctx) => {
          sessionsSeen.set(ctx.task.id, ctx.task.session_id);
          if ((input as { fail?: boolean } | null)?.fail) {
            throw new TaskFailedError('the input asked to fail', {
              code: 'ASKED_TO_FAIL',
              retryable: false,
              details: { line: 3, hint: 'drop "fail"' },
            });
          }
          ctx.output(`echo ${JSON.stringify(input)}`);
          return input;
        },
      });
      await worker.start();
    });
    after(async () => {
      await worker?.stop({ drain: false });
      await server?.close();
    });

    test('create, get, list by label, delete', async () => {
      const session = await client.sessions.create({
        name: 'support chat',
        labels: { team: 'support' },
        multitask_strategy: 'reject',
      });
      assert.equal(session.multitask_strategy, 'reject');
      assert.equal((await client.sessions.get(session.id)).name, 'support chat');
      const listed = await client.sessions.list({ labels: { team: 'support' } });
      assert.deepEqual(
        listed.items.map((s) => s.id),
        [session.id],
      );
      const all: string[] = [];
      for await (const s of client.sessions.listAll({ limit: 1 })) all.push(s.id);
      assert.ok(all.includes(session.id));
      await client.sessions.delete(session.id);
      const gone = await rejection(() => client.sessions.get(session.id));
      assert.equal(gone.code, 'SESSION_NOT_FOUND');
    });

    test('the agent is told the task’s session, and a failure’s details reach the task’s error', async () => {
      const session = await client.sessions.create();
      const inSession = await client.tasks.create({
        capabilities: ['echo'],
        session_id: session.id,
        input: { n: 1 },
      });
      const alone = await client.tasks.create({ capabilities: ['echo'], input: { fail: true } });
      assert.equal(
        (await client.tasks.wait(inSession.id, { timeoutMs: 20_000 })).state,
        'succeeded',
      );
      const failed = await client.tasks.wait(alone.id, { timeoutMs: 20_000 });
      assert.equal(sessionsSeen.get(inSession.id), session.id);
      assert.equal(sessionsSeen.get(alone.id), null);
      assert.equal(failed.state, 'failed');
      assert.deepEqual(failed.error, {
        code: 'ASKED_TO_FAIL',
        message: 'the input asked to fail',
        retryable: false,
        details: { line: 3, hint: 'drop "fail"' },
      });
      // Each task event of a session names its task.
      const ids = new Set<string | undefined>();
      for await (const item of client.sessions.events(session.id, { follow: false })) {
        if ('offset' in item && item.type !== 'session.created') ids.add(item.data.task_id);
      }
      assert.deepEqual([...ids], [inSession.id]);
    });

    test('events: the whole history of its tasks in order, then live ones', async () => {
      const session = await client.sessions.create();
      const first = await client.tasks.create({
        capabilities: ['echo'],
        session_id: session.id,
        input: { n: 1 },
      });
      assert.equal(first.session_id, session.id);
      assert.equal((await client.tasks.wait(first.id, { timeoutMs: 20_000 })).state, 'succeeded');

      const history: SessionStreamItem[] = [];
      for await (const item of client.sessions.events(session.id, { follow: false })) {
        history.push(item);
      }
      assert.equal(history[0]?.type, 'session.created');
      const types = history.map((i) => i.type);
      assert.ok(types.includes('task.output'), types.join(','));
      assert.equal(types.at(-1), 'task.succeeded');

      // Live: a second task's events arrive while following, after the history.
      const controller = new AbortController();
      const seen: SessionStreamItem[] = [];
      const last = history.at(-1);
      assert.ok(last && 'offset' in last);
      const following = (async () => {
        try {
          for await (const item of client.sessions.events(session.id, {
            after: last.offset,
            signal: controller.signal,
          })) {
            seen.push(item);
            if (item.type === 'task.succeeded') controller.abort();
          }
        } catch (err) {
          if (!controller.signal.aborted) throw err;
        }
      })();
      const second = await client.tasks.create({
        capabilities: ['echo'],
        session_id: session.id,
        input: { n: 2 },
      });
      await following;
      assert.ok(seen.length > 0);
      assert.ok(
        seen.every((i) => 'offset' in i && (i.data as { task_id: string }).task_id === second.id),
      );
      const tasks = await client.tasks.list({ session_id: session.id });
      assert.deepEqual(tasks.items.map((t) => t.id).sort(), [first.id, second.id].sort());
    });
  });
}
