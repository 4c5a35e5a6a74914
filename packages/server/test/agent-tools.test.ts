import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker, TaskFailedError } from '@orchestra/sdk';
import { expectError, startTestServer, type TestServer } from './helpers.ts';

/** Tools served by connected agents: each call is a task through the pool. */
describe('agent tools', () => {
  let server: TestServer;
  let worker: AgentWorker;
  const seen: unknown[] = [];
  before(async () => {
    server = await startTestServer();
    const key = await server.call('POST', '/v1/api-keys', {
      body: { name: 'agent', role: 'agent' },
    });
    worker = new AgentWorker({
      url: server.url,
      apiKey: key.body.secret,
      agentId: 'calculator',
      capabilities: ['tool:add'],
      concurrency: 4,
      handleSignals: false,
      handler: async (input) => {
        seen.push(input);
        const { a, b } = input as { a: number; b: number };
        if (a < 0)
          throw new TaskFailedError('negative numbers are not served', { retryable: false });
        return { sum: a + b };
      },
    });
    await worker.start();
  });
  after(async () => {
    await worker.stop();
    await server.stop();
  });

  test('a call becomes a task an agent serves; its output is the result', async () => {
    const created = await server.call('POST', '/v1/tools', {
      body: {
        name: 'math__add',
        description: 'Adds two numbers',
        annotations: { readOnlyHint: true },
        timeout_ms: 60_000,
        input_schema: {
          type: 'object',
          required: ['a', 'b'],
          properties: { a: { type: 'number' }, b: { type: 'number' } },
        },
        source: { type: 'agent', capabilities: ['tool:add'] },
      },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.source.type, 'agent');
    const res = await server.call('POST', '/v1/tools/math__add/invoke', {
      body: { arguments: { a: 2, b: 40 } },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.call.status, 'succeeded');
    assert.equal(res.body.call.upstream, 'agents');
    assert.deepEqual(res.body.result.structured_content, { sum: 42 });
    assert.deepEqual(seen.at(-1), { a: 2, b: 40 });
    const tasks = await server.call('GET', '/v1/tasks?label=orchestra%2Ftool%3Dmath__add');
    assert.equal(tasks.body.items.length, 1, JSON.stringify(tasks.body));
    assert.equal(tasks.body.items[0].state, 'succeeded');
  });

  test('a task that fails is a tool-level error with its reason', async () => {
    const res = await server.call('POST', '/v1/tools/math__add/invoke', {
      body: { arguments: { a: -1, b: 1 } },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.call.status, 'succeeded');
    assert.equal(res.body.result.is_error, true);
    assert.match(res.body.result.content[0].text, /negative numbers are not served/);
  });

  test('nobody serves it: the call times out and the task is cancelled', async () => {
    await server.call('POST', '/v1/tools', {
      body: {
        name: 'math__nobody',
        annotations: { readOnlyHint: true },
        timeout_ms: 1000,
        source: { type: 'agent', capabilities: ['tool:nobody'] },
      },
    });
    const res = await server.call('POST', '/v1/tools/math__nobody/invoke', { body: {} });
    assert.equal(res.body.call.status, 'failed');
    assert.equal(res.body.call.error.code, 'TOOL_TIMEOUT');
    const tasks = await server.call('GET', '/v1/tasks?label=orchestra%2Ftool%3Dmath__nobody');
    assert.equal(tasks.body.items[0].state, 'cancelled');
  });

  test('an agent tool names a template, capabilities, or both', async () => {
    expectError(
      await server.call('POST', '/v1/tools', {
        body: { name: 'math__none', source: { type: 'agent' } },
      }),
      400,
      'VALIDATION_FAILED',
    );
  });
});
