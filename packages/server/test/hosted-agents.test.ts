import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CreateTemplateInput, Orchestra, type Task, type TaskEvent } from '@orchestra/sdk';
import { ScriptedModelServer } from '../src/providers/index.ts';
import {
  echoUpstream,
  expectError,
  expectExit,
  runCli,
  STORE_VARIANTS,
  startTestServer,
  type TestServer,
} from './helpers.ts';
import { FIXTURES } from './mcp-servers.ts';

// Hosted agents as a user runs them: an `llm` template, tasks submitted through the SDK, the
// real provider clients against the scripted model server, HTTP tools through the executor.

const WAIT_MS = 60_000;

/** Resolves once `promise` rejects with an API error of `status` and `code`. */
async function rejectsWith(promise: Promise<unknown>, status: number, code: string) {
  await assert.rejects(promise, (err: unknown) => {
    const e = err as { status?: number; code?: string };
    assert.deepEqual([e.status, e.code], [status, code]);
    return true;
  });
}

/** A failed task's error details. */
const detailsOf = (task: Task) => (task.error?.details ?? {}) as Record<string, unknown>;

/** The task's events, oldest first, once it has ended. */
async function eventsOf(client: Orchestra, id: string): Promise<TaskEvent[]> {
  const events: TaskEvent[] = [];
  for await (const item of client.tasks.events(id)) {
    if ('offset' in item) events.push(item as TaskEvent);
  }
  return events;
}

/** The custom events named `name` (the run's journal), their data. */
function journal(events: TaskEvent[], name: string): Record<string, any>[] {
  return events
    .filter((e) => e.type === 'task.custom' && (e.data as { name: string }).name === name)
    .map((e) => (e.data as { data: Record<string, any> }).data);
}

/** The tenant's provider `scripted` (model `small`, priced), its key a secret. */
async function addScriptedProvider(client: Orchestra, model: ScriptedModelServer) {
  await client.secrets.put('MODEL_KEY', 'sk-hosted');
  await client.modelProviders.create({
    name: 'scripted',
    kind: 'openai',
    base_url: `${model.url}/v1`,
    api_key_secret: 'MODEL_KEY',
    models: [{ name: 'small', price: { input: 1, output: 2 } }],
    max_retries: 0,
  });
}

function hosted(
  name: string,
  llm: Record<string, unknown>,
  extra: Partial<CreateTemplateInput> = {},
) {
  return {
    name,
    kind: 'llm',
    llm: { model: { provider: 'scripted', model: 'small' }, ...llm },
    default_max_attempts: 1,
    ...extra,
  } as CreateTemplateInput;
}

