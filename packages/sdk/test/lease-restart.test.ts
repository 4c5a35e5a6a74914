// Issue 18, finding 10: with a 4 s heartbeat timeout, a restart of about 5 s made 58 of 3,000
// tasks run twice: the lease clock ran while no node could receive heartbeats.
import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { killSpawned, STORE_VARIANTS } from '../../server/test/helpers.ts';
import { AgentWorker, Orchestra, type Task, type TaskEvent } from '../src/index.ts';
import { startRestartableServer } from './support.ts';

const TASKS = 20;
const HEARTBEAT_TIMEOUT_MS = 6_000;
/** Longer than the heartbeat timeout: before the fix every lease ran out during the restart. */
const OUTAGE_MS = 7_500;
/**
 * How long the agent stays unable to reach the restarted server: two lease sweeps (1 s
 * each), which before the fix re-ran every task, and well within the lease it has left.
 */
const UNREACHABLE_AFTER_RESTART_MS = 2_500;

/**
 * A TCP relay in front of the server that refuses connections while `blocked`: the agent
 * then reconnects only when the test lets it, not by the luck of its backoff.
 */
async function relayTo(target: string) {
  const port = Number(new URL(target).port);
  let blocked = false;
  const sockets = new Set<Socket>();
  const relay = createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = connect(port, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      socket.on('close', () => sockets.delete(socket));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`,
    block: (value: boolean) => {
      blocked = value;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`${what}: not in time; last ${JSON.stringify(value)}`);
    await sleep(100);
  }
}

async function eventsOf(client: Orchestra, id: string): Promise<TaskEvent[]> {
  const events: TaskEvent[] = [];
  for await (const item of client.tasks.events(id)) if ('offset' in item) events.push(item);
  return events;
}

after(() => killSpawned());

for (const store of STORE_VARIANTS) {
  describe(`leases across a server restart (${store})`, () => {
    test('a restart longer than the heartbeat timeout, with the agents alive, re-runs nothing', async () => {
      const server = await startRestartableServer(store, {
        ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '500',
        ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS),
      });
      const relay = await relayTo(server.url);
      const client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      let release: () => void = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      const worker = new AgentWorker({
        url: relay.url,
        apiKey: server.adminKey,
        agentId: `holder-${store}`,
        capabilities: ['hold'],
        concurrency: TASKS,
        handleSignals: false,
        reconnect: { initialDelayMs: 100, maxDelayMs: 300 },
        handler: async (input) => {
          await released;
          return input;
        },
      });
      try {
        await worker.start();
        const tasks: Task[] = [];
        for (let i = 0; i < TASKS; i++) {
          tasks.push(await client.tasks.create({ capabilities: ['hold'], input: { i } }));
        }
        for (const task of tasks) {
          await until(
            'running',
            () => client.tasks.get(task.id),
            (t) => t.state === 'running',
          );
        }

        relay.block(true);
        await server.crash();
        await sleep(OUTAGE_MS);
        await server.restart();
        // The lease sweeps run while the agent cannot reach the server yet.
        await sleep(UNREACHABLE_AFTER_RESTART_MS);
        relay.block(false);
        await until(
          'the agent back online',
          () => client.agents.get(`holder-${store}`),
          (a) => a.status !== 'offline' && a.in_flight.length === TASKS,
        );
        release();
        for (const task of tasks) {
          const done = await until(
            'the task ended',
            () => client.tasks.get(task.id),
            (t) => ['succeeded', 'failed', 'dead', 'cancelled', 'timed_out'].includes(t.state),
          );
          assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
          assert.equal(done.attempt, 1, `${task.id} ran ${done.attempt} times`);
          const types = (await eventsOf(client, task.id)).map((e) => e.type);
          assert.equal(types.filter((t) => t === 'task.assigned').length, 1, types.join(' '));
        }
      } finally {
        release();
        await worker.stop({ drain: false });
        await relay.close();
        await server.remove();
      }
    });

    test('an agent that died during the restart still loses its tasks, and the re-run is visible', async () => {
      const server = await startRestartableServer(store, {
        ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '500',
        ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '3000',
      });
      const client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      const worker = new AgentWorker({
        url: server.url,
        apiKey: server.adminKey,
        agentId: `dies-${store}`,
        capabilities: ['dies'],
        handleSignals: false,
        handler: () => new Promise(() => {}),
      });
      try {
        await worker.start();
        const task = await client.tasks.create({ capabilities: ['dies'], max_attempts: 2 });
        await until(
          'running',
          () => client.tasks.get(task.id),
          (t) => t.state === 'running',
        );
        // The agent goes for good (its lease keeps running: a reconnect would resume), then
        // the server goes down for longer than the lease had left.
        await worker.stop({ drain: false });
        await server.crash();
        await sleep(4_000);
        await server.restart();
        // Its lease ends once the time left at the crash has passed: back to the queue.
        const requeued = await until(
          'the task given up by its lost agent',
          () => client.tasks.get(task.id),
          (t) => t.state === 'queued' || t.attempt > 1,
        );
        assert.ok(requeued.attempt >= 1);
        // The task is still open (queued again), so its stream follows: read until the loss.
        const seen: string[] = [];
        let lost = false;
        for await (const item of client.tasks.events(task.id, {
          signal: AbortSignal.timeout(60_000),
        })) {
          if (!('offset' in item)) continue;
          seen.push(item.type);
          const error = (item.data as { error?: { code?: string } } | undefined)?.error;
          if (error?.code === 'LEASE_EXPIRED') {
            lost = true;
            break;
          }
        }
        assert.ok(lost, `the lost lease is in the task's events: ${seen.join(' ')}`);
      } finally {
        await worker.stop({ drain: false });
        await server.remove();
      }
    });
  });
}
