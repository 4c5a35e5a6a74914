// Issue 18, finding 8: `?limit=Infinity`, `1e400` and `-Infinity` gave 500s, a JSON `-1e999`
// was stored as null (even under a number schema), a JWT with `exp: 1e15` gave 500, and an
// integer above 2^53 was silently rounded.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { expectError, STORE_VARIANTS, startTestServer, type TestServer } from './helpers.ts';

const JWT_SECRET = 'a-test-secret-that-is-at-least-32-characters-long';

/** A value each path parameter accepts, so that only the number under test is wrong. */
const PATH_VALUES: Record<string, string> = {
  template: 'some-template',
  id: '01J0000000000000000000000',
  name: 'some-service',
  topic: 'some.topic',
  key: 'some-key',
};

interface NumericParameter {
  method: string;
  path: string;
  name: string;
  /** The operation's other required query parameters (`from` of a diff), all numbers. */
  required: string[];
}

for (const store of STORE_VARIANTS) {
  describe(`numbers that caused 500s or changed data (${store})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ store, env: { ORCHESTRA_JWT_SECRET: JWT_SECRET } });
    });
    after(() => server.stop());

    test('every numeric query and path parameter refuses Infinity, 1e400 and -Infinity with a 400 naming it', async () => {
      const doc = (await server.call('GET', '/openapi.json')).body;
      const parameters: NumericParameter[] = [];
      for (const [path, operations] of Object.entries<Record<string, any>>(doc.paths)) {
        for (const [method, operation] of Object.entries<any>(operations)) {
          const required = (operation.parameters ?? [])
            .filter((p: any) => p.in === 'query' && p.required)
            .map((p: any) => p.name as string);
          for (const parameter of operation.parameters ?? []) {
            const type = parameter.schema?.type;
            if (parameter.in === 'header' || (type !== 'integer' && type !== 'number')) continue;
            parameters.push({
              method: method.toUpperCase(),
              path,
              name: parameter.name,
              required: required.filter((name: string) => name !== parameter.name),
            });
          }
        }
      }
      // limit on 10 list routes, last/after on topics, minutes on stats, revisions, versions…
      assert.ok(parameters.length >= 15, `found ${parameters.length} numeric parameters`);
      assert.ok(parameters.some((p) => p.path === '/v1/stats' && p.name === 'minutes'));
      assert.ok(parameters.some((p) => p.name === 'last'));
      for (const parameter of parameters) {
        for (const bad of ['Infinity', '1e400', '-Infinity']) {
          const path = parameter.path.replace(/\{([^}]+)\}/g, (_, name: string) =>
            name === parameter.name ? bad : (PATH_VALUES[name] ?? 'x'),
          );
          const inPath = parameter.path.includes(`{${parameter.name}}`);
          const query = [
            ...parameter.required.map((name) => `${name}=1`),
            ...(inPath ? [] : [`${parameter.name}=${bad}`]),
          ];
          const url = query.length > 0 ? `${path}?${query.join('&')}` : path;
          const response = await server.call(parameter.method, url);
          const error = expectError(response, 400, 'VALIDATION_FAILED');
          assert.equal(
            error.details?.fields?.[0]?.field,
            `${inPath ? 'params' : 'querystring'}.${parameter.name}`,
            `${parameter.method} ${url}: ${error.message}`,
          );
        }
      }
    });

    test('a JSON number too large to be finite is refused, not stored as null', async () => {
      const template = await server.call('POST', '/v1/templates', {
        body: {
          name: 'numbers',
          capabilities: ['numbers'],
          input_schema: {
            type: 'object',
            properties: { n: { type: 'number' }, free: {} },
          },
        },
      });
      assert.equal(template.status, 201, JSON.stringify(template.body));
      const before = (await server.call('GET', '/v1/tasks?limit=200')).body.items.length;
      for (const body of [
        '{"template":"numbers","input":{"n":-1e999}}',
        '{"template":"numbers","input":{"free":[1,2,1e400]}}',
      ]) {
        const refused = expectError(
          await server.call('POST', '/v1/tasks', { body }),
          400,
          'VALIDATION_FAILED',
        );
        assert.match(refused.details.fields[0].field, /^body\.input\.(n|free\.2)$/);
        assert.match(refused.message, /not finite/);
      }
      const config = expectError(
        await server.call('PUT', '/v1/config/numbers/limit', { body: '{"value":1e400}' }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(config.details.fields[0].field, 'body.value');
      assert.equal((await server.call('GET', '/v1/tasks?limit=200')).body.items.length, before);
      expectError(
        await server.call('GET', '/v1/config/numbers/limit'),
        404,
        'CONFIG_KEY_NOT_FOUND',
      );
    });

    test('an integer beyond 2^53 is refused with its field named; the largest exact one and a string are kept exactly', async () => {
      const refused = expectError(
        await server.call('POST', '/v1/tasks', {
          body: '{"template":"numbers","input":{"free":{"id":9007199254740993}}}',
        }),
        400,
        'VALIDATION_FAILED',
      );
      assert.equal(refused.details.fields[0].field, 'body.input.free.id');
      assert.match(refused.message, /9007199254740993.*send it as a string/);
      const kept = await server.call('POST', '/v1/tasks', {
        body: '{"template":"numbers","input":{"free":{"id":9007199254740991,"big":"9007199254740993","float":1e300}}}',
      });
      assert.equal(kept.status, 201, JSON.stringify(kept.body));
      const task = await server.call('GET', `/v1/tasks/${kept.body.id}`);
      assert.deepEqual(task.body.input.free, {
        id: 9007199254740991,
        big: '9007199254740993',
        float: 1e300,
      });
    });

    test('a correctly signed JWT with exp 1e15 gets 401 INVALID_TOKEN, not 500', async () => {
      const token = await new SignJWT({ tenant_id: 'system', role: 'admin' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('someone')
        .setExpirationTime(1e15)
        .sign(new TextEncoder().encode(JWT_SECRET));
      const refused = expectError(
        await server.call('GET', '/v1/whoami', { key: token }),
        401,
        'INVALID_TOKEN',
      );
      assert.match(refused.message, /exp/);
    });
  });
}