for (const store of STORE_VARIANTS) {
  describe(`hosted agents on ${store}`, () => {
    let server: TestServer;
    let client: Orchestra;
    let model: ScriptedModelServer;
    let upstream: { url: string; close: () => Promise<void> };

    before(async () => {
      server = await startTestServer({ store });
      client = new Orchestra({ url: server.url, apiKey: server.adminKey });
      model = await new ScriptedModelServer({ apiKey: 'sk-hosted' }).listen();
      upstream = await echoUpstream();
      await addScriptedProvider(client, model);
      const tool = await server.call('POST', '/v1/tools', {
        body: {
          name: 'weather',
          description: 'The weather in a city',
          annotations: { readOnlyHint: true },
          input_schema: {
            type: 'object',
            properties: { city: { type: 'string' } },
            required: ['city'],
          },
          source: { type: 'http', method: 'POST', url: `${upstream.url}/echo` },
        },
      });
      assert.equal(tool.status, 201, JSON.stringify(tool.body));
    });
    after(async () => {
      await model.close();
      await upstream.close();
      await server.stop();
    });

    test('a hosted agent answers: the prompt comes from the input, tokens stream as output, the model call is journaled with its usage', async () => {
      await client.templates.create(
        hosted('greeter', {
          system_prompt: 'You are {{input.persona}}.',
          prompt: 'Question: {{input.question}}',
        }),
      );
      model.script('small', {
        text: 'Hello from a hosted agent.',
        chunk_chars: 4,
        usage: { input_tokens: 100, output_tokens: 20 },
      });
      const task = await client.tasks.create({
        template: 'greeter',
        input: { persona: 'terse', question: 'Who are you?' },
      });
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      assert.equal(done.result, 'Hello from a hosted agent.');
      assert.match(done.agent_id ?? '', /^hosted-runner\./);

      const sent = model.requests.at(-1);
      assert.deepEqual(((sent?.body.messages ?? []) as unknown[]).slice(0, 2), [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Question: Who are you?' },
      ]);
      const events = await eventsOf(client, task.id);
      const output = events
        .filter((e) => e.type === 'task.output')
        .map((e) => (e.data as { data: string }).data)
        .join('');
      assert.equal(output, 'Hello from a hosted agent.');
      const [call] = journal(events, 'llm.model_call');
      assert.equal(call?.turn, 1);
      assert.equal(call?.provider, 'scripted');
      assert.deepEqual(call?.usage, {
        input_tokens: 100,
        output_tokens: 20,
        cached_input_tokens: 0,
      });
      assert.equal(call?.cost_usd, (100 * 1 + 20 * 2) / 1_000_000);

      // The runner is an agent of the tenant like any other.
      const agents = await client.agents.list({ capability: 'orchestra:llm' });
      assert.equal(agents.items.length, 1);
      assert.equal(agents.items[0]?.status, 'online');
    });

    test('tools: parallel calls go through the executor and their results back to the model', async () => {
      await client.templates.create(hosted('forecaster', { tools: ['weath*'] }));
      model.script(
        'small',
        {
          text: '',
          tool_calls: [
            { id: 'call_oslo', name: 'weather', arguments: { city: 'Oslo' } },
            { id: 'call_lima', name: 'weather', arguments: { city: 'Lima' } },
          ],
        },
        { text: 'Cold in Oslo, warm in Lima.' },
      );
      const before = model.requests.length;
      const task = await client.tasks.create({
        template: 'forecaster',
        input: { prompt: 'Weather in Oslo and Lima?' },
      });
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      assert.equal(done.result, 'Cold in Oslo, warm in Lima.');

      const [first, second] = model.requests.slice(before);
      assert.deepEqual(
        ((first?.body.tools ?? []) as { function: { name: string } }[]).map((t) => t.function.name),
        ['weather'],
      );
      const toolMessages = (
        (second?.body.messages ?? []) as { role: string; tool_call_id?: string; content?: string }[]
      ).filter((m) => m.role === 'tool');
      assert.deepEqual(
        toolMessages.map((m) => [m.tool_call_id, JSON.parse(m.content ?? '')]),
        [
          ['call_oslo', { got: { city: 'Oslo' } }],
          ['call_lima', { got: { city: 'Lima' } }],
        ],
      );
      const events = await eventsOf(client, task.id);
      assert.deepEqual(
        journal(events, 'llm.tool_result')
          .map((r) => [r.id, r.status, r.is_error])
          .sort(),
        [
          ['call_lima', 'succeeded', false],
          ['call_oslo', 'succeeded', false],
        ],
      );
      const calls = await server.call('GET', `/v1/tool-calls?tool=weather`);
      const ours = calls.body.items.filter(
        (c: { caller: { task_id: string } }) => c.caller.task_id === task.id,
      );
      assert.equal(ours.length, 2);
      assert.match(ours[0].caller.agent_id, /^hosted-runner\./);
    });

    test('MCP and HTTP tools together: one turn calls both, in parallel, through the hub and the executor', async () => {
      const created = await server.call('POST', '/v1/mcp/servers', {
        body: {
          name: 'notes',
          transport: 'stdio',
          command: process.execPath,
          args: [join(FIXTURES, 'changing-server.ts')],
        },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const status = (await server.call('GET', '/v1/mcp/servers/notes')).body.status;
        if (status.state === 'ready') break;
        if (Date.now() > deadline)
          throw new Error(`notes never got ready: ${JSON.stringify(status)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await server.call('POST', '/v1/tool-policies', {
        body: { name: 'notes-allowed', effect: 'allow', tools: ['notes__*'] },
      });
      await client.templates.create(hosted('both-kinds', { tools: ['notes__echo', 'weather'] }));
      model.script(
        'small',
        {
          text: '',
          tool_calls: [
            { id: 'call_mcp', name: 'notes__echo', arguments: { text: 'hi from MCP' } },
            { id: 'call_http', name: 'weather', arguments: { city: 'Oslo' } },
          ],
        },
        { text: 'Both answered.' },
      );
      const task = await client.tasks.create({
        template: 'both-kinds',
        input: { prompt: 'Use both' },
      });
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      const results = Object.fromEntries(
        journal(await eventsOf(client, task.id), 'llm.tool_result').map((r) => [r.name, r]),
      );
      assert.equal(results.notes__echo?.content, 'hi from MCP');
      assert.equal(results.notes__echo?.status, 'succeeded');
      assert.match(results.weather?.content ?? '', /Oslo/);
      await server.call('DELETE', '/v1/mcp/servers/notes');
    });

    test('budgets: a run ends failed with BUDGET_EXCEEDED naming the limit, its partial output kept', async () => {
      await client.templates.create(
        hosted('one-turn', { tools: ['weather'], limits: { max_turns: 1 } }),
      );
      model.script('small', {
        text: 'Let me look.',
        tool_calls: [{ name: 'weather', arguments: { city: 'Rome' } }],
      });
      const turns = await client.tasks.create({ template: 'one-turn', input: { prompt: 'Rome?' } });
      const ended = await client.tasks.wait(turns.id, { timeoutMs: WAIT_MS });
      assert.equal(ended.state, 'failed');
      assert.equal(ended.error?.code, 'BUDGET_EXCEEDED');
      assert.match(ended.error?.message ?? '', /max_turns \(1; used 1\)/);
      assert.equal((detailsOf(ended) as { limit: string }).limit, 'max_turns');
      assert.equal((detailsOf(ended) as { partial_output: string }).partial_output, 'Let me look.');

      await client.templates.create(hosted('thrifty', { limits: { max_cost_usd: 0.0001 } }));
      model.script('small', {
        text: 'An expensive answer',
        usage: { input_tokens: 1000, output_tokens: 1000 },
      });
      const costly = await client.tasks.create({ template: 'thrifty', input: { prompt: 'Hi' } });
      const broke = await client.tasks.wait(costly.id, { timeoutMs: WAIT_MS });
      assert.equal(broke.error?.code, 'BUDGET_EXCEEDED');
      assert.equal((detailsOf(broke) as { limit: string }).limit, 'max_cost_usd');
      assert.equal(
        (detailsOf(broke) as { partial_output: string }).partial_output,
        'An expensive answer',
      );

      await client.templates.create(hosted('short', { limits: { max_input_tokens: 10 } }));
      const before = model.requests.length;
      const long = await client.tasks.create({
        template: 'short',
        input: { prompt: 'x'.repeat(400) },
      });
      const refused = await client.tasks.wait(long.id, { timeoutMs: WAIT_MS });
      assert.equal((detailsOf(refused) as { limit: string }).limit, 'max_input_tokens');
      assert.equal(model.requests.length, before, 'the estimate stopped it before the call');
    });

    test('structured output: a mismatch is sent back once with the error, then the answer is the parsed JSON', async () => {
      await client.templates.create(
        hosted(
          'rater',
          {},
          {
            output_schema: {
              type: 'object',
              properties: { stars: { type: 'integer', minimum: 1, maximum: 5 } },
              required: ['stars'],
            },
          },
        ),
      );
      model.script('small', { text: 'Four stars!' }, { text: '{"stars": 4}' });
      const task = await client.tasks.create({ template: 'rater', input: { prompt: 'Rate it' } });
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      assert.deepEqual(done.result, { stars: 4 });
      const retry = model.requests.at(-1);
      const last = ((retry?.body.messages ?? []) as { role: string; content: string }[]).at(-1);
      assert.equal(last?.role, 'user');
      assert.match(last?.content ?? '', /does not match the required JSON schema/);
      assert.ok(retry?.body.response_format, 'the schema is asked for');

      model.script('small', { text: 'nope' }, { text: '{"stars": 9}' });
      const bad = await client.tasks.create({ template: 'rater', input: { prompt: 'Rate it' } });
      const failed = await client.tasks.wait(bad.id, { timeoutMs: WAIT_MS });
      assert.equal(failed.error?.code, 'OUTPUT_INVALID');
    });

    test('cancellation aborts the model request at once; a refused model call fails the task without retries', async () => {
      model.script('small', { text: 'this will never finish', stall_after_chunks: 1 });
      const task = await client.tasks.create({ template: 'greeter', input: { question: 'slow?' } });
      // Cancel once the answer has begun streaming.
      for await (const item of client.tasks.events(task.id)) {
        if ('type' in item && item.type === 'task.output') break;
      }
      await client.tasks.cancel(task.id);
      const cancelled: Task = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(cancelled.state, 'cancelled');

      await client.secrets.put('MODEL_KEY', 'sk-wrong');
      try {
        const refused = await client.tasks.create({
          template: 'greeter',
          input: { question: 'key?' },
        });
        const failed = await client.tasks.wait(refused.id, { timeoutMs: WAIT_MS });
        assert.equal(failed.state, 'failed');
        assert.equal(failed.error?.code, 'MODEL_CALL_FAILED');
        assert.equal(failed.error?.retryable, false);
        assert.equal((detailsOf(failed) as { status: number }).status, 401);
      } finally {
        await client.secrets.put('MODEL_KEY', 'sk-hosted');
      }
    });

    test('approvals: the task waits in awaiting_approval holding no runner and no deadline, then goes on with the outcome once decided', async () => {
      // A 1 s attempt timeout: a wait that held the attempt would time out.
      await client.templates.create(
        hosted('careful', { tools: ['weather'] }, { default_timeout_ms: 1000 }),
      );
      const policy = await server.call('POST', '/v1/tool-policies', {
        body: {
          name: 'careful-weather',
          effect: 'allow',
          tools: ['weather'],
          approval: 'required',
          match: { templates: ['careful'] },
        },
      });
      assert.equal(policy.status, 201, JSON.stringify(policy.body));
      model.script(
        'small',
        {
          text: '',
          tool_calls: [{ id: 'call_ok', name: 'weather', arguments: { city: 'Bergen' } }],
        },
        { text: 'Rainy, as approved.' },
        {
          text: '',
          tool_calls: [{ id: 'call_no', name: 'weather', arguments: { city: 'Nowhere' } }],
        },
        { text: 'It was refused.' },
        {
          text: '',
          tool_calls: [
            { id: 'call_a', name: 'weather', arguments: { city: 'Oslo' } },
            { id: 'call_b', name: 'weather', arguments: { city: 'Tromsø' } },
          ],
        },
        { text: 'Both answered.' },
      );
      /** Waits until the task is awaiting approval; resolves to it. */
      const awaiting = async (taskId: string): Promise<Task> => {
        for await (const item of client.tasks.events(taskId)) {
          if ('type' in item && item.type === 'task.awaiting_approval') break;
        }
        return client.tasks.get(taskId);
      };
      const approve = async (approvalId: string) => {
        const approval = await server.call('GET', `/v1/tool-approvals/${approvalId}`);
        const approved = await server.call('POST', `/v1/tool-approvals/${approvalId}/approve`, {
          body: { arguments_hash: approval.body.arguments_hash },
        });
        assert.equal(approved.status, 200, JSON.stringify(approved.body));
      };
      const task = await client.tasks.create({ template: 'careful', input: { prompt: 'Bergen?' } });
      const waiting = await awaiting(task.id);
      assert.equal(waiting.state, 'awaiting_approval');
      assert.equal(waiting.agent_id, null, 'no runner holds it');
      assert.equal(waiting.deadline_at, null, 'no attempt deadline runs');
      assert.equal(waiting.waiting?.reason, 'approval');
      const [pending] = waiting.waiting?.reason === 'approval' ? waiting.waiting.approvals : [];
      assert.equal(pending?.tool, 'weather');
      assert.match(waiting.waiting?.message ?? '', /waits for approval apr_\S+ of tool weather/);
      const listed = await client.tasks.list({ state: ['awaiting_approval'] });
      assert.deepEqual(
        listed.items.map((t) => t.id),
        [task.id],
      );
      const shown = await runCli(
        ['task', 'get', task.id, '--url', server.url, '--api-key', server.adminKey],
        { cwd: process.cwd() },
      );
      expectExit(shown, 0);
      assert.match(shown.stdout, /State:\s+awaiting_approval/);
      assert.match(shown.stdout, /Waiting:\s+waits for approval apr_\S+ of tool weather/);
      const runners = await server.call('GET', '/v1/agents');
      for (const agent of runners.body.items as { in_flight: string[] }[]) {
        assert.ok(!agent.in_flight.includes(task.id), 'no agent holds it');
      }
      // Well past the attempt's 1 s timeout (and several sweeps): still waiting, not timed out.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.equal((await client.tasks.get(task.id)).state, 'awaiting_approval');
      assert.ok(pending);
      await approve(pending.id);
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      assert.equal(done.result, 'Rainy, as approved.');
      assert.equal(done.attempt, 1, 'the wait used up no attempt');
      const events = await eventsOf(client, task.id);
      const [result] = journal(events, 'llm.tool_result');
      assert.equal(result?.status, 'succeeded');
      assert.match(result?.content ?? '', /Bergen/);
      const [resumed] = journal(events, 'llm.resumed');
      assert.deepEqual(resumed?.approvals, [pending.id]);
      assert.ok((resumed?.waited_ms ?? 0) >= 2500, 'the wait is measured, not counted as work');
      assert.deepEqual(
        events
          .filter(
            (e) =>
              e.type.startsWith('task.') && e.type !== 'task.custom' && e.type !== 'task.output',
          )
          .map((e) => e.type),
        [
          'task.queued',
          'task.assigned',
          'task.running',
          'task.awaiting_approval',
          'task.queued',
          'task.assigned',
          'task.running',
          'task.succeeded',
        ],
      );

      // Rejected: the model is told, and answers.
      const refused = await client.tasks.create({
        template: 'careful',
        input: { prompt: 'Nowhere?' },
      });
      const refusedWait = await awaiting(refused.id);
      const refusedId =
        refusedWait.waiting?.reason === 'approval' ? refusedWait.waiting.approvals[0]?.id : '';
      const rejected = await server.call('POST', `/v1/tool-approvals/${refusedId}/reject`, {
        body: { reason: 'no' },
      });
      assert.equal(rejected.status, 200, JSON.stringify(rejected.body));
      const after = await client.tasks.wait(refused.id, { timeoutMs: WAIT_MS });
      assert.equal(after.result, 'It was refused.');
      const [rejectedResult] = journal(await eventsOf(client, refused.id), 'llm.tool_result');
      assert.equal(rejectedResult?.status, 'rejected');
      assert.equal(rejectedResult?.is_error, true);

      // Two calls at once: the task waits for both, and goes on only once both are decided.
      const both = await client.tasks.create({ template: 'careful', input: { prompt: 'Two?' } });
      const bothWait = await awaiting(both.id);
      const ids = bothWait.waiting?.reason === 'approval' ? bothWait.waiting.approvals : [];
      assert.deepEqual(ids.map((a) => a.tool).sort(), ['weather', 'weather']);
      assert.match(bothWait.waiting?.message ?? '', /waits for 2 approvals/);
      await approve(ids[0]?.id ?? '');
      // The other is pending: the run does not go on (it would need both results).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const half = await client.tasks.get(both.id);
      assert.equal(half.state, 'awaiting_approval');
      await approve(ids[1]?.id ?? '');
      const bothDone = await client.tasks.wait(both.id, { timeoutMs: WAIT_MS });
      assert.equal(bothDone.result, 'Both answered.', JSON.stringify(bothDone.error));
      const results = journal(await eventsOf(client, both.id), 'llm.tool_result');
      assert.deepEqual(
        results.map((r) => r.status),
        ['succeeded', 'succeeded'],
      );
      await server.call('DELETE', '/v1/tool-policies/careful-weather');
    });

    test('approvals: a task awaiting approval holds its session; cancelled, it ends at once, the next runs, and a later approval runs nothing', async () => {
      await client.templates.create(hosted('cancel-careful', { tools: ['weather'] }));
      await server.call('POST', '/v1/tool-policies', {
        body: {
          name: 'cancel-careful-weather',
          effect: 'allow',
          tools: ['weather'],
          approval: 'required',
          match: { templates: ['cancel-careful'] },
        },
      });
      model.script(
        'small',
        {
          text: '',
          tool_calls: [{ id: 'call_c', name: 'weather', arguments: { city: 'Narvik' } }],
        },
        { text: 'The next turn.' },
      );
      const session = await client.sessions.create({ name: 'held' });
      const task = await client.tasks.create({
        template: 'cancel-careful',
        input: { prompt: 'Narvik?' },
        session_id: session.id,
      });
      for await (const item of client.tasks.events(task.id)) {
        if ('type' in item && item.type === 'task.awaiting_approval') break;
      }
      // The session's next task waits for this one, as behind a running one.
      const next = await client.tasks.create({
        template: 'cancel-careful',
        input: { prompt: 'Next?' },
        session_id: session.id,
      });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal((await client.tasks.get(next.id)).state, 'queued');
      const waiting = await client.tasks.get(task.id);
      const approvalId =
        waiting.waiting?.reason === 'approval' ? waiting.waiting.approvals[0]?.id : '';
      const cancelled = await client.tasks.cancel(task.id);
      assert.equal(cancelled.state, 'cancelled');
      assert.equal(cancelled.waiting, null);
      const approval = await server.call('GET', `/v1/tool-approvals/${approvalId}`);
      const late = await server.call('POST', `/v1/tool-approvals/${approvalId}/approve`, {
        body: { arguments_hash: approval.body.arguments_hash },
      });
      const nextDone = await client.tasks.wait(next.id, { timeoutMs: WAIT_MS });
      assert.equal(nextDone.result, 'The next turn.', JSON.stringify(nextDone.error));
      expectError(late, 409, 'TOOL_APPROVAL_NOT_PENDING');
      assert.match(late.body.error.message, /task .* has ended \(cancelled\)/);
      assert.equal(
        (await server.call('GET', `/v1/tool-approvals/${approvalId}`)).body.status,
        'rejected',
      );
      assert.equal((await client.tasks.get(task.id)).state, 'cancelled');
      await server.call('DELETE', '/v1/tool-policies/cancel-careful-weather');
    });

    test('usage: each completed model call counts once, by template, model, key and day; CSV; bad queries get a 400', async () => {
      const byTemplate = await client.usage.report({ group_by: 'template' });
      const greeter = byTemplate.rows.find((r) => r.key === 'greeter');
      // One completed call (the cancelled and the refused ones never completed).
      assert.deepEqual(greeter && { ...greeter }, {
        key: 'greeter',
        input_tokens: 100,
        output_tokens: 20,
        cached_input_tokens: 0,
        cost_usd: 0.00014,
        model_calls: 1,
        tool_calls: 0,
        duration_ms: greeter?.duration_ms,
      });
      const forecaster = byTemplate.rows.find((r) => r.key === 'forecaster');
      assert.equal(forecaster?.model_calls, 2);
      assert.equal(forecaster?.tool_calls, 2);
      const calls = byTemplate.rows.reduce((n, r) => n + r.model_calls, 0);
      assert.equal(byTemplate.total.model_calls, calls);
      const byModel = await client.usage.report({ group_by: 'model' });
      assert.deepEqual(
        byModel.rows.map((r) => r.key),
        ['scripted/small'],
      );
      const byKey = await client.usage.report({ group_by: 'key' });
      assert.equal(byKey.rows.length, 1);
      assert.match(byKey.rows[0]?.key ?? '', /^key_/);
      const byDay = await client.usage.report();
      assert.equal(byDay.group_by, 'day');
      assert.equal(byDay.rows[0]?.key, new Date().toISOString().slice(0, 10));
      const csv = await client.usage.csv({ group_by: 'template' });
      const lines = csv.trimEnd().split('\r\n');
      assert.equal(
        lines[0],
        'template,input_tokens,output_tokens,cached_input_tokens,cost_usd,model_calls,tool_calls,duration_ms',
      );
      assert.ok(lines.some((l) => l.startsWith('greeter,100,20,0,0.00014,1,0,')));
      const empty = await client.usage.report({
        from: '2020-01-01T00:00:00Z',
        to: '2020-02-01T00:00:00Z',
      });
      assert.deepEqual([empty.rows, empty.total.model_calls], [[], 0]);
      for (const query of [
        'group_by=color',
        'from=yesterday',
        'from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z',
        'limit=0',
        'format=xml',
      ]) {
        expectError(await server.call('GET', `/v1/usage?${query}`), 400, 'VALIDATION_FAILED');
      }
      // Another tenant sees none of it.
      const other = await server.call('POST', '/v1/tenants', { body: { id: `usage-${store}` } });
      const theirs = await server.call('GET', '/v1/usage?group_by=template', {
        key: other.body.admin_key.secret,
      });
      assert.deepEqual(theirs.body.rows, []);
    });

    test('sessions as memory: earlier turns with their tool calls, as the memory policy keeps them', async () => {
      await client.templates.create(
        hosted('rememberer', { tools: ['weather'], memory: { strategy: 'last_turns', turns: 2 } }),
      );
      const session = await client.sessions.create({ name: 'memory' });
      const say = async (prompt: string, template = 'rememberer') => {
        const task = await client.tasks.create({
          template,
          input: { prompt },
          session_id: session.id,
        });
        const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
        assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
        return model.requests.at(-1)?.body.messages as { role: string; content: string | null }[];
      };
      model.script('small', { text: 'Hello Ada.' });
      const first = await say('My name is Ada.');
      assert.deepEqual(first, [{ role: 'user', content: 'My name is Ada.' }]);
      model.script(
        'small',
        {
          text: '',
          tool_calls: [{ id: 'call_mem', name: 'weather', arguments: { city: 'Oslo' } }],
        },
        { text: 'Cold in Oslo.' },
      );
      await say('Weather in Oslo?');
      model.script('small', { text: 'You are Ada.' });
      const third = await say('What is my name?');
      assert.deepEqual(
        third.map((m) => [m.role, m.content]),
        [
          ['user', 'My name is Ada.'],
          ['assistant', 'Hello Ada.'],
          ['user', 'Weather in Oslo?'],
          ['assistant', null],
          ['tool', JSON.stringify({ got: { city: 'Oslo' } })],
          ['assistant', 'Cold in Oslo.'],
          ['user', 'What is my name?'],
        ],
      );
      // Two turns at most: the first one is forgotten now.
      model.script('small', { text: 'I do not know.' });
      const fourth = await say('And now?');
      assert.deepEqual(
        fourth.map((m) => m.content).filter((c) => c?.startsWith('My name') === true),
        [],
      );
      // A token window keeps whole turns only: a small one keeps the last answer alone.
      await client.templates.create(
        hosted('forgetful', { memory: { strategy: 'token_window', max_tokens: 12 } }),
      );
      model.script('small', { text: 'ok' });
      const windowed = await say('Last one?', 'forgetful');
      assert.deepEqual(
        windowed.map((m) => [m.role, m.content]),
        [
          ['user', 'And now?'],
          ['assistant', 'I do not know.'],
          ['user', 'Last one?'],
        ],
      );
    });

    test('summary memory: older turns become a summary a model writes, journaled, and brought up to date turn by turn', async () => {
      await client.templates.create(
        hosted('summariser', {
          memory: { strategy: 'summary', turns: 1, max_summary_tokens: 200 },
        }),
      );
      const session = await client.sessions.create({ name: 'summary' });
      const say = async (prompt: string, ...turns: string[]) => {
        model.script('small', ...turns.map((text) => ({ text })));
        const before = model.requests.length;
        const task = await client.tasks.create({
          template: 'summariser',
          input: { prompt },
          session_id: session.id,
        });
        const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
        assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
        const sent = model.requests
          .slice(before)
          .map((r) => r.body.messages as { role: string; content: string }[]);
        return { task: done, sent };
      };
      await say('My name is Ada.', 'Hello Ada.');
      await say('I live in Oslo.', 'Nice.');
      const third = await say('Who am I?', 'The user is Ada.', 'You are Ada, from Oslo.');
      assert.equal(third.sent.length, 2, 'a summary call, then the answer');
      const [summaryCall, answerCall] = third.sent;
      assert.match(JSON.stringify(summaryCall), /My name is Ada\./);
      assert.doesNotMatch(JSON.stringify(summaryCall), /I live in Oslo/);
      assert.deepEqual(
        answerCall?.map((m) => [m.role, m.content]),
        [
          ['system', 'A summary of the conversation before the last turns:\nThe user is Ada.'],
          ['user', 'I live in Oslo.'],
          ['assistant', 'Nice.'],
          ['user', 'Who am I?'],
        ],
      );
      const [summary] = journal(await eventsOf(client, third.task.id), 'llm.summary');
      assert.equal(summary?.content, 'The user is Ada.');
      // The next turn summarises only what fell out of the window since, after the summary.
      const fourth = await say('And now?', 'Ada lives in Oslo.', 'Still Ada.');
      const update = JSON.stringify(fourth.sent[0]);
      assert.match(update, /The summary so far:\\nThe user is Ada\./);
      assert.match(update, /I live in Oslo\./);
      assert.doesNotMatch(update, /My name is Ada/);
      assert.equal(
        fourth.sent[1]?.[0]?.content,
        'A summary of the conversation before the last turns:\nAda lives in Oslo.',
      );
    });

    test('tenant monthly quotas: checked with an estimate before a call and with the usage after it', async () => {
      const tenantId = `quota-${store}`;
      const created = await server.call('POST', '/v1/tenants', { body: { id: tenantId } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const limited = await server.call('PATCH', `/v1/tenants/${tenantId}`, {
        body: { limits: { monthly_tokens: 150 } },
      });
      assert.equal(limited.status, 200, JSON.stringify(limited.body));
      const tenant = new Orchestra({ url: server.url, apiKey: created.body.admin_key.secret });
      await addScriptedProvider(tenant, model);
      await tenant.templates.create(hosted('metered', {}));
      const ask = async (usage?: { input_tokens: number; output_tokens: number }) => {
        if (usage !== undefined) model.script('small', { text: 'metered answer', usage });
        const task = await tenant.tasks.create({ template: 'metered', input: { prompt: 'Hi' } });
        return tenant.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      };
      assert.equal((await ask({ input_tokens: 100, output_tokens: 20 })).state, 'succeeded');
      // 120 used: the next call fits the estimate, and its usage passes the quota.
      const over = await ask({ input_tokens: 100, output_tokens: 20 });
      assert.equal(over.error?.code, 'BUDGET_EXCEEDED');
      assert.deepEqual(
        [
          detailsOf(over).limit,
          detailsOf(over).value,
          detailsOf(over).used,
          detailsOf(over).partial_output,
        ],
        ['monthly_tokens', 150, 240, 'metered answer'],
      );
      assert.match(
        over.error?.message ?? '',
        /monthly quota monthly_tokens \(150; used 240\) is used up/,
      );
      // Used up: refused before the call.
      const before = model.requests.length;
      const refused = await ask();
      assert.equal(detailsOf(refused).limit, 'monthly_tokens');
      assert.equal(model.requests.length, before, 'no call once the quota is used up');

      // The cost quota, in cents: 3 cents used by one call passes 1 cent.
      await server.call('PATCH', `/v1/tenants/${tenantId}`, {
        body: { limits: { monthly_tokens: null, monthly_cost_cents: 1 } },
      });
      const costly = await ask({ input_tokens: 10_000, output_tokens: 10_000 });
      assert.equal(detailsOf(costly).limit, 'monthly_cost_cents');
      assert.equal(detailsOf(costly).value, 1);
      // Other tenants are not limited by it.
      model.script('small', { text: 'unmetered' });
      const free = await client.tasks.create({ template: 'greeter', input: { question: 'q' } });
      assert.equal((await client.tasks.wait(free.id, { timeoutMs: WAIT_MS })).state, 'succeeded');
    });

    test('tenant isolation: another tenant runs its own hosted agents, with none of this tenant’s providers, tools, templates, approvals or usage', async () => {
      const created = await server.call('POST', '/v1/tenants', { body: { id: `iso-${store}` } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const other = new Orchestra({ url: server.url, apiKey: created.body.admin_key.secret });
      // This tenant's template by name: no such template there (a bad field of the submit).
      await rejectsWith(
        other.tasks.create({ template: 'greeter', input: { question: 'q' } }),
        400,
        'VALIDATION_FAILED',
      );
      // Its own template naming this tenant's provider and tool: neither is reachable.
      await other.templates.create(hosted('borrower', { tools: ['weather'] }));
      const borrowed = await other.tasks.create({ template: 'borrower', input: { prompt: 'q' } });
      const failed = await other.tasks.wait(borrowed.id, { timeoutMs: WAIT_MS });
      assert.equal(failed.state, 'failed');
      assert.equal(failed.error?.code, 'MODEL_CALL_FAILED');
      assert.match(failed.error?.message ?? '', /No model provider is named "scripted"/);
      // With a provider of its own, the run is offered none of this tenant's tools.
      await addScriptedProvider(other, model);
      model.script('small', { text: 'isolated answer' });
      const seen = model.requests.length;
      const own = await other.tasks.create({ template: 'borrower', input: { prompt: 'q' } });
      const done = await other.tasks.wait(own.id, { timeoutMs: WAIT_MS });
      assert.equal(done.result, 'isolated answer', JSON.stringify(done.error));
      const request = model.requests.slice(seen).find((r) => r.model === 'small');
      assert.equal(request?.body.tools, undefined, 'no tool of another tenant is offered');
      // Its hosted runner is its own agent; this tenant's tasks, approvals and usage are not there.
      const agents = await other.agents.list();
      assert.ok(agents.items.some((a) => a.id.startsWith('hosted-runner.')));
      assert.ok(agents.items.every((a) => a.in_flight.length === 0));
      const mine = await client.tasks.create({ capabilities: ['nobody-offers-this'] });
      await rejectsWith(other.tasks.get(mine.id), 404, 'TASK_NOT_FOUND');
      await rejectsWith(other.tasks.cancel(mine.id), 404, 'TASK_NOT_FOUND');
      await client.tasks.cancel(mine.id);
      const otherApprovals = (await other.request('GET', '/v1/tool-approvals')) as {
        items: unknown[];
      };
      assert.deepEqual(otherApprovals.items, []);
      const approvals = await server.call('GET', '/v1/tool-approvals?limit=1');
      for (const { id } of approvals.body.items as { id: string }[]) {
        await rejectsWith(
          other.request('GET', `/v1/tool-approvals/${id}`),
          404,
          'TOOL_APPROVAL_NOT_FOUND',
        );
      }
      const otherUsage = await other.usage.report({ group_by: 'template' });
      assert.deepEqual(
        otherUsage.rows.map((r) => r.key),
        ['borrower'],
      );
      const ownUsage = await client.usage.report({ group_by: 'template' });
      assert.ok(!ownUsage.rows.some((r) => r.key === 'borrower'));
    });

    test('bad input: llm templates are checked field by field', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ name: 'a', kind: 'llm' }, 'body.llm'],
        [{ name: 'b', llm: { model: { provider: 'scripted', model: 'small' } } }, 'body.llm'],
        [
          {
            name: 'c',
            kind: 'llm',
            capabilities: ['gpu'],
            llm: { model: { provider: 'scripted', model: 'small' } },
          },
          'body.capabilities',
        ],
        [
          { name: 'd', kind: 'llm', llm: { model: { provider: 'Bad Name', model: 'x' } } },
          'provider',
        ],
        [
          {
            name: 'e',
            kind: 'llm',
            llm: { model: { provider: 'scripted', model: 'small' }, temperature: 3 },
          },
          'temperature',
        ],
        [
          {
            name: 'f',
            kind: 'llm',
            llm: { model: { provider: 'scripted', model: 'small' }, limits: { max_turns: 0 } },
          },
          'max_turns',
        ],
        [{ name: 'g', kind: 'robot' }, 'kind'],
      ];
      for (const [body, field] of cases) {
        const error = expectError(
          await server.call('POST', '/v1/templates', { body }),
          400,
          'VALIDATION_FAILED',
        );
        assert.match(JSON.stringify(error.details), new RegExp(field.replace('.', '\\.')), field);
      }
      const agentTemplate = await client.templates.get('greeter');
      assert.equal(agentTemplate.kind, 'llm');
      assert.deepEqual(agentTemplate.capabilities, ['orchestra:llm']);
    });
  });
}
