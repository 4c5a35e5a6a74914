// Found by the OpenAPI fuzzer (issue 18): a U+0000 in an id, a name or a lookup (`/v1/tasks/%00`,
// `{"template": "\u0000"}`) answered 500 on PostgreSQL, which cannot store or compare the
// character in text. It is refused with a 400 where a schema declares a string; free JSON
// (task input, config values) is stored as JSON text, where it is escaped, and keeps it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

for (const store of STORE_VARIANTS) {
  describe(`U+0000 in requests (${store})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store });
    });
    after(() => server.stop());

    test('a U+0000 (%00) in a path or query parameter gets 400 naming it, not 500', async () => {
      const cases: [string, string][] = [
        ['/v1/tasks/%00', 'params.id'],
        ['/v1/templates/a%00b/versions/1', 'params.template'],
        ['/v1/sessions/ses_%00', 'params.id'],
        ['/v1/tasks?template=%00', 'querystring.template'],
        ['/v1/tasks?label=a%3Db&label=a%3Db%00', 'querystring.label'],
      ];
      for (const [url, field] of cases) {
        const error = expectError(await server.call('GET', url), 400, 'VALIDATION_FAILED');
        assert.equal(error.details.fields[0].field, field, url);
        assert.match(error.message, /U\+0000/);
      }
    });

    test('a U+0000 in a body string the schema declares gets 400 naming it, not 500', async () => {
      const cases: [string, unknown, string][] = [
        ['/v1/sessions', { name: 'a\u0000b' }, 'body.name'],
        ['/v1/tasks', { template: '\u0000' }, 'body.template'],
        ['/v1/tasks/batch', { tasks: [{ template: 'x\u0000' }] }, 'body.tasks.0.template'],
      ];
      for (const [url, body, field] of cases) {
        const error = expectError(
          await server.call('POST', url, { body }),
          400,
          'VALIDATION_FAILED',
        );
        assert.equal(error.details.fields[0].field, field, url);
      }
    });

    test('a U+0000 inside free JSON (task input, config values) is stored and read back', async () => {
      const template = await server.call('POST', '/v1/templates', { body: { name: 'nul' } });
      assert.equal(template.status, 201, JSON.stringify(template.body));
      const input = { text: 'a\u0000b', 'key\u0000': 1 };
      const task = await server.call('POST', '/v1/tasks', { body: { template: 'nul', input } });
      assert.equal(task.status, 201, JSON.stringify(task.body));
      assert.deepEqual((await server.call('GET', `/v1/tasks/${task.body.id}`)).body.input, input);
      const put = await server.call('PUT', '/v1/config/nul/key', { body: { value: input } });
      assert.equal(put.status, 201, JSON.stringify(put.body));
      assert.deepEqual((await server.call('GET', '/v1/config/nul/key')).body.value, input);
    });
  });
}
