import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { Orchestra, type Task } from '../src/index.ts';
import { killScripts, spawnScript } from './support.ts';

// How dispatch chooses: priorities, strategies and concurrency limits, with real agents
// (test/fixtures/agent.ts) in separate processes.

const AGENT_SCRIPT = fileURLToPath(new URL('./fixtures/agent.ts', import.meta.url));

for (const store of STORE_VARIANTS) {
  describe(`dispatch on ${store}`, () => {
    let server: TestServer;
    let client: Orchestra;
    let agentKey: string;
    let gates: string;

    before(async () => {
      server = await startTestServer({ store });
      client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      agentKey = (await client.apiKeys.create({ name: 'agents', role: 'agent' })).secret;
      gates = mkdtempSync(join(tmpdir(), 'orchestra-gates-'));
    });
    after(async () => {
      await killScripts();
      await server?.close();
      rmSync(gates, { recursive: true, force: true });
    });

    async function startAgent(id: string, capability: string, concurrency: number) {
      const agent = spawnScript(AGENT_SCRIPT, {
        args: [
          '--url',
          server.url,
          '--api-key',
          agentKey,
          '--agent-id',
          id,
          '--capabilities',
          capability,
          '--concurrency',
          String(concurrency),
        ],
      });
      await agent.waitFor('registered', (l) => l.event === 'registered');
      return agent;
    }

    const waitAll = (tasks: Task[]) =>
      Promise.all(tasks.map((t) => client.tasks.wait(t.id, { timeoutMs: 30_000 })));

    /** A gate file: tasks with `{op:'gate', file}` run until the test opens it. */
    function gate(name: string): { file: string; open(): void } {
      const file = join(gates, `${store}-${name}`);
      return { file, open: () => writeFileSync(file, '') };
    }

    test('higher priority first, then first in, first out', async () => {
      const capability = `prio-${store}`;
      // Submitted while no agent can take them, so that they queue up.
      const order: [string, number][] = [
        ['low-1', 0],
        ['high-1', 5],
        ['low-2', 0],
        ['high-2', 5],
        ['mid', 2],
      ];
      const tasks: Task[] = [];
      for (const [name, priority] of order) {
        tasks.push(
          await client.tasks.create({
            capabilities: [capability],
            priority,
            input: { op: 'echo', value: name },
          }),
        );
      }
      const agent = await startAgent(`prio-${store}`, capability, 1);
      await waitAll(tasks);
      const started = agent
        .lines()
        .filter((l) => l.event === 'started')
        .map((l) => tasks.findIndex((t) => t.id === l.task_id))
        .map((i) => order[i]?.[0]);
      assert.deepEqual(started, ['high-1', 'high-2', 'mid', 'low-1', 'low-2']);
      await agent.kill();
    });

    test('round_robin takes the agents in turn', async () => {
      const capability = `rr-${store}`;
      const agents = await Promise.all(
        ['a', 'b', 'c'].map((n) => startAgent(`rr-${store}-${n}`, capability, 10)),
      );
      const tasks: Task[] = [];
      for (let i = 0; i < 9; i += 1) {
        tasks.push(
          await client.tasks.create({
            capabilities: [capability],
            strategy: 'round_robin',
            input: { op: 'echo', value: i },
          }),
        );
        // One at a time, so that each pick is its own turn.
        await client.tasks.wait(tasks[i]?.id ?? '', { timeoutMs: 30_000 });
      }
      const done = await waitAll(tasks);
      const picked = done.map((t) => t.agent_id ?? '');
      const cycle = picked.slice(0, 3);
      assert.equal(new Set(cycle).size, 3, picked.join(' '));
      assert.deepEqual(picked, [...cycle, ...cycle, ...cycle]);
      await Promise.all(agents.map((a) => a.kill()));
    });

    test('least_connections sends work to the agent holding the fewest tasks', async () => {
      const capability = `lc-${store}`;
      const busy = await startAgent(`lc-${store}-busy`, capability, 5);
      const open = gate('lc');
      const held: Task[] = [];
      for (let i = 0; i < 2; i += 1) {
        held.push(
          await client.tasks.create({
            capabilities: [capability],
            input: { op: 'gate', file: open.file },
          }),
        );
      }
      const first = await busy.waitFor('a started task', (l) => l.event === 'started');
      await busy.waitFor(
        'a second started task',
        (l) => l.event === 'started' && l.task_id !== first.task_id,
      );
      const idle = await startAgent(`lc-${store}-idle`, capability, 5);
      const next = await client.tasks.create({
        capabilities: [capability],
        strategy: 'least_connections',
        input: { op: 'echo' },
      });
      const ended = await client.tasks.wait(next.id, { timeoutMs: 30_000 });
      assert.equal(ended.agent_id, `lc-${store}-idle`);
      open.open();
      await waitAll(held);
      await Promise.all([busy.kill(), idle.kill()]);
    });

    test('consistent_hash keeps one concurrency key on one agent', async () => {
      const capability = `ch-${store}`;
      const agents = await Promise.all(
        ['a', 'b', 'c'].map((n) => startAgent(`ch-${store}-${n}`, capability, 10)),
      );
      const template = await client.templates.create({
        name: `hashed-${store}`,
        capabilities: [capability],
        strategy: 'consistent_hash',
        concurrency_key_limit: 10,
      });
      const byKey = new Map<string, Set<string>>();
      const tasks: Task[] = [];
      for (let i = 0; i < 24; i += 1) {
        tasks.push(
          await client.tasks.create({
            template: template.id,
            concurrency_key: `user-${i % 4}`,
            input: { op: 'echo', value: i },
          }),
        );
      }
      for (const t of await waitAll(tasks)) {
        assert.equal(t.state, 'succeeded');
        const key = t.concurrency_key ?? '';
        byKey.set(key, (byKey.get(key) ?? new Set()).add(t.agent_id ?? ''));
      }
      for (const [key, picked] of byKey) assert.equal(picked.size, 1, `${key}: ${[...picked]}`);
      await Promise.all(agents.map((a) => a.kill()));
    });

    test('a concurrency key limit holds under concurrent submits', async () => {
      const capability = `ck-${store}`;
      // One agent with room for 20: only the limits keep tasks of a key apart, and its
      // output (started, finished, in the order they happened) shows how many ran at once.
      const agent = await startAgent(`ck-${store}`, capability, 20);
      // 20 tasks of one key (default limit 1) and 10 of a key with a template limit of 2,
      // all submitted at once.
      const paired = await client.templates.create({
        name: `paired-${store}`,
        capabilities: [capability],
        concurrency_key_limit: 2,
      });
      const submits = [
        ...Array.from({ length: 20 }, () =>
          client.tasks.create({
            capabilities: [capability],
            concurrency_key: 'single',
            input: { op: 'sleep', ms: 20 },
          }),
        ),
        ...Array.from({ length: 10 }, () =>
          client.tasks.create({
            template: paired.id,
            concurrency_key: 'pair',
            input: { op: 'sleep', ms: 20 },
          }),
        ),
      ];
      const tasks = await Promise.all(submits);
      const ended = await waitAll(tasks);
      assert.ok(ended.every((t) => t.state === 'succeeded'));
      const keyOf = new Map(tasks.map((t) => [t.id, t.concurrency_key ?? '']));
      const running = new Map<string, number>();
      const most = new Map<string, number>();
      for (const line of agent.lines()) {
        if (line.event !== 'started' && line.event !== 'finished') continue;
        const key = keyOf.get(String(line.task_id)) ?? '';
        const now = (running.get(key) ?? 0) + (line.event === 'started' ? 1 : -1);
        running.set(key, now);
        most.set(key, Math.max(most.get(key) ?? 0, now));
      }
      assert.equal(most.get('single'), 1);
      assert.equal(most.get('pair'), 2, 'the pair key may run two at once, and did');
      await agent.kill();
    });
  });
}
