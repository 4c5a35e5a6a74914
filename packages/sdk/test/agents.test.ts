import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import {
  type Agent,
  AgentWorker,
  type AgentWorkerOptions,
  Orchestra,
  type TaskHandler,
} from '../src/index.ts';
import { collect, eventually, rejection } from './support.ts';

// `orchestra.agents` against a real server, with agents that are real AgentWorkers in this
// process connected over the agent protocol. Each test uses agent ids and capabilities of
// its own, so that the agents of earlier tests do not change what it sees.

/** How long a test gives the dispatcher to (wrongly) hand a task to an agent. */
const NO_DISPATCH_MS = 750;
const EVENTUALLY_MS = 10_000;

/** A task handler that holds every task until `release()`, counting the tasks it got. */
function gate(): { handler: TaskHandler; release: () => void; started: string[] } {
  const started: string[] = [];
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    started,
    release: () => open(),
    handler: async (_input, context) => {
      started.push(context.task.id);
      await opened;
      return { done: true };
    },
  };
}

const ids = (agents: Agent[]) => agents.map((a) => a.id);

/** The agent without what every heartbeat changes, to compare two reads of it. */
function steady(agent: Agent): Partial<Agent> {
  const { last_heartbeat_at, lease_expires_at, load, updated_at, ...rest } = agent;
  return rest;
}

