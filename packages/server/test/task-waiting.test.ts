import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker } from '../../sdk/src/index.ts';
import { eventually } from '../../sdk/test/support.ts';
import { waitingFor } from '../src/tasks/task-service.ts';
import { STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

// Issue 19, "no agent for a capability": a task submitted where no connected agent offers
// what it needs waited without a word (the CLI's --follow forever). A queued task now says
// why it cannot be placed, in every answer that shows it, until an agent that can take it
// connects.

test('waitingFor names what no connected agent offers', () => {
  assert.equal(waitingFor(['gpu'], [['gpu', 'fs']]), null);
  assert.equal(waitingFor([], [['x']]), null);
  assert.deepEqual(waitingFor(['gpu'], []), {
    reason: 'no_agent',
    message: 'no connected agent offers capability gpu',
    capabilities: ['gpu'],
  });
  assert.deepEqual(waitingFor([], []), {
    reason: 'no_agent',
    message: 'no agent is connected',
    capabilities: [],
  });
  assert.deepEqual(waitingFor(['gpu', 'fs', 'net'], [['fs']]), {
    reason: 'no_agent',
    message: 'no connected agent offers capabilities gpu, net',
    capabilities: ['gpu', 'net'],
  });
  assert.deepEqual(waitingFor(['gpu', 'fs'], [['gpu'], ['fs']]), {
    reason: 'no_agent',
    message: 'no connected agent offers gpu, fs together',
    capabilities: ['gpu', 'fs'],
  });
});

for (const store of STORE_VARIANTS) {
  describe(`a queued task says when no agent can take it (${store})`, () => {
    let server: TestServer;
    let agentKey: string;
    const workers: AgentWorker[] = [];
    before(async () => {
      server = await startTestServer({ store });
      agentKey = (
        await server.call('POST', '/v1/api-keys', { body: { name: 'agents', role: 'agent' } })
      ).body.secret;
    });
    after(async () => {
      await Promise.all(workers.map((w) => w.stop()));
      await server.stop();
    });

    async function startWorker(agentId: string, capabilities: string[]): Promise<AgentWorker> {
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId,
        capabilities,
        handleSignals: false,
        handler: () => 'done',
      });
      workers.push(worker);
      await worker.start();
      return worker;
    }

    test('submit, get, list and ?wait say so; the task runs once such an agent connects', async () => {
      await startWorker(`fs-${store}`, ['fs']);
      const created = await server.call('POST', '/v1/tasks', {
        body: { capabilities: ['gpu', 'fs'], labels: { case: 'waiting' } },
      });
      assert.equal(created.status, 201);
      const expected = {
        reason: 'no_agent',
        message: 'no connected agent offers capability gpu',
        capabilities: ['gpu'],
      };
      assert.deepEqual(created.body.waiting, expected);
      const id: string = created.body.id;
      assert.deepEqual((await server.call('GET', `/v1/tasks/${id}`)).body.waiting, expected);
      const listed = await server.call('GET', '/v1/tasks?label=case=waiting');
      assert.deepEqual(
        listed.body.items.map((t: { id: string; waiting: unknown }) => [t.id, t.waiting]),
        [[id, expected]],
      );
      const waited = await server.call('GET', `/v1/tasks/${id}?wait=1s`);
      assert.equal(waited.body.state, 'queued');
      assert.deepEqual(waited.body.waiting, expected);
      const batch = await server.call('POST', '/v1/tasks/batch', {
        body: { tasks: [{ capabilities: ['gpu'] }, { capabilities: ['fs'] }] },
      });
      assert.deepEqual(
        batch.body.items.map(
          (i: { task: { waiting: { message: string } | null } }) => i.task.waiting?.message ?? null,
        ),
        ['no connected agent offers capability gpu', null],
      );

      const gpu = await startWorker(`gpu-fs-${store}`, ['gpu', 'fs']);
      const done = await eventually('the task running on the new agent', async () => {
        const task = (await server.call('GET', `/v1/tasks/${id}`)).body;
        return task.state === 'succeeded' ? task : undefined;
      });
      assert.equal(done.waiting, null);
      assert.equal(done.agent_id, `gpu-fs-${store}`);
      // Once that agent is gone, nobody offers gpu again.
      await gpu.stop();
      await eventually('the agent being offline', async () => {
        const agent = (await server.call('GET', `/v1/agents/gpu-fs-${store}`)).body;
        return agent.status === 'offline' ? true : undefined;
      });
      const after = await server.call('POST', '/v1/tasks', { body: { capabilities: ['gpu'] } });
      assert.equal(after.body.waiting?.message, 'no connected agent offers capability gpu');
    });
  });
}
