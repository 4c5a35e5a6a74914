import { AgentWorker, type TaskHandler } from '../../sdk/src/index.ts';
import type { TestServer } from './helpers.ts';

/**
 * A new tenant with an admin key, and a started `AgentWorker` of that tenant (agent id and
 * capability `name`) that runs `handler`. Stop the worker in the test's teardown.
 */
export async function tenantWithWorker(
  server: TestServer,
  tenantId: string,
  name: string,
  handler: TaskHandler,
  options: { concurrency?: number } = {},
): Promise<{ tenantKey: string; worker: AgentWorker }> {
  const tenantKey: string = (await server.call('POST', '/v1/tenants', { body: { id: tenantId } }))
    .body.admin_key.secret;
  const agentKey: string = (
    await server.call('POST', '/v1/api-keys', {
      key: tenantKey,
      body: { name: 'agent', role: 'agent' },
    })
  ).body.secret;
  const worker = new AgentWorker({
    url: server.url,
    apiKey: agentKey,
    agentId: name,
    capabilities: [name],
    handleSignals: false,
    handler,
    ...options,
  });
  await worker.start();
  return { tenantKey, worker };
}

/** The `data` of a finished task's `task.output` events, in order (its NDJSON stream). */
export async function taskOutputs(
  server: TestServer,
  taskId: string,
  key: string,
): Promise<unknown[]> {
  const events = await server.call('GET', `/v1/tasks/${taskId}/events`, { key });
  return String(events.body)
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
    .filter((e) => e.type === 'task.output')
    .map((e) => e.data.data);
}
