import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../../sdk/test/support.ts';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';
import { tenantWithWorker } from './tenant-worker.ts';

// Issue 18, finding 3: the size limits of stored values, and the count limits of finding 7,
// are settings per tenant. The node's settings are the defaults; a system admin sets a
// tenant's own with PATCH /v1/tenants/{id}, and each write then checks the writer's
// tenant's value. Here the node allows 4 KiB inputs and 2 topics; tenants get more or less.

const SETTINGS = {
  ORCHESTRA_TASK_INPUT_MAX_BYTES: '4096',
  ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES: '4096',
  ORCHESTRA_TENANT_MAX_TOPICS: '2',
  ORCHESTRA_TENANT_MAX_TEMPLATES: '2',
};

for (const store of STORE_VARIANTS) {
  describe(`tenant limits set per tenant (${store})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store, env: SETTINGS });
    });
    after(() => server.stop());

    async function newTenant(id: string): Promise<string> {
      const created = await server.call('POST', '/v1/tenants', { body: { id } });
      assert.equal(created.status, 201);
      return created.body.admin_key.secret;
    }

    const patch = (id: string, body: unknown, key?: string) =>
      server.call('PATCH', `/v1/tenants/${id}`, { body, ...(key ? { key } : {}) });

    test('a system admin sets, shows and removes a tenant’s limits; nobody else can', async () => {
      const key = await newTenant('own-limits');
      const fresh = await server.call('GET', '/v1/tenants/own-limits', { key });
      assert.deepEqual(fresh.body.limit_overrides, {});
      assert.equal(fresh.body.limits.task_input_max_bytes, 4096);
      assert.equal(fresh.body.limits.max_topics, 2);
      assert.equal(fresh.body.limits.config_value_max_bytes, 131072);

      const changed = await patch('own-limits', {
        name: 'Own Limits',
        limits: { task_input_max_bytes: 8192, max_topics: 0 },
      });
      assert.equal(changed.status, 200);
      assert.equal(changed.body.name, 'Own Limits');
      assert.deepEqual(changed.body.limit_overrides, { task_input_max_bytes: 8192, max_topics: 0 });
      assert.equal(changed.body.limits.task_input_max_bytes, 8192);
      assert.equal(changed.body.limits.max_topics, 0);
      assert.equal(changed.body.limits.topic_message_max_bytes, 4096);
      // The tenant's own admin reads them, and the list shows them too.
      const seen = await server.call('GET', '/v1/tenants/own-limits', { key });
      assert.deepEqual(seen.body, changed.body);
      const listed = await server.call('GET', '/v1/tenants?limit=200');
      const row = listed.body.items.find((t: { id: string }) => t.id === 'own-limits');
      assert.deepEqual(row.limit_overrides, changed.body.limit_overrides);

      // A tenant's admin may not raise its own limits, nor see that another tenant exists.
      expectError(
        await patch('own-limits', { limits: { max_topics: 100 } }, key),
        403,
        'PERMISSION_DENIED',
      );
      expectError(
        await patch('default', { limits: { max_topics: 100 } }, key),
        404,
        'TENANT_NOT_FOUND',
      );
      expectError(await patch('no-such-tenant', { name: 'x' }), 404, 'TENANT_NOT_FOUND');

      // Two changes of different limits at once both land.
      const both = await Promise.all([
        patch('own-limits', { limits: { max_sessions: 5 } }),
        patch('own-limits', { limits: { max_templates: 6 } }),
      ]);
      assert.deepEqual(
        both.map((r) => r.status),
        [200, 200],
      );
      const merged = await server.call('GET', '/v1/tenants/own-limits');
      assert.deepEqual(merged.body.limit_overrides, {
        task_input_max_bytes: 8192,
        max_topics: 0,
        max_sessions: 5,
        max_templates: 6,
      });

      // null removes an override: the node's setting applies again.
      const removed = await patch('own-limits', {
        limits: { max_topics: null, max_sessions: null },
      });
      assert.deepEqual(removed.body.limit_overrides, {
        task_input_max_bytes: 8192,
        max_templates: 6,
      });
      assert.equal(removed.body.limits.max_topics, 2);
    });

    test('a bad limit is a 400 naming it, and changes nothing', async () => {
      await newTenant('bad-limits');
      const before = (await server.call('GET', '/v1/tenants/bad-limits')).body;
      const cases: [unknown, RegExp][] = [
        [{ limits: { task_input_max_bytes: 10 } }, /body\.limits\.task_input_max_bytes/],
        [{ limits: { task_input_max_bytes: 1e12 } }, /body\.limits\.task_input_max_bytes/],
        [{ limits: { max_topics: -1 } }, /body\.limits\.max_topics/],
        [{ limits: { max_topics: 1.5 } }, /body\.limits\.max_topics/],
        [{ limits: { max_topics: 'many' } }, /body\.limits\.max_topics/],
        [{ limits: { max_widgets: 3 } }, /max_widgets/],
        [{ limits: [] }, /body\.limits/],
        [{ name: '' }, /body\.name/],
        [{ kind: 'system' }, /kind/],
      ];
      for (const [body, field] of cases) {
        const error = expectError(await patch('bad-limits', body), 400, 'VALIDATION_FAILED');
        assert.match(error.message, field, JSON.stringify(body));
      }
      assert.deepEqual((await server.call('GET', '/v1/tenants/bad-limits')).body, before);
    });

    test('a tenant’s own size limits apply to it alone, and the refusal names them', async () => {
      const key = await newTenant('big-inputs');
      await patch('big-inputs', {
        limits: { task_input_max_bytes: 16384, topic_message_max_bytes: 1024 },
      });
      const input = { text: 'x'.repeat(6000) };
      // Above the node's 4 KiB, within the tenant's 16 KiB.
      const accepted = await server.call('POST', '/v1/tasks', {
        key,
        body: { capabilities: ['nobody'], input },
      });
      assert.equal(accepted.status, 201);
      const read = await server.call('GET', `/v1/tasks/${accepted.body.id}`, { key });
      assert.deepEqual(read.body.input, input);
      // Another tenant keeps the node's limit.
      const refused = expectError(
        await server.call('POST', '/v1/tasks', { body: { capabilities: ['nobody'], input } }),
        413,
        'VALUE_TOO_LARGE',
      );
      assert.match(refused.message, /ORCHESTRA_TASK_INPUT_MAX_BYTES/);
      assert.equal(refused.details.source, 'setting');
      assert.equal(refused.details.limit, 'task_input_max_bytes');

      // Below the node's limit, the tenant's own lower one refuses, and says so.
      const message = 'm'.repeat(2000);
      const own = expectError(
        await server.call('POST', '/v1/topics/sized/messages', { key, body: { data: message } }),
        413,
        'VALUE_TOO_LARGE',
      );
      assert.match(own.message, /the tenant's limit topic_message_max_bytes/);
      assert.deepEqual(
        [own.details.limit, own.details.setting, own.details.source, own.details.max_bytes],
        ['topic_message_max_bytes', 'ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES', 'tenant', 1024],
      );
      expectError(
        await server.call('GET', '/v1/topics/sized/messages', { key }),
        404,
        'TOPIC_NOT_FOUND',
      );
      const elsewhere = await server.call('POST', '/v1/topics/sized/messages', {
        body: { data: message },
      });
      assert.equal(elsewhere.status, 201);
    });

    test('a config value above the limit is 413 VALUE_TOO_LARGE, by the tenant’s own limit where set', async () => {
      const key = await newTenant('small-config');
      await patch('small-config', { limits: { config_value_max_bytes: 1024 } });
      const value = 'v'.repeat(2000);
      const refused = expectError(
        await server.call('PUT', '/v1/config/app/big', { key, body: { value } }),
        413,
        'VALUE_TOO_LARGE',
      );
      assert.match(refused.message, /body\.value .*config_value_max_bytes/);
      expectError(
        await server.call('GET', '/v1/config/app/big', { key }),
        404,
        'CONFIG_KEY_NOT_FOUND',
      );
      // The node's limit (128 KiB) holds for others, and its refusal names the setting.
      assert.equal(
        (await server.call('PUT', '/v1/config/app/big', { body: { value } })).status,
        201,
      );
      const huge = expectError(
        await server.call('PUT', '/v1/config/app/huge', { body: { value: 'h'.repeat(140_000) } }),
        413,
        'VALUE_TOO_LARGE',
      );
      assert.match(huge.message, /ORCHESTRA_CONFIG_MAX_VALUE_BYTES/);
    });

    test('a tenant’s own count limits: fewer or more topics and templates than the node allows', async () => {
      const fewer = await newTenant('fewer-things');
      const more = await newTenant('more-things');
      await patch('fewer-things', { limits: { max_topics: 1, max_templates: 1 } });
      await patch('more-things', { limits: { max_topics: 3 } });
      const publish = (key: string, topic: string) =>
        server.call('POST', `/v1/topics/${topic}/messages`, { key, body: { data: 1 } });
      assert.equal((await publish(fewer, 'count.a')).status, 201);
      const refused = expectError(await publish(fewer, 'count.b'), 409, 'TENANT_LIMIT_REACHED');
      assert.match(refused.message, /the tenant's limit max_topics allows 1/);
      assert.deepEqual(
        [refused.details.limit, refused.details.source, refused.details.value],
        ['max_topics', 'tenant', 1],
      );
      for (const topic of ['count.a', 'count.b', 'count.c']) {
        assert.equal((await publish(more, topic)).status, 201, topic);
      }
      const fourth = expectError(await publish(more, 'count.d'), 409, 'TENANT_LIMIT_REACHED');
      assert.equal(fourth.details.value, 3);

      const template = (key: string, name: string) =>
        server.call('POST', '/v1/templates', { key, body: { name } });
      assert.equal((await template(fewer, 'one')).status, 201);
      expectError(await template(fewer, 'two'), 409, 'TENANT_LIMIT_REACHED');

      // Raising the limit applies to the next create at once on this node.
      await patch('fewer-things', { limits: { max_topics: 2, max_templates: null } });
      assert.equal((await publish(fewer, 'count.b')).status, 201);
      assert.equal((await template(fewer, 'two')).status, 201);
      const third = expectError(await template(fewer, 'three'), 409, 'TENANT_LIMIT_REACHED');
      assert.match(third.message, /ORCHESTRA_TENANT_MAX_TEMPLATES allows 2/);
    });

    test('max_concurrency set for a tenant bounds its running tasks, though its agent has free slots', async () => {
      let running = 0;
      let most = 0;
      const { tenantKey, worker } = await tenantWithWorker(
        server,
        `one-at-a-time-${store}`,
        'slow',
        async () => {
          running += 1;
          most = Math.max(most, running);
          // Long enough that, without the limit, the three tasks of one batch overlap.
          await new Promise((r) => setTimeout(r, 300));
          running -= 1;
          return 'done';
        },
        { concurrency: 3 },
      );
      try {
        await patch(`one-at-a-time-${store}`, { limits: { max_concurrency: 1 } });
        const batch = await server.call('POST', '/v1/tasks/batch', {
          key: tenantKey,
          body: { tasks: [1, 2, 3].map(() => ({ capabilities: ['slow'] })) },
        });
        assert.equal(batch.status, 200);
        const ids: string[] = batch.body.items.map((i: { task: { id: string } }) => i.task.id);
        await eventually('the three tasks succeeding', async () => {
          const states = await Promise.all(
            ids.map(
              async (id) =>
                (await server.call('GET', `/v1/tasks/${id}`, { key: tenantKey })).body.state,
            ),
          );
          return states.every((s) => s === 'succeeded') ? true : undefined;
        });
        assert.equal(most, 1);
      } finally {
        await worker.stop();
      }
    });
  });
}
