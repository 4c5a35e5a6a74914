import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { killSpawned, STORE_VARIANTS } from '../../server/test/helpers.ts';
import { Orchestra, type TaskEvent } from '../src/index.ts';
import { killScripts, spawnScript, startRestartableServer } from './support.ts';

// Nothing acknowledged is lost: the server is SIGKILLed while tasks are being submitted
// and run by agents in other processes; after a restart every task whose submit got a
// 2xx is there, ends, and succeeded exactly once.

const AGENT_SCRIPT = fileURLToPath(new URL('./fixtures/agent.ts', import.meta.url));
const SUBMITTERS = 6;
/** Submits per submitter at most: the load is bounded even if the kill never lands. */
const MAX_SUBMITS = 400;

for (const store of STORE_VARIANTS) {
  describe(`crash safety on ${store}`, () => {
    after(async () => {
      await killScripts();
      killSpawned();
    });

    test('SIGKILL the server under load: every acknowledged task ends, none succeeds twice', async () => {
      const server = await startRestartableServer(store, {
        ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
        ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '1500',
        ORCHESTRA_TASK_RETRY_BASE_MS: '50',
      });
      try {
        const { url } = server;
        const client = new Orchestra({ url, apiKey: server.adminKey, timeoutMs: 10_000 });
        const agentKey = (await client.apiKeys.create({ name: 'agents', role: 'agent' })).secret;
        const agents = ['a', 'b'].map((n) =>
          spawnScript(AGENT_SCRIPT, {
            args: [
              ...['--url', url, '--api-key', agentKey, '--agent-id', `crash-${store}-${n}`],
              ...['--capabilities', 'crash', '--concurrency', '8', '--reconnect-max-ms', '300'],
            ],
          }),
        );
        await Promise.all(
          agents.map((a) => a.waitFor('registered', (l) => l.event === 'registered')),
        );

        // Submitters run until the server is gone; every 2xx is an acknowledged task.
        const acknowledged: string[] = [];
        let killed = false;
        const submitters = Array.from({ length: SUBMITTERS }, async (_, s) => {
          for (let i = 0; i < MAX_SUBMITS && !killed; i += 1) {
            try {
              const task = await client.tasks.create({
                capabilities: ['crash'],
                input: { op: 'sleep', ms: 20 },
                idempotency_key: `${store}-${s}-${i}`,
              });
              acknowledged.push(task.id);
            } catch {
              return; // the server died with this request in flight: not acknowledged
            }
          }
        });
        // Kill once a good number were acknowledged and some are running.
        while (acknowledged.length < 60 && !killed) await sleep(20);
        const crashed = server.crash();
        killed = true;
        await crashed;
        await Promise.all(submitters);
        assert.ok(acknowledged.length >= 60);

        await server.restart();
        // The agents reconnect on their own (same port) and resume or give back their tasks.
        const ended = await Promise.all(
          acknowledged.map((id) => client.tasks.wait(id, { timeoutMs: 60_000 })),
        );
        const states = new Map<string, number>();
        for (const t of ended) states.set(t.state, (states.get(t.state) ?? 0) + 1);
        assert.deepEqual([...states], [['succeeded', acknowledged.length]]);
        for (const id of acknowledged) {
          const events: TaskEvent[] = [];
          for await (const item of client.tasks.events(id)) {
            if ('offset' in item) events.push(item);
          }
          const succeeded = events.filter((e) => e.type === 'task.succeeded');
          assert.equal(succeeded.length, 1, `${id}: ${events.map((e) => e.type).join(' ')}`);
        }
      } finally {
        await killScripts();
        await server.remove();
      }
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
