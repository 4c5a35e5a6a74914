import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type CliServer, expectError, SPAWN_DEADLINE_MS, startCliServer } from './helpers.ts';

// Issue 18, finding 2: a user's `pattern` with alternation under a star, `^(a|a)*$`, took
// time exponential in the input on the event loop (28 characters: 1.9 s, for every tenant).
// The server runs in its own process here, so that on a backtracking engine the request
// times out (and the test fails) instead of blocking the test's own event loop for hours.

const CATASTROPHIC = '^(a|a)*$';
/** 40 characters that almost match: the worst case for a backtracking engine. */
const ALMOST = `${'a'.repeat(39)}!`;

describe('user patterns run in linear time (spawned server)', () => {
  let server: CliServer;
  before(async () => {
    server = await startCliServer('patterns');
  });
  after(() => server.stop());

  /** A request that fails the test if it gets no answer within the spawn deadline. */
  async function call(method: string, path: string, body: unknown) {
    const response = await fetch(server.server.url + path, {
      method,
      headers: {
        authorization: `Bearer ${server.adminKey}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify(body),
      // A hang detector, not a speed threshold: linear matching answers in milliseconds.
      signal: AbortSignal.timeout(SPAWN_DEADLINE_MS),
    });
    return { status: response.status, body: (await response.json()) as any };
  }

  test('a template input schema with ^(a|a)*$ answers a 40-character input with its validation result', async () => {
    const template = await call('POST', '/v1/templates', {
      name: 'catastrophic',
      input_schema: { type: 'string', maxLength: 100, pattern: CATASTROPHIC },
    });
    assert.equal(template.status, 201, JSON.stringify(template.body));
    const refused = expectError(
      await call('POST', '/v1/tasks', { template: 'catastrophic', input: ALMOST }),
      400,
      'VALIDATION_FAILED',
    );
    assert.equal(refused.details.fields[0].field, 'body.input');
    assert.match(refused.message, /must match pattern/);
    const accepted = await call('POST', '/v1/tasks', {
      template: 'catastrophic',
      input: 'a'.repeat(40),
    });
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
  });

  test('a config key schema with ^(a|a)*$ answers a 40-character value with its validation result', async () => {
    const schema = await call('PUT', '/v1/config-schemas/catastrophic/', {
      schema: {
        type: 'object',
        properties: { name: { type: 'string', maxLength: 100, pattern: CATASTROPHIC } },
      },
    });
    assert.equal(schema.status, 200, JSON.stringify(schema.body));
    const refused = expectError(
      await call('PUT', '/v1/config/catastrophic/a', { value: { name: ALMOST } }),
      400,
      'VALIDATION_FAILED',
    );
    assert.equal(refused.details.fields[0].field, 'body.value.name');
    const accepted = await call('PUT', '/v1/config/catastrophic/a', {
      value: { name: 'a'.repeat(40) },
    });
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
  });
});