for (const store of STORE_VARIANTS) {
  describe(`orchestra.agents on ${store}`, () => {
    let server: TestServer;
    let admin: Orchestra;
    let viewer: Orchestra;
    let agentKey: string;
    const workers: AgentWorker[] = [];
    const gates: (() => void)[] = [];

    /** Connects an agent as the SDK's users do; resolves once it registered. */
    const connect = async (
      agentId: string,
      capabilities: string[],
      options: Partial<AgentWorkerOptions> = {},
    ): Promise<AgentWorker> => {
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId,
        capabilities,
        handler: () => ({ ok: true }),
        handleSignals: false,
        ...options,
      });
      workers.push(worker);
      await worker.start();
      return worker;
    };

    /** Stops the worker and waits until the server recorded the agent as offline. */
    const disconnect = async (worker: AgentWorker, agentId: string): Promise<Agent> => {
      await worker.stop();
      return eventually(`agent ${agentId} going offline`, async () => {
        const agent = await admin.agents.get(agentId);
        return agent.status === 'offline' ? agent : undefined;
      });
    };

    before(async () => {
      server = await startTestServer({ store });
      admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
      agentKey = (await admin.apiKeys.create({ name: 'sdk-agents', role: 'agent' })).secret;
      const viewerKey = await admin.apiKeys.create({ name: 'sdk-agents-viewer', role: 'viewer' });
      viewer = new Orchestra({ url: server.url, apiKey: viewerKey.secret });
    });
    after(async () => {
      for (const release of gates) release();
      await Promise.all(workers.map((w) => w.stop({ drain: false })));
      await server.stop();
    });

    test('get and list show a connected agent with its status, capabilities and connection', async () => {
      const before = Date.now();
      await connect('show-1', ['show:summarise', 'show:translate'], {
        name: 'Summariser',
        concurrency: 3,
        weight: 2,
        labels: { zone: 'eu' },
      });

      const agent = await admin.agents.get('show-1');
      assert.equal(agent.id, 'show-1');
      assert.equal(agent.tenant_id, 'default');
      assert.equal(agent.name, 'Summariser');
      assert.equal(agent.status, 'online');
      assert.equal(agent.status_reason, null);
      assert.deepEqual(agent.capabilities, ['show:summarise', 'show:translate']);
      assert.equal(agent.max_concurrency, 3);
      assert.equal(agent.weight, 2);
      assert.deepEqual(agent.labels, { zone: 'eu' });
      assert.equal(agent.sdk?.name, '@orchestra/sdk');
      assert.deepEqual(agent.in_flight, []);
      assert.equal(typeof agent.node_id, 'string');
      assert.ok(agent.connected_at !== null && Date.parse(agent.connected_at) >= before - 1000);
      assert.ok(agent.last_heartbeat_at !== null);
      assert.ok(agent.lease_expires_at !== null && Date.parse(agent.lease_expires_at) > before);

      const { items, next_cursor } = await admin.agents.list({ capability: 'show:translate' });
      assert.deepEqual(items.map(steady), [steady(agent)]);
      assert.equal(next_cursor, null);
    });

    test('an agent running as many tasks as it may is busy and lists the tasks it holds', async () => {
      const held = gate();
      gates.push(held.release);
      await connect('busy-1', ['busy:cap'], { concurrency: 1, handler: held.handler });
      const task = await admin.tasks.create({ capabilities: ['busy:cap'] });

      const busy = await eventually('busy-1 holding the task', async () => {
        const agent = await admin.agents.get('busy-1');
        return agent.in_flight.length > 0 ? agent : undefined;
      });
      assert.equal(busy.status, 'busy');
      assert.deepEqual(busy.in_flight, [task.id]);

      held.release();
      assert.equal(
        (await admin.tasks.wait(task.id, { timeoutMs: EVENTUALLY_MS })).state,
        'succeeded',
      );
      const idle = await eventually('busy-1 letting go of the task', async () => {
        const agent = await admin.agents.get('busy-1');
        return agent.in_flight.length === 0 ? agent : undefined;
      });
      assert.equal(idle.status, 'online');
    });

    test('list pages with limit and cursor, in id order; listAll follows every page', async () => {
      // Registered out of order: the list is in id order whatever the order of arrival.
      for (const id of ['page-3', 'page-1', 'page-4', 'page-0', 'page-2']) {
        await connect(id, ['paging']);
      }

      const first = await admin.agents.list({ capability: 'paging', limit: 2 });
      assert.deepEqual(ids(first.items), ['page-0', 'page-1']);
      assert.notEqual(first.next_cursor, null);
      const second = await admin.agents.list({
        capability: 'paging',
        limit: 2,
        cursor: first.next_cursor ?? '',
      });
      assert.deepEqual(ids(second.items), ['page-2', 'page-3']);
      const third = await admin.agents.list({
        capability: 'paging',
        limit: 2,
        cursor: second.next_cursor ?? '',
      });
      assert.deepEqual(ids(third.items), ['page-4']);
      assert.equal(third.next_cursor, null);

      const all = await collect(admin.agents.listAll({ capability: 'paging', limit: 2 }));
      assert.deepEqual(ids(all), ['page-0', 'page-1', 'page-2', 'page-3', 'page-4']);

      const bad = await rejection(() => admin.agents.list({ cursor: 'not-a-cursor' }));
      assert.equal(bad.status, 400);
    });

    test('list filters by status (one or several) and by capability', async () => {
      const held = gate();
      gates.push(held.release);
      await connect('filter-idle', ['filter:any', 'filter:idle']);
      await connect('filter-busy', ['filter:any', 'filter:busy'], {
        concurrency: 1,
        handler: held.handler,
      });
      await connect('filter-drained', ['filter:any']);
      const gone = await connect('filter-gone', ['filter:any']);
      await disconnect(gone, 'filter-gone');
      await admin.agents.drain('filter-drained');
      await admin.tasks.create({ capabilities: ['filter:busy'] });
      await eventually('filter-busy busy', async () =>
        (await admin.agents.get('filter-busy')).status === 'busy' ? true : undefined,
      );

      const listed = async (options: Parameters<Orchestra['agents']['list']>[0]) =>
        ids(await collect(admin.agents.listAll({ capability: 'filter:any', ...options })));
      assert.deepEqual(await listed({}), [
        'filter-busy',
        'filter-drained',
        'filter-gone',
        'filter-idle',
      ]);
      assert.deepEqual(await listed({ status: 'online' }), ['filter-idle']);
      assert.deepEqual(await listed({ status: 'busy' }), ['filter-busy']);
      assert.deepEqual(await listed({ status: 'draining' }), ['filter-drained']);
      assert.deepEqual(await listed({ status: ['offline', 'busy'] }), [
        'filter-busy',
        'filter-gone',
      ]);
      assert.deepEqual(await listed({ status: 'error' }), []);

      // Without a capability filter, the status filter still holds across the tenant.
      for (const agent of await collect(admin.agents.listAll({ status: 'draining' }))) {
        assert.equal(agent.status, 'draining', agent.id);
      }
      assert.deepEqual(ids((await admin.agents.list({ capability: 'filter:idle' })).items), [
        'filter-idle',
      ]);
      assert.deepEqual((await admin.agents.list({ capability: 'filter:nobody' })).items, []);

      const unknown = await rejection(() =>
        admin.agents.list({ status: 'asleep' as unknown as 'online' }),
      );
      assert.equal(unknown.code, 'VALIDATION_FAILED');
      held.release();
    });

    test('drain makes the agent draining, and it is given no new task', async () => {
      const drained = gate();
      gates.push(drained.release);
      await connect('drain-1', ['drain:cap'], { handler: drained.handler, concurrency: 2 });

      const agent = await admin.agents.drain('drain-1');
      assert.equal(agent.id, 'drain-1');
      assert.equal(agent.status, 'draining');
      assert.equal(agent.status_reason, 'drain requested');
      assert.equal((await admin.agents.get('drain-1')).status, 'draining');

      const task = await admin.tasks.create({ capabilities: ['drain:cap'] });
      await sleep(NO_DISPATCH_MS);
      const waiting = await admin.tasks.get(task.id);
      assert.equal(waiting.state, 'queued');
      assert.equal(waiting.agent_id, null);
      assert.deepEqual((await admin.agents.get('drain-1')).in_flight, []);

      // The task was runnable all along: an agent that is not draining gets it.
      await connect('drain-2', ['drain:cap']);
      const done = await admin.tasks.wait(task.id, { timeoutMs: EVENTUALLY_MS });
      assert.equal(done.state, 'succeeded');
      assert.equal(done.agent_id, 'drain-2');
      assert.deepEqual(drained.started, []);
      // Still connected, still draining: a drain does not disconnect the agent.
      assert.equal((await admin.agents.get('drain-1')).status, 'draining');
    });

    test('delete refuses a connected agent, and forgets it once its worker stopped', async () => {
      const worker = await connect('delete-1', ['delete:cap']);

      const connected = await rejection(() => admin.agents.delete('delete-1'));
      assert.equal(connected.code, 'AGENT_CONNECTED');
      assert.equal(connected.status, 409);
      assert.equal((await admin.agents.get('delete-1')).status, 'online');

      const offline = await disconnect(worker, 'delete-1');
      assert.equal(offline.node_id, null);
      const notConnected = await rejection(() => admin.agents.drain('delete-1'));
      assert.equal(notConnected.code, 'AGENT_NOT_CONNECTED');
      assert.equal(notConnected.status, 409);

      assert.equal(await admin.agents.delete('delete-1'), undefined);
      const gone = await rejection(() => admin.agents.get('delete-1'));
      assert.equal(gone.code, 'AGENT_NOT_FOUND');
      assert.ok(!ids(await collect(admin.agents.listAll())).includes('delete-1'));
    });

    test('an unknown agent id rejects with AGENT_NOT_FOUND', async () => {
      for (const call of [
        () => admin.agents.get('no-such-agent'),
        () => admin.agents.drain('no-such-agent'),
        () => admin.agents.delete('no-such-agent'),
      ]) {
        const err = await rejection(call);
        assert.equal(err.code, 'AGENT_NOT_FOUND');
        assert.equal(err.status, 404);
      }
    });

    test('a viewer can list and get agents but not drain or delete them', async () => {
      await connect('viewer-1', ['viewer:cap']);
      assert.deepEqual(ids((await viewer.agents.list({ capability: 'viewer:cap' })).items), [
        'viewer-1',
      ]);
      assert.equal((await viewer.agents.get('viewer-1')).status, 'online');

      for (const call of [
        () => viewer.agents.drain('viewer-1'),
        () => viewer.agents.delete('viewer-1'),
      ]) {
        const err = await rejection(call);
        assert.equal(err.code, 'PERMISSION_DENIED');
        assert.equal(err.status, 403);
      }
      assert.equal((await admin.agents.get('viewer-1')).status, 'online');
    });

    test('another tenant sees none of these agents, and has its own under the same id', async () => {
      await connect('shared-id', ['tenant:cap']);
      const { admin_key } = await admin.tenants.create({ id: 'sdk-agents-other' });
      const other = new Orchestra({ url: server.url, apiKey: admin_key.secret });

      assert.deepEqual(await collect(other.agents.listAll()), []);
      for (const call of [
        () => other.agents.get('shared-id'),
        () => other.agents.drain('shared-id'),
        () => other.agents.delete('shared-id'),
      ]) {
        assert.equal((await rejection(call)).code, 'AGENT_NOT_FOUND');
      }

      const otherAgentKey = await other.apiKeys.create({ name: 'other-agent', role: 'agent' });
      const worker = new AgentWorker({
        url: server.url,
        apiKey: otherAgentKey.secret,
        agentId: 'shared-id',
        capabilities: ['other:cap'],
        handler: () => null,
        handleSignals: false,
      });
      workers.push(worker);
      await worker.start();

      const theirs = await other.agents.get('shared-id');
      assert.equal(theirs.tenant_id, 'sdk-agents-other');
      assert.deepEqual(theirs.capabilities, ['other:cap']);
      assert.deepEqual(ids(await collect(other.agents.listAll())), ['shared-id']);
      // The first tenant's agent of that id is untouched, still connected.
      const ours = await admin.agents.get('shared-id');
      assert.equal(ours.tenant_id, 'default');
      assert.deepEqual(ours.capabilities, ['tenant:cap']);
      assert.equal(ours.status, 'online');
    });
  });
}
