import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import { ScriptedModelServer } from '../src/providers/index.ts';
import {
  createTestDatabase,
  expectExit,
  killSpawned,
  runCli,
  type SpawnedOrchestra,
  spawnOrchestra,
  tempDir,
} from './helpers.ts';
import { NatsServer } from './nats-server.ts';

// `orchestra runner`: hosted agents run in a process of their own, beside API nodes that
// leave them to it (ORCHESTRA_HOSTED_RUNNER=false), on the cluster's PostgreSQL and NATS.

const WAIT_MS = 60_000;

describe('orchestra runner', () => {
  let nats: NatsServer;
  let database: { url: string; drop: () => Promise<void> };
  const apiDir = tempDir();
  const runnerDir = tempDir();
  let apiNode: SpawnedOrchestra;
  let runner: SpawnedOrchestra;
  let client: Orchestra;
  let model: ScriptedModelServer;

  before(async () => {
    [nats, database, model] = await Promise.all([
      NatsServer.start(),
      createTestDatabase(),
      new ScriptedModelServer().listen(),
    ]);
    const env = { ORCHESTRA_DATABASE_URL: database.url, ORCHESTRA_NATS_URL: nats.url };
    apiNode = await spawnOrchestra({
      cwd: apiDir.path,
      dataDir: apiDir.path,
      env: { ...env, ORCHESTRA_HOSTED_RUNNER: 'false', ORCHESTRA_INSTANCE_ID: 'api-1' },
    });
    runner = await spawnOrchestra({
      cwd: runnerDir.path,
      dataDir: runnerDir.path,
      env: { ...env, ORCHESTRA_INSTANCE_ID: 'runner-1' },
      command: 'runner',
    });
    const adminKey = readFileSync(join(apiDir.path, 'admin-key'), 'utf8').trim();
    client = new Orchestra({ url: apiNode.url, apiKey: adminKey });
  });
  after(async () => {
    await Promise.all([apiNode?.stop(), runner?.stop()]);
    await Promise.all([nats?.stop(), database?.drop(), model?.close()]);
    killSpawned();
    apiDir.remove();
    runnerDir.remove();
  });

  test('the API node takes the task, the runner process runs it, and serves nothing but its health', async () => {
    await client.modelProviders.create({
      name: 'scripted',
      kind: 'openai',
      base_url: `${model.url}/v1`,
      models: [{ name: 'm' }],
    });
    await client.templates.create({
      name: 'remote',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'm' } },
    });
    model.script('m', { text: 'answered by the runner process' });
    const task = await client.tasks.create({ template: 'remote', input: { prompt: 'hi' } });
    const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result, 'answered by the runner process');
    assert.equal(done.agent_id, 'hosted-runner.runner-1');
    const runners = await client.agents.list({ capability: 'orchestra:llm' });
    assert.deepEqual(
      runners.items.map((a) => a.id),
      ['hosted-runner.runner-1'],
    );
    assert.equal((await fetch(`${runner.url}/healthz`)).status, 200);
    const api = await fetch(`${runner.url}/v1/tasks/${task.id}`);
    assert.equal(api.status, 404);
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'ROUTE_NOT_FOUND');
  });

  test('without a cluster database it refuses to start, saying why', async () => {
    const result = await runCli(['runner'], { cwd: runnerDir.path, env: {} });
    expectExit(result, 2);
    assert.match(result.stderr, /orchestra runner joins a cluster: set ORCHESTRA_DATABASE_URL/);
  });
});
