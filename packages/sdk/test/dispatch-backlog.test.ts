import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { AgentWorker, type CreateTaskInput, Orchestra } from '../src/index.ts';

// Dispatch once looked at only the first 2,000 queued tasks of a tenant: behind that many
// tasks that no agent could take (a capability nobody offers, a concurrency key at its
// limit, an agent that is busy), a task an idle agent could run stayed queued. Each test
// queues 4,000 such tasks for real (twice that old window, twenty pages of the dispatcher's
// scan; 10,000 took two minutes of CI on PostgreSQL for no more coverage), then submits
// one an idle agent can take.

const BLOCKERS = 4_000;
/** Not a speed target: only a hang detector, generous for a busy two-core machine. */
const ASSIGN_DEADLINE_MS = 60_000;

for (const store of STORE_VARIANTS) {
  describe(`dispatch behind a backlog on ${store}`, () => {
    let server: TestServer;
    let admin: Orchestra;
    const workers: AgentWorker[] = [];

    before(async () => {
      server = await startTestServer({ store });
      admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
    });
    after(async () => {
      await Promise.all(workers.map((w) => w.stop({ drain: false }).catch(() => undefined)));
      await server?.close();
    });

    /** A tenant of its own for each test, so that one test's backlog is not another's. */
    async function tenant(name: string): Promise<{ client: Orchestra; agentKey: string }> {
      const { admin_key } = await admin.tenants.create({ id: `${name}-${store}` });
      const client = new Orchestra({ url: server.url, apiKey: admin_key.secret });
      const agentKey = (await client.apiKeys.create({ name: 'agents', role: 'agent' })).secret;
      return { client, agentKey };
    }

    /**
     * An agent that holds tasks whose input says `hold` until it stops, and echoes the rest.
     */
    async function agent(
      agentKey: string,
      agentId: string,
      capabilities: string[],
      concurrency: number,
    ): Promise<AgentWorker> {
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId,
        capabilities,
        concurrency,
        handleSignals: false,
        handler: (input, ctx) =>
          (input as { hold?: boolean } | null)?.hold === true
            ? new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(null)))
            : input,
      });
      workers.push(worker);
      await worker.start();
      return worker;
    }

    /**
     * Queues `count` copies of `task` through the batch API, every one accepted. Batches
     * of 250 rather than 500 keep a busy PostgreSQL pool from timing out.
     */
    async function queue(client: Orchestra, count: number, task: CreateTaskInput): Promise<void> {
      for (let i = 0; i < count; i += 250) {
        const outcomes = await client.tasks.createMany(
          Array.from({ length: Math.min(250, count - i) }, () => task),
        );
        assert.ok(outcomes.every((o) => o.ok));
      }
    }

    /** Submits a task and resolves once an agent ran it. */
    async function runs(client: Orchestra, task: CreateTaskInput) {
      const created = await client.tasks.create(task);
      return client.tasks.wait(created.id, { timeoutMs: ASSIGN_DEADLINE_MS });
    }

    /** Resolves once the task is held by an agent. */
    async function held(client: Orchestra, task: CreateTaskInput): Promise<void> {
      const created = await client.tasks.create(task);
      const until = Date.now() + ASSIGN_DEADLINE_MS;
      while ((await client.tasks.get(created.id)).state !== 'running') {
        assert.ok(Date.now() < until, 'the held task never started');
        await new Promise((r) => setTimeout(r, 50));
      }
    }

    test('a task an idle agent can take is assigned behind 4,000 tasks needing a capability nobody offers', async () => {
      const { client, agentKey } = await tenant('nobody-offers');
      await agent(agentKey, 'idle', ['work'], 2);
      await queue(client, BLOCKERS, { capabilities: ['nobody-offers-this'], input: null });
      const task = await runs(client, { capabilities: ['work'], input: { n: 1 } });
      assert.equal(task.state, 'succeeded');
      assert.equal(task.agent_id, 'idle');
      const left = await client.tasks.list({ state: ['queued'], limit: 1 });
      assert.equal(left.items[0]?.capabilities[0], 'nobody-offers-this');
    });

    test('a task an idle agent can take is assigned behind 4,000 tasks of a concurrency key at its limit', async () => {
      const { client, agentKey } = await tenant('key-at-limit');
      await agent(agentKey, 'keyed', ['work'], 2);
      // The key's limit is 1 (the default), and this task holds it.
      await held(client, { capabilities: ['work'], concurrency_key: 'k', input: { hold: true } });
      await queue(client, BLOCKERS, { capabilities: ['work'], concurrency_key: 'k', input: null });
      const task = await runs(client, { capabilities: ['work'], input: { n: 2 } });
      assert.equal(task.state, 'succeeded');
      assert.equal(task.agent_id, 'keyed');
      // The limit still holds: the key's tasks wait.
      const running = await client.tasks.list({ state: ['assigned', 'running'] });
      assert.deepEqual(
        running.items.map((t) => t.concurrency_key),
        ['k'],
      );
    });

    test("tenant A's busy 4,000-task backlog delays neither its other agent's tasks nor tenant B's", async () => {
      const a = await tenant('busy-a');
      const b = await tenant('busy-b');
      // A's only agent for `work` is busy with one task, and 4,000 more wait for it.
      await agent(a.agentKey, 'busy', ['work'], 1);
      await held(a.client, { capabilities: ['work'], input: { hold: true } });
      await queue(a.client, BLOCKERS, { capabilities: ['work'], input: null });
      await agent(a.agentKey, 'other', ['other'], 1);
      await agent(b.agentKey, 'b', ['work'], 1);

      const [ofA, ofB] = await Promise.all([
        runs(a.client, { capabilities: ['other'], input: { n: 3 } }),
        runs(b.client, { capabilities: ['work'], input: { n: 4 } }),
      ]);
      assert.deepEqual([ofA.state, ofA.agent_id], ['succeeded', 'other']);
      assert.deepEqual([ofB.state, ofB.agent_id], ['succeeded', 'b']);
    });

    test('a key at its limit with quotes, commas and braces in it does not stop dispatch', async () => {
      // The pass's query names the keys that hold tasks in one parameter (a PostgreSQL
      // array, a JSON array on SQLite): an odd key must not break it.
      const { client, agentKey } = await tenant('odd-key');
      await agent(agentKey, 'odd', ['work'], 2);
      const key = 'a,"b}\\{c\'';
      await held(client, { capabilities: ['work'], concurrency_key: key, input: { hold: true } });
      const waiting = await client.tasks.create({
        capabilities: ['work'],
        concurrency_key: key,
        input: null,
      });
      const task = await runs(client, { capabilities: ['work'], input: { n: 5 } });
      assert.deepEqual([task.state, task.agent_id], ['succeeded', 'odd']);
      assert.equal((await client.tasks.get(waiting.id)).state, 'queued');
    });
  });

  describe(`dispatch within the tenant's limit on ${store}`, () => {
    let server: TestServer;
    after(() => server?.close());

    test('with ORCHESTRA_TENANT_MAX_CONCURRENCY=1 a second task is assigned only after the first ended', async () => {
      server = await startTestServer({ store, env: { ORCHESTRA_TENANT_MAX_CONCURRENCY: '1' } });
      const client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      const agentKey = (await client.apiKeys.create({ name: 'agents', role: 'agent' })).secret;
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId: 'two-slots',
        capabilities: ['work'],
        concurrency: 2,
        handleSignals: false,
        handler: (input, ctx) =>
          (input as { hold?: boolean } | null)?.hold === true
            ? new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(null)))
            : input,
      });
      await worker.start();
      try {
        const first = await client.tasks.create({ capabilities: ['work'], input: { hold: true } });
        const until = Date.now() + ASSIGN_DEADLINE_MS;
        while ((await client.tasks.get(first.id)).state !== 'running') {
          assert.ok(Date.now() < until, 'the first task never started');
          await new Promise((r) => setTimeout(r, 50));
        }
        const second = await client.tasks.create({ capabilities: ['work'], input: null });
        await client.tasks.cancel(first.id);
        const ended = await client.tasks.wait(first.id, { timeoutMs: ASSIGN_DEADLINE_MS });
        const ran = await client.tasks.wait(second.id, { timeoutMs: ASSIGN_DEADLINE_MS });
        assert.equal(ran.state, 'succeeded');
        // The agent had a free slot all along: only the tenant's limit kept it waiting.
        assert.ok(
          (ran.assigned_at ?? '') >= (ended.finished_at ?? '\uffff'),
          `assigned ${ran.assigned_at}, before the first ended ${ended.finished_at}`,
        );
      } finally {
        await worker.stop({ drain: false });
      }
    });
  });
}
