import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { SecretBox } from '../src/platform/secret-box.ts';
import {
  ModelCallError,
  ModelService,
  ScriptedModelServer,
  type ScriptedTurn,
} from '../src/providers/index.ts';
import { ModelProviderRecords } from '../src/providers/provider-records.ts';
import { SecretService } from '../src/secrets/index.ts';
import {
  closedPort,
  expectError,
  STORE_VARIANTS,
  startTestServer,
  TEST_SECRET_KEY,
  type TestServer,
} from './helpers.ts';

const silent = pino({ level: 'silent' });
const KINDS = ['openai', 'anthropic'] as const;

/** The base URL each official client takes for the scripted server. */
function baseUrlOf(kind: 'openai' | 'anthropic', url: string): string {
  return kind === 'openai' ? `${url}/v1` : url;
}

function providerBody(
  name: string,
  kind: 'openai' | 'anthropic',
  url: string,
  extra: Record<string, unknown> = {},
) {
  return {
    name,
    kind,
    base_url: baseUrlOf(kind, url),
    models: [
      { name: 'small', price: { input: 0.5, output: 1.5, cached_input: 0.25 } },
      { name: 'large' },
    ],
    ...extra,
  };
}

describe('model providers', () => {
  for (const store of STORE_VARIANTS) {
    describe(`the API on ${store}`, () => {
      let server: TestServer;
      let model: ScriptedModelServer;

      before(async () => {
        server = await startTestServer({ store });
        model = await new ScriptedModelServer({
          apiKey: 'sk-test-123',
          models: ['small', 'large'],
        }).listen();
        const put = await server.call('PUT', '/v1/secrets/MODEL_KEY', {
          body: { value: 'sk-test-123' },
        });
        assert.equal(put.status, 201);
      });
      after(async () => {
        await model.close();
        await server.stop();
      });

      test('register, read, list, replace and remove a provider; header values never come back', async () => {
        const created = await server.call('POST', '/v1/model-providers', {
          body: providerBody('local', 'openai', model.url, {
            api_key_secret: 'MODEL_KEY',
            headers: { 'X-Team': 'agents', 'X-Token': 'hidden-value' },
            requests_per_minute: 600,
          }),
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        assert.match(created.body.id, /^mpr_/);
        assert.equal(created.body.kind, 'openai');
        assert.equal(created.body.api_key_secret, 'MODEL_KEY');
        assert.deepEqual(created.body.header_names, ['X-Team', 'X-Token']);
        assert.equal(created.body.max_concurrency, 32);
        assert.equal(created.body.requests_per_minute, 600);
        assert.equal(created.body.timeout_ms, 120000);
        assert.equal(created.body.max_retries, 2);
        assert.equal(created.body.version, 1);
        assert.equal(JSON.stringify(created.body).includes('hidden-value'), false);

        const byId = await server.call('GET', `/v1/model-providers/${created.body.id}`);
        assert.equal(byId.body.name, 'local');
        const other = await server.call('POST', '/v1/model-providers', {
          body: providerBody('claude', 'anthropic', model.url, { api_key_secret: 'MODEL_KEY' }),
        });
        assert.equal(other.status, 201);
        const list = await server.call('GET', '/v1/model-providers?limit=1');
        assert.equal(list.body.items.length, 1);
        assert.equal(list.body.items[0].name, 'local');
        const rest = await server.call(
          'GET',
          `/v1/model-providers?cursor=${encodeURIComponent(list.body.next_cursor)}`,
        );
        assert.deepEqual(
          rest.body.items.map((p: { name: string }) => p.name),
          ['claude'],
        );
        const anthropic = await server.call('GET', '/v1/model-providers?kind=anthropic');
        assert.deepEqual(
          anthropic.body.items.map((p: { name: string }) => p.name),
          ['claude'],
        );

        const replaced = await server.call('PUT', '/v1/model-providers/local', {
          body: {
            kind: 'openai',
            base_url: baseUrlOf('openai', model.url),
            models: [{ name: 'small' }],
            fallbacks: [{ provider: 'claude', model: 'large' }],
          },
        });
        assert.equal(replaced.status, 200, JSON.stringify(replaced.body));
        assert.equal(replaced.body.version, 2);
        assert.deepEqual(replaced.body.header_names, []);
        assert.equal(replaced.body.api_key_secret, null);
        assert.equal(replaced.body.requests_per_minute, null);

        // claude is a fallback of local: it stays until local stops naming it.
        const inUse = expectError(
          await server.call('DELETE', '/v1/model-providers/claude'),
          409,
          'MODEL_PROVIDER_IN_USE',
        );
        assert.deepEqual(inUse.details.used_by, ['local']);
        assert.equal((await server.call('DELETE', '/v1/model-providers/local')).status, 204);
        assert.equal((await server.call('DELETE', '/v1/model-providers/claude')).status, 204);
        expectError(
          await server.call('GET', '/v1/model-providers/local'),
          404,
          'MODEL_PROVIDER_NOT_FOUND',
        );
      });

      test('bad input gets a 4xx naming the field', async () => {
        const cases: [Record<string, unknown>, string][] = [
          [{ ...providerBody('Bad Name', 'openai', model.url) }, 'name'],
          [{ ...providerBody('x', 'openai', 'ftp://example') }, 'base_url'],
          [{ ...providerBody('x', 'gemini' as 'openai', model.url) }, 'kind'],
          [{ ...providerBody('x', 'openai', model.url), models: [] }, 'models'],
          [
            { ...providerBody('x', 'openai', model.url), models: [{ name: 'a' }, { name: 'a' }] },
            'models[1].name',
          ],
          [
            {
              ...providerBody('x', 'openai', model.url),
              models: [{ name: 'a', price: { input: -1, output: 1 } }],
            },
            'price',
          ],
          [
            { ...providerBody('x', 'openai', model.url), api_key_secret: 'NO_SUCH' },
            'api_key_secret',
          ],
          [
            {
              ...providerBody('x', 'openai', model.url),
              fallbacks: [{ provider: 'nobody', model: 'small' }],
            },
            'fallbacks[0].provider',
          ],
          [
            {
              ...providerBody('x', 'openai', model.url),
              fallbacks: [{ provider: 'x', model: 'unlisted' }],
            },
            'fallbacks[0].model',
          ],
          [{ ...providerBody('x', 'openai', model.url), timeout_ms: 10 }, 'timeout_ms'],
          [{ ...providerBody('x', 'openai', model.url), headers: { 'X-A': 'a\r\nb' } }, 'headers'],
          [{ ...providerBody('x', 'openai', model.url), unknown: 1 }, 'unknown'],
        ];
        for (const [body, field] of cases) {
          const response = await server.call('POST', '/v1/model-providers', { body });
          const error = expectError(response, 400, 'VALIDATION_FAILED');
          assert.match(JSON.stringify(error), new RegExp(field.replace(/[[\]]/g, '\\$&')), field);
        }
        expectError(
          await server.call('POST', '/v1/model-providers', { body: '{"name":' }),
          400,
          'INVALID_JSON',
        );
        const body = providerBody('twice', 'openai', model.url);
        assert.equal((await server.call('POST', '/v1/model-providers', { body })).status, 201);
        expectError(
          await server.call('POST', '/v1/model-providers', { body }),
          409,
          'MODEL_PROVIDER_ALREADY_EXISTS',
        );
        expectError(
          await server.call('PUT', '/v1/model-providers/nobody', {
            body: { kind: 'openai', base_url: 'http://127.0.0.1:1/v1', models: [{ name: 'm' }] },
          }),
          404,
          'MODEL_PROVIDER_NOT_FOUND',
        );
        assert.equal((await server.call('DELETE', '/v1/model-providers/twice')).status, 204);
      });

      test('the connectivity test lists models and prompts one; a bad key or a dead server is reported, not thrown', async () => {
        for (const kind of KINDS) {
          const name = `probe-${kind}`;
          await server.call('POST', '/v1/model-providers', {
            body: providerBody(name, kind, model.url, {
              api_key_secret: 'MODEL_KEY',
              models: [{ name: 'small' }, { name: 'missing' }],
            }),
          });
          model.script('small', { text: 'ready' });
          const result = await server.call('POST', `/v1/model-providers/${name}/test`, {
            body: { model: 'small' },
          });
          assert.equal(result.status, 200, JSON.stringify(result.body));
          assert.equal(result.body.ok, true, JSON.stringify(result.body));
          assert.deepEqual(result.body.listed_models, ['small', 'large']);
          assert.deepEqual(result.body.unlisted_models, ['missing']);
          assert.equal(result.body.answer, 'ready');
          const last = model.requests.at(-1);
          assert.equal(last?.api, kind);
          assert.equal(last?.api_key, 'sk-test-123');
        }
        await server.call('PUT', '/v1/secrets/WRONG_KEY', { body: { value: 'sk-wrong' } });
        await server.call('POST', '/v1/model-providers', {
          body: providerBody('wrong-key', 'anthropic', model.url, { api_key_secret: 'WRONG_KEY' }),
        });
        const refused = await server.call('POST', '/v1/model-providers/wrong-key/test');
        assert.equal(refused.status, 200);
        assert.equal(refused.body.ok, false);
        assert.equal(refused.body.error.code, 'refused');
        assert.equal(refused.body.error.status, 401);
        assert.equal(JSON.stringify(refused.body).includes('sk-wrong'), false);

        const port = await closedPort();
        await server.call('POST', '/v1/model-providers', {
          body: providerBody('dead', 'openai', `http://127.0.0.1:${port}`),
        });
        const dead = await server.call('POST', '/v1/model-providers/dead/test');
        assert.equal(dead.body.ok, false);
        assert.equal(dead.body.error.code, 'unavailable');
      });

      test('tenant isolation: another tenant sees none of the providers and cannot test them', async () => {
        const tenant = await server.call('POST', '/v1/tenants', {
          body: { id: 'other', name: 'Other' },
        });
        assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
        const key = tenant.body.admin_key.secret as string;
        const list = await server.call('GET', '/v1/model-providers', { key });
        assert.deepEqual(list.body.items, []);
        expectError(
          await server.call('GET', '/v1/model-providers/probe-openai', { key }),
          404,
          'MODEL_PROVIDER_NOT_FOUND',
        );
        expectError(
          await server.call('POST', '/v1/model-providers/probe-openai/test', { key }),
          404,
          'MODEL_PROVIDER_NOT_FOUND',
        );
        // Its own provider may fall back only to its own providers.
        const response = await server.call('POST', '/v1/model-providers', {
          key,
          body: {
            ...providerBody('mine', 'openai', model.url),
            fallbacks: [{ provider: 'probe-openai', model: 'small' }],
          },
        });
        expectError(response, 400, 'VALIDATION_FAILED');
      });
    });
  }
});

describe('model calls through the official clients', () => {
  let server: TestServer;
  let model: ScriptedModelServer;
  let backup: ScriptedModelServer;
  let models: ModelService;
  let tenantId: string;

  before(async () => {
    server = await startTestServer();
    model = await new ScriptedModelServer({ apiKey: 'sk-one' }).listen();
    backup = await new ScriptedModelServer().listen();
    await server.call('PUT', '/v1/secrets/KEY', { body: { value: 'sk-one' } });
    tenantId = (await server.call('GET', '/v1/whoami')).body.tenant.id;
    for (const kind of KINDS) {
      const created = await server.call('POST', '/v1/model-providers', {
        body: providerBody(kind, kind, model.url, {
          api_key_secret: 'KEY',
          idle_timeout_ms: 1000,
          max_retries: 2,
        }),
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
    await server.call('POST', '/v1/model-providers', {
      body: providerBody('backup', 'openai', backup.url),
    });
    await server.call('POST', '/v1/model-providers', {
      body: providerBody('one-at-a-time', 'openai', model.url, {
        api_key_secret: 'KEY',
        max_concurrency: 1,
        idle_timeout_ms: 60_000,
      }),
    });
    const box = new SecretBox(Buffer.from(TEST_SECRET_KEY, 'base64'));
    const secrets = new SecretService({ store: server.store, box, log: silent });
    models = new ModelService({
      records: new ModelProviderRecords({
        store: server.store,
        box,
        secretExists: async () => true,
      }),
      secrets,
      log: silent,
      registry: new Registry(),
    });
  });
  after(async () => {
    await model.close();
    await backup.close();
    await server.stop();
  });

  const ask = (
    provider: string,
    turn: ScriptedTurn | undefined,
    options: Parameters<ModelService['call']>[3] = {},
    modelName = 'small',
  ) => {
    if (turn !== undefined) model.script(modelName, turn);
    return models.call(
      tenantId,
      [{ provider, model: modelName }],
      {
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hello' },
        ],
        tools: [
          {
            name: 'weather',
            description: 'The weather in a city',
            parameters: { type: 'object', properties: { city: { type: 'string' } } },
          },
        ],
      },
      options,
    );
  };

  for (const kind of KINDS) {
    test(`${kind}: a streamed answer arrives in pieces, with usage and a cost from the price table`, async () => {
      const pieces: string[] = [];
      const answer = await ask(
        kind,
        {
          text: 'The answer is forty-two.',
          chunk_chars: 5,
          usage: { input_tokens: 1000, output_tokens: 200, cached_input_tokens: 400 },
        },
        { onText: (delta) => pieces.push(delta) },
      );
      assert.equal(answer.text, 'The answer is forty-two.');
      assert.ok(pieces.length >= 5, `${pieces.length} pieces`);
      assert.equal(pieces.join(''), answer.text);
      assert.equal(answer.finish, 'stop');
      assert.equal(answer.provider, kind);
      assert.deepEqual(answer.usage, {
        input_tokens: 1000,
        output_tokens: 200,
        cached_input_tokens: 400,
      });
      // 600 fresh input at 0.5, 400 cached at 0.25, 200 output at 1.5, per million.
      assert.equal(answer.cost_usd, (600 * 0.5 + 400 * 0.25 + 200 * 1.5) / 1_000_000);
      const sent = model.requests.at(-1);
      assert.equal(sent?.api, kind);
      assert.equal(sent?.stream, true);
      assert.equal(sent?.api_key, 'sk-one');
      if (kind === 'anthropic') {
        assert.equal(sent?.body.system, 'Be brief.');
      } else {
        assert.deepEqual((sent?.body.messages as unknown[] | undefined)?.[0], {
          role: 'system',
          content: 'Be brief.',
        });
      }
    });

    test(`${kind}: parallel tool calls come back whole, streamed or not, and their results go back to the model`, async () => {
      for (const stream of [true, false]) {
        const answer = await ask(
          kind,
          {
            text: '',
            chunk_chars: 3,
            tool_calls: [
              { id: 'call_1', name: 'weather', arguments: { city: 'Oslo' } },
              { id: 'call_2', name: 'weather', arguments: { city: 'Lima' } },
            ],
          },
          { stream },
        );
        assert.equal(answer.finish, 'tool_calls');
        assert.deepEqual(
          answer.tool_calls.map((c) => [c.id, c.name, JSON.parse(c.arguments)]),
          [
            ['call_1', 'weather', { city: 'Oslo' }],
            ['call_2', 'weather', { city: 'Lima' }],
          ],
        );
      }
      // The next turn carries the calls and their results; the demo answer reports them.
      const next = await models.call(tenantId, [{ provider: kind, model: 'large' }], {
        messages: [
          { role: 'user', content: 'Weather?' },
          {
            role: 'assistant',
            content: '',
            tool_calls: [
              { id: 'call_1', name: 'weather', arguments: '{"city":"Oslo"}' },
              { id: 'call_2', name: 'weather', arguments: '{"city":"Lima"}' },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', name: 'weather', content: 'cold' },
          { role: 'tool', tool_call_id: 'call_2', name: 'weather', content: 'warm' },
        ],
      });
      assert.match(next.text, /weather returned: cold\nweather returned: warm/);
    });

    test(`${kind}: 429 with Retry-After and a 500 are retried by the client, waiting as told`, async () => {
      model.script(
        'small',
        { error: { status: 429, retry_after_s: 1 } },
        { error: { status: 500 } },
      );
      const before = model.requests.length;
      const answer = await ask(kind, { text: 'after retries' });
      assert.equal(answer.text, 'after retries');
      const tries = model.requests.slice(before);
      assert.equal(tries.length, 3);
      const [first, second] = tries;
      assert.ok(
        (second?.received_at ?? 0) - (first?.received_at ?? 0) >= 950,
        'the retry after a 429 waited for its Retry-After',
      );
    });

    test(`${kind}: a stream that stalls fails as stalled, a cut one as cut; nothing is retried after the answer began`, async () => {
      const before = model.requests.length;
      await assert.rejects(
        ask(kind, { text: 'a long answer that stops', chunk_chars: 2, stall_after_chunks: 3 }),
        (err: unknown) => err instanceof ModelCallError && err.kind === 'stalled',
      );
      await assert.rejects(
        ask(kind, { text: 'a long answer that breaks', chunk_chars: 2, cut_after_chunks: 3 }),
        (err: unknown) => err instanceof ModelCallError && err.kind === 'cut',
      );
      assert.equal(model.requests.length - before, 2);
    });

    test(`${kind}: structured output asks the provider for the schema`, async () => {
      await models.call(tenantId, [{ provider: kind, model: 'small' }], {
        messages: [{ role: 'user', content: 'Rate it' }],
        response_schema: {
          name: 'rating',
          schema: { type: 'object', properties: { stars: { type: 'integer' } } },
        },
      });
      const body = model.requests.at(-1)?.body ?? {};
      if (kind === 'openai') {
        assert.deepEqual(body.response_format, {
          type: 'json_schema',
          json_schema: {
            name: 'rating',
            schema: { type: 'object', properties: { stars: { type: 'integer' } } },
          },
        });
      } else {
        assert.deepEqual(body.output_config, {
          format: {
            type: 'json_schema',
            schema: { type: 'object', properties: { stars: { type: 'integer' } } },
          },
        });
      }
    });
  }

  test('a provider that keeps failing hands the call to the next of the chain; a cancelled call stops at once', async () => {
    model.script(
      'small',
      { error: { status: 503 } },
      { error: { status: 503 } },
      { error: { status: 503 } },
    );
    backup.script('large', { text: 'from the backup' });
    const answer = await models.call(
      tenantId,
      [
        { provider: 'openai', model: 'small' },
        { provider: 'backup', model: 'large' },
      ],
      { messages: [{ role: 'user', content: 'Hi' }] },
    );
    assert.equal(answer.text, 'from the backup');
    assert.equal(answer.provider, 'backup');
    assert.deepEqual(
      answer.attempts.map((a) => [a.provider, a.error?.kind ?? null, a.error?.status ?? null]),
      [
        ['openai', 'unavailable', 503],
        ['backup', null, null],
      ],
    );

    const controller = new AbortController();
    model.script('small', { text: 'never finished', stall_after_chunks: 1 });
    const backupBefore = backup.requests.length;
    const pending = models.call(
      tenantId,
      [
        { provider: 'one-at-a-time', model: 'small' },
        { provider: 'backup', model: 'large' },
      ],
      { messages: [{ role: 'user', content: 'Hi' }] },
      { signal: controller.signal, onText: () => controller.abort() },
    );
    await assert.rejects(
      pending,
      (err: unknown) => err instanceof ModelCallError && err.kind === 'cancelled',
    );
    assert.equal(backup.requests.length, backupBefore, 'no fallback after a cancel');
  });

  test('the chain of a template without fallbacks is the provider’s own', async () => {
    await server.call('PUT', '/v1/model-providers/one-at-a-time', {
      body: {
        ...providerBody('ignored', 'openai', model.url, {
          api_key_secret: 'KEY',
          max_concurrency: 1,
          fallbacks: [{ provider: 'backup', model: 'large' }],
        }),
        name: undefined,
      },
    });
    assert.deepEqual(
      await models.chainFor(tenantId, { provider: 'one-at-a-time', model: 'small' }, []),
      [
        { provider: 'one-at-a-time', model: 'small' },
        { provider: 'backup', model: 'large' },
      ],
    );
    assert.deepEqual(
      await models.chainFor(tenantId, { provider: 'one-at-a-time', model: 'small' }, [
        { provider: 'openai', model: 'large' },
      ]),
      [
        { provider: 'one-at-a-time', model: 'small' },
        { provider: 'openai', model: 'large' },
      ],
    );
  });

  test('max_concurrency 1: a second call is not sent while the first is in flight', async () => {
    model.script('large', { text: 'slow', stall_after_chunks: 1 }, { text: 'second' });
    const controller = new AbortController();
    let firstStarted!: () => void;
    const started = new Promise<void>((resolve) => {
      firstStarted = resolve;
    });
    const first = models
      .call(
        tenantId,
        [{ provider: 'one-at-a-time', model: 'large' }],
        { messages: [{ role: 'user', content: 'one' }] },
        { signal: controller.signal, onText: () => firstStarted() },
      )
      .catch((err: unknown) => err);
    await started;
    const before = model.requestsFor('large').length;
    const second = models.call(tenantId, [{ provider: 'one-at-a-time', model: 'large' }], {
      messages: [{ role: 'user', content: 'two' }],
    });
    // Whatever the timing, the second cannot have reached the server: the first holds the slot.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(model.requestsFor('large').length, before);
    controller.abort();
    assert.equal(((await first) as ModelCallError).kind, 'cancelled');
    assert.equal((await second).text, 'second');
  });

  test('the API key is read at each call: a replaced secret takes effect at once', async () => {
    await server.call('PUT', '/v1/secrets/KEY', { body: { value: 'sk-two' } });
    await assert.rejects(ask('openai', { text: 'x' }), (err: unknown) => {
      return err instanceof ModelCallError && err.kind === 'refused' && err.status === 401;
    });
    assert.equal(model.requests.at(-1)?.api_key, 'sk-two');
    await server.call('PUT', '/v1/secrets/KEY', { body: { value: 'sk-one' } });
    // The refused call took no turn: the queued one answers now.
    assert.equal((await ask('openai', undefined)).text, 'x');
  });
});
