import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

// Issue 18, finding 7: nothing bounded how many topics, config keys, templates, sessions or
// queued tasks one tenant could store. Each count now has a setting; here each is 2, and
// the third create is refused with TENANT_LIMIT_REACHED naming the setting, while what
// exists stays as it was and can still be changed.

const LIMIT = 2;

for (const store of STORE_VARIANTS) {
  describe(`tenant limits on stored things (${store})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_TENANT_MAX_TOPICS: String(LIMIT),
          ORCHESTRA_TENANT_MAX_CONFIG_KEYS: String(LIMIT),
          ORCHESTRA_TENANT_MAX_TEMPLATES: String(LIMIT),
          ORCHESTRA_TENANT_MAX_SESSIONS: String(LIMIT),
          ORCHESTRA_TENANT_MAX_QUEUED_TASKS: String(LIMIT),
        },
      });
    });
    after(() => server.stop());

    function expectLimit(response: { status: number; body: any }, setting: string) {
      const error = expectError(response, 409, 'TENANT_LIMIT_REACHED');
      assert.deepEqual([error.details.setting, error.details.value], [setting, LIMIT]);
      assert.match(error.message, new RegExp(setting));
    }

    test('ORCHESTRA_TENANT_MAX_TOPICS: the publish that would create a third topic is refused', async () => {
      const publish = (topic: string, data: unknown) =>
        server.call('POST', `/v1/topics/${topic}/messages`, { body: { data } });
      assert.equal((await publish('limit.a', 1)).status, 201);
      assert.equal((await publish('limit.b', 1)).status, 201);
      expectLimit(await publish('limit.c', 1), 'ORCHESTRA_TENANT_MAX_TOPICS');
      // Existing topics take messages as before.
      assert.equal((await publish('limit.a', 2)).status, 201);
      const listed = await server.call('GET', '/v1/topics?prefix=limit.');
      assert.deepEqual(
        listed.body.items.map((t: { name: string; last_offset: number }) => [
          t.name,
          t.last_offset,
        ]),
        [
          ['limit.a', 2],
          ['limit.b', 1],
        ],
      );
      assert.equal((await server.call('DELETE', '/v1/topics/limit.b')).status, 204);
      assert.equal((await publish('limit.c', 1)).status, 201);
    });

    test('ORCHESTRA_TENANT_MAX_CONFIG_KEYS: a third key is refused, in any environment', async () => {
      const put = (key: string, env: string, value: unknown) =>
        server.call('PUT', `/v1/config/${key}?env=${env}`, { body: { value } });
      assert.equal((await put('limit/a', 'prod', 1)).status, 201);
      assert.equal((await put('limit/a', 'dev', 1)).status, 201);
      expectLimit(await put('limit/b', 'prod', 1), 'ORCHESTRA_TENANT_MAX_CONFIG_KEYS');
      // Existing keys can still be changed.
      assert.equal((await put('limit/a', 'prod', 2)).status, 200);
      const kept = await server.call('GET', '/v1/config/limit/a?env=prod');
      assert.deepEqual([kept.body.value, kept.body.version], [2, 2]);
      expectError(
        await server.call('GET', '/v1/config/limit/b?env=prod'),
        404,
        'CONFIG_KEY_NOT_FOUND',
      );
      assert.equal((await server.call('DELETE', '/v1/config/limit/a?env=dev')).status, 200);
      assert.equal((await put('limit/b', 'prod', 1)).status, 201);
    });

    test('ORCHESTRA_TENANT_MAX_TEMPLATES: a third template is refused; updates go on', async () => {
      const create = (name: string) =>
        server.call('POST', '/v1/templates', { body: { name, description: name } });
      assert.equal((await create('limit-a')).status, 201);
      assert.equal((await create('limit-b')).status, 201);
      expectLimit(await create('limit-c'), 'ORCHESTRA_TENANT_MAX_TEMPLATES');
      const updated = await server.call('PUT', '/v1/templates/limit-a', {
        body: { description: 'again' },
      });
      assert.equal(updated.body.version, 2);
      const listed = await server.call('GET', '/v1/templates');
      assert.deepEqual(
        listed.body.items.map((t: { name: string }) => t.name),
        ['limit-a', 'limit-b'],
      );
      // Another tenant has its own count.
      const other = await server.call('POST', '/v1/tenants', { body: { id: `limits-${store}` } });
      const otherKey = other.body.admin_key.secret as string;
      const theirs = await server.call('POST', '/v1/templates', {
        body: { name: 'limit-c' },
        key: otherKey,
      });
      assert.equal(theirs.status, 201, JSON.stringify(theirs.body));
    });

    test('ORCHESTRA_TENANT_MAX_SESSIONS: a third session is refused', async () => {
      const create = (name: string) => server.call('POST', '/v1/sessions', { body: { name } });
      const first = await create('limit-a');
      assert.equal(first.status, 201);
      assert.equal((await create('limit-b')).status, 201);
      expectLimit(await create('limit-c'), 'ORCHESTRA_TENANT_MAX_SESSIONS');
      const kept = await server.call('GET', `/v1/sessions/${first.body.id}`);
      assert.equal(kept.body.name, 'limit-a');
    });

    test('ORCHESTRA_TENANT_MAX_QUEUED_TASKS: a third queued task is refused; ended ones do not count', async () => {
      const submit = () => server.call('POST', '/v1/tasks', { body: { capabilities: ['nobody'] } });
      const first = await submit();
      assert.equal(first.status, 201);
      assert.equal((await submit()).status, 201);
      expectLimit(await submit(), 'ORCHESTRA_TENANT_MAX_QUEUED_TASKS');
      const kept = await server.call('GET', `/v1/tasks/${first.body.id}`);
      assert.equal(kept.body.state, 'queued');
      assert.equal(
        (await server.call('POST', `/v1/tasks/${first.body.id}/cancel`)).body.state,
        'cancelled',
      );
      assert.equal((await submit()).status, 201);
    });
  });
}
