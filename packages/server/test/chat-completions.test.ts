import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import OpenAI from 'openai';
import { ScriptedModelServer } from '../src/providers/index.ts';
import { expectError, startTestServer, type TestServer } from './helpers.ts';

// `POST /v1/chat/completions` through the official OpenAI client, as any application would
// use a hosted agent: streaming and not, in a session, with errors the client understands.

describe('the OpenAI-compatible endpoint', () => {
  let server: TestServer;
  let client: Orchestra;
  let openai: OpenAI;
  let model: ScriptedModelServer;

  before(async () => {
    server = await startTestServer();
    client = new Orchestra({ url: server.url, apiKey: server.adminKey });
    openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.adminKey, maxRetries: 0 });
    model = await new ScriptedModelServer().listen();
    await client.modelProviders.create({
      name: 'scripted',
      kind: 'anthropic',
      base_url: model.url,
      models: [{ name: 'chat' }],
      max_retries: 0,
    });
    await client.templates.create({
      name: 'helper',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'chat' }, system_prompt: 'Be helpful.' },
      default_max_attempts: 1,
    });
    await client.templates.create({ name: 'plain', capabilities: ['x'] });
  });
  after(async () => {
    await model.close();
    await server.stop();
  });

  test('a completion, not streamed: the conversation reaches the model after the system prompt; usage and the task id come back', async () => {
    model.script('chat', { text: 'Paris.', usage: { input_tokens: 30, output_tokens: 3 } });
    const answer = await openai.chat.completions.create({
      model: 'helper',
      messages: [
        { role: 'system', content: 'Answer in one word.' },
        { role: 'user', content: 'Capital of France?' },
      ],
    });
    assert.equal(answer.choices[0]?.message.content, 'Paris.');
    assert.equal(answer.choices[0]?.finish_reason, 'stop');
    assert.deepEqual(
      [answer.usage?.prompt_tokens, answer.usage?.completion_tokens, answer.usage?.total_tokens],
      [30, 3, 33],
    );
    assert.equal(answer.model, 'helper');
    const task = await client.tasks.get(answer.id);
    assert.equal(task.state, 'succeeded');
    assert.deepEqual(task.input, {
      messages: [
        { role: 'system', content: 'Answer in one word.' },
        { role: 'user', content: 'Capital of France?' },
      ],
    });
    const sent = model.requestsFor('chat').at(-1);
    assert.equal(sent?.body.system, 'Be helpful.\n\nAnswer in one word.');
    assert.deepEqual(sent?.body.messages, [
      { role: 'user', content: [{ type: 'text', text: 'Capital of France?' }] },
    ]);
  });

  test('streamed: the tokens come as chunks as the model writes them, then the usage and [DONE]', async () => {
    model.script('chat', { text: 'Streaming works fine.', chunk_chars: 3 });
    const stream = await openai.chat.completions.create({
      model: 'helper',
      messages: [{ role: 'user', content: 'Stream?' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let pieces = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta.content) {
        text += choice.delta.content;
        pieces += 1;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'Streaming works fine.');
    assert.ok(pieces >= 1);
    assert.equal(finish, 'stop');
    assert.ok((usage?.total_tokens ?? 0) > 0);
  });

  test('a hosted agent with a tool: the run calls it, and the OpenAI client gets the answer that used it', async () => {
    await client.request('POST', '/v1/tools', {
      body: {
        name: 'node_health',
        description: 'The node’s health',
        annotations: { readOnlyHint: true },
        input_schema: { type: 'object' },
        source: { type: 'http', method: 'GET', url: `${server.url}/healthz` },
      },
    });
    await client.templates.create({
      name: 'tooled',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'chat' }, tools: ['node_health'] },
      default_max_attempts: 1,
    });
    model.script('chat', {
      text: '',
      tool_calls: [{ id: 'toolu_h', name: 'node_health', arguments: {} }],
    });
    const answer = await openai.chat.completions.create({
      model: 'tooled',
      messages: [{ role: 'user', content: 'Is the node up?' }],
    });
    // The demo answer (no scripted turn left) reports what the tool returned.
    assert.match(answer.choices[0]?.message.content ?? '', /node_health returned: \{"status":"ok"/);
    assert.equal(answer.usage?.total_tokens !== undefined, true);
  });

  test('a conversation in a session: the task runs in it, like any other', async () => {
    const session = await client.sessions.create({ name: 'chat' });
    model.script('chat', { text: 'Noted.' });
    const answer = await openai.chat.completions.create({
      model: 'helper',
      messages: [{ role: 'user', content: 'Remember 42.' }],
      metadata: { session_id: session.id },
    });
    assert.equal((await client.tasks.get(answer.id)).session_id, session.id);
  });

  test('errors an OpenAI client understands: an unknown model, an agent template, client tools, a failed run', async () => {
    await assert.rejects(
      openai.chat.completions.create({
        model: 'nobody',
        messages: [{ role: 'user', content: 'x' }],
      }),
      (err: unknown) => err instanceof OpenAI.NotFoundError && /nobody/.test(err.message),
    );
    await assert.rejects(
      openai.chat.completions.create({
        model: 'plain',
        messages: [{ role: 'user', content: 'x' }],
      }),
      (err: unknown) => err instanceof OpenAI.BadRequestError && /kind agent/.test(err.message),
    );
    await assert.rejects(
      openai.chat.completions.create({
        model: 'helper',
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { name: 'f', parameters: {} } }],
      }),
      (err: unknown) => err instanceof OpenAI.BadRequestError && /body\.tools/.test(err.message),
    );
    expectError(
      await server.call('POST', '/v1/chat/completions', {
        body: { model: 'helper', messages: [] },
      }),
      400,
      'VALIDATION_FAILED',
    );
    model.script('chat', { error: { status: 400, message: 'bad request upstream' } });
    await assert.rejects(
      openai.chat.completions.create({
        model: 'helper',
        messages: [{ role: 'user', content: 'x' }],
      }),
      (err: unknown) =>
        err instanceof OpenAI.APIError &&
        err.status === 502 &&
        /MODEL_CALL_FAILED/.test(err.message),
    );
    model.script('chat', { error: { status: 400, message: 'bad request upstream' } });
    const stream = await openai.chat.completions.create({
      model: 'helper',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) {
          // The error comes as an event of the stream.
        }
      })(),
      (err: unknown) => err instanceof OpenAI.APIError && /MODEL_CALL_FAILED/.test(err.message),
    );
    const viewer = await client.apiKeys.create({ name: 'chat viewer', role: 'viewer' });
    const asViewer = new OpenAI({
      baseURL: `${server.url}/v1`,
      apiKey: viewer.secret,
      maxRetries: 0,
    });
    await assert.rejects(
      asViewer.chat.completions.create({
        model: 'helper',
        messages: [{ role: 'user', content: 'x' }],
      }),
      (err: unknown) => err instanceof OpenAI.PermissionDeniedError,
    );
  });
});
