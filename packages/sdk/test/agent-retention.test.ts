import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { AgentWorker, Orchestra, OrchestraError } from '../src/index.ts';

// Agents that went away are forgotten after ORCHESTRA_AGENT_RETENTION_MS, so that a pool of
// short-lived agents with fresh ids does not grow the list without end.

const RETENTION_MS = 1_500;
/** Bounds every wait; the machines are shared. */
const WAIT_MS = 30_000;

async function waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function agentStatus(client: Orchestra, id: string): Promise<string | 'gone'> {
  try {
    return (await client.agents.get(id)).status;
  } catch (err) {
    if (err instanceof OrchestraError && err.status === 404) return 'gone';
    throw err;
  }
}

for (const store of STORE_VARIANTS) {
  describe(`offline agents are forgotten after the retention (${store})`, () => {
    let server: TestServer;
    let client: Orchestra;
    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_AGENT_RETENTION_MS: String(RETENTION_MS),
          ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
          ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '2000',
        },
      });
      client = new Orchestra({ url: server.url, apiKey: server.adminKey });
    });
    after(() => server?.stop());

    test('a stopped agent is listed offline, then forgotten; a connected one stays', async () => {
      const { secret: key } = await client.apiKeys.create({ name: 'agents', role: 'agent' });
      const worker = (id: string) =>
        new AgentWorker({
          url: server.url,
          apiKey: key,
          agentId: id,
          capabilities: ['retention'],
          handler: async (input) => input,
        });
      const staying = worker('staying');
      const leaving = worker('leaving');
      await staying.start();
      await leaving.start();
      try {
        // It worked once, so that it holds history (a finished task) when it is forgotten.
        const task = await client.tasks.create({ capabilities: ['retention'], input: { n: 1 } });
        assert.equal((await client.tasks.wait(task.id, { timeoutMs: WAIT_MS })).state, 'succeeded');

        // Taken before the stop: the server marks it offline later still, so the retention
        // runs from after this, however late a busy machine lets the test see it offline.
        const stoppedAt = Date.now();
        await leaving.stop();
        await waitUntil('the stopped agent to be offline', async () => {
          return (await agentStatus(client, 'leaving')) === 'offline';
        });
        await waitUntil('the offline agent to be forgotten', async () => {
          return (await agentStatus(client, 'leaving')) === 'gone';
        });
        assert.ok(Date.now() - stoppedAt >= RETENTION_MS - 200, 'not before the retention');
        assert.equal(await agentStatus(client, 'staying'), 'online');
        const listed = (await client.agents.list()).items.map((a) => a.id);
        assert.deepEqual(listed, ['staying']);

        // The agents topic says so, for live lists (the console's) to drop it.
        const history = await client.topics.history('agents', { limit: 1000 });
        const deleted = history.messages.filter((m) => m.event === 'agent.deleted');
        assert.deepEqual(
          deleted.map((m) => m.data),
          [{ agent_id: 'leaving', reason: 'offline longer than the retention' }],
        );
        // The finished task keeps its record of who ran it.
        assert.ok(
          ['staying', 'leaving'].includes((await client.tasks.get(task.id)).agent_id ?? ''),
        );

        // An agent that comes back is listed again; deleting it is announced too.
        const back = worker('leaving');
        await back.start();
        assert.equal(await agentStatus(client, 'leaving'), 'online');
        await back.stop();
        await waitUntil('the agent to be offline again', async () => {
          return (await agentStatus(client, 'leaving')) === 'offline';
        });
        await client.agents.delete('leaving');
        const after = await client.topics.history('agents', { after: history.last_offset });
        assert.deepEqual(
          after.messages.filter((m) => m.event === 'agent.deleted').map((m) => m.data),
          [{ agent_id: 'leaving', reason: 'deleted by request' }],
        );
      } finally {
        await staying.stop();
        await leaving.stop();
      }
    });
  });
}
