import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../../sdk/test/support.ts';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';
import { taskOutputs, tenantWithWorker } from './tenant-worker.ts';

const LIMITS = {
  ORCHESTRA_TASK_INPUT_MAX_BYTES: '4096',
  ORCHESTRA_TASK_OUTPUT_MAX_BYTES: '4096',
  ORCHESTRA_TASK_EVENT_MAX_BYTES: '2048',
  ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES: '4096',
};

for (const store of STORE_VARIANTS) {
  describe(`stored value limits (${store})`, () => {
    let server: TestServer;

    before(async () => {
      server = await startTestServer({ store, env: LIMITS });
    });
    after(() => server.stop());

    test('a task input larger than ORCHESTRA_TASK_INPUT_MAX_BYTES was stored: now 413 VALUE_TOO_LARGE naming the limit, and no task', async () => {
      const capability = `limit-input-${store}`;
      const refused = await server.call('POST', '/v1/tasks', {
        body: { capabilities: [capability], input: { text: 'x'.repeat(5000) } },
      });
      const error = expectError(refused, 413, 'VALUE_TOO_LARGE');
      assert.match(error.message, /body\.input .*ORCHESTRA_TASK_INPUT_MAX_BYTES/);
      assert.match(error.message, /4096/);
      assert.equal(error.details.max_bytes, 4096);
      assert.equal(error.details.setting, 'ORCHESTRA_TASK_INPUT_MAX_BYTES');

      const batch = await server.call('POST', '/v1/tasks/batch', {
        body: {
          tasks: [
            { capabilities: [capability], input: 'small' },
            { capabilities: [capability], input: 'y'.repeat(5000) },
          ],
        },
      });
      assert.equal(batch.status, 200);
      assert.deepEqual(
        batch.body.items.map((i: { status: number }) => i.status),
        [201, 413],
      );
      assert.equal(batch.body.items[1].error.code, 'VALUE_TOO_LARGE');
      assert.match(batch.body.items[1].error.message, /body\.tasks\.1\.input/);

      const listed = await server.call('GET', '/v1/tasks?limit=200');
      const mine = listed.body.items.filter((t: { capabilities: string[] }) =>
        t.capabilities.includes(capability),
      );
      assert.deepEqual(
        mine.map((t: { input: unknown }) => t.input),
        ['small'],
      );
    });

    test('a topic message larger than ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES was stored: now 413 VALUE_TOO_LARGE naming the limit, and nothing stored', async () => {
      const ok = await server.call('POST', '/v1/topics/limits.messages/messages', {
        body: { data: 'small' },
      });
      assert.equal(ok.status, 201);
      const refused = await server.call('POST', '/v1/topics/limits.messages/messages', {
        body: { data: 'z'.repeat(5000) },
      });
      const error = expectError(refused, 413, 'VALUE_TOO_LARGE');
      assert.match(error.message, /ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES/);
      assert.match(error.message, /4096/);
      const history = await server.call('GET', '/v1/topics/limits.messages/messages?after=0');
      assert.deepEqual(
        history.body.messages.map((m: { data: unknown }) => m.data),
        ['small'],
      );
      assert.equal(history.body.last_offset, 1);
    });

    test('an agent result or event larger than its limit was stored: now an error frame naming the limit, nothing stored, and the task still the agent’s to fail', async () => {
      const { tenantKey, worker } = await tenantWithWorker(
        server,
        `limits-${store}`,
        'big-output',
        async (_input, context) => {
          context.output('before');
          context.output('e'.repeat(3000));
          context.output('after');
          return { text: 'r'.repeat(5000) };
        },
      );
      try {
        const task = (
          await server.call('POST', '/v1/tasks', {
            key: tenantKey,
            body: { capabilities: ['big-output'], max_attempts: 1 },
          })
        ).body;
        const ended = await eventually('the task ending', async () => {
          const current = await server.call('GET', `/v1/tasks/${task.id}`, { key: tenantKey });
          return ['failed', 'dead', 'succeeded'].includes(current.body.state)
            ? current.body
            : undefined;
        });
        // The SDK reports a refused result as a failure, which the server stores.
        assert.notEqual(ended.state, 'succeeded');
        assert.equal(ended.result, null);
        assert.equal(ended.attempt, 1);
        assert.equal(ended.error.code, 'OUTPUT_INVALID');
        assert.match(ended.error.message, /VALUE_TOO_LARGE|ORCHESTRA_TASK_OUTPUT_MAX_BYTES/);
        assert.match(ended.error.message, /4096/);
        const outputs = await taskOutputs(server, task.id, tenantKey);
        assert.deepEqual(outputs, ['before', 'after']);
      } finally {
        await worker.stop();
      }
    });
  });
}
