import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Orchestra, type TaskEvent } from '@orchestra/sdk';
import { type RestartableServer, startRestartableServer } from '../../sdk/test/support.ts';
import { ScriptedModelServer } from '../src/providers/index.ts';
import { eventually, killSpawned } from './helpers.ts';

// `kill -9` of the node that runs a hosted agent, at each kind of step. The restarted node's
// runner (same ORCHESTRA_INSTANCE_ID: the same agent) hands the lost attempt back at once,
// and the next attempt resumes from the journal: completed model calls are replayed, not
// repeated; a tool call that was in flight runs again only when the tool is idempotent.

const WAIT_MS = 90_000;

/** An HTTP tool upstream whose calls hang while `hold` is set; it counts the calls. */
class ToolUpstream {
  hold = true;
  readonly hits: string[] = [];
  readonly #held = new Set<ServerResponse>();
  readonly #server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      this.hits.push(req.url ?? '');
      if (this.hold) {
        this.#held.add(res);
        res.on('close', () => this.#held.delete(res));
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ got: JSON.parse(body || 'null') }));
    });
  });
  url = '';

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const res of this.#held) res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

function journal(events: TaskEvent[], name: string): Record<string, any>[] {
  return events
    .filter((e) => e.type === 'task.custom' && (e.data as { name: string }).name === name)
    .map((e) => (e.data as { data: Record<string, any> }).data);
}

describe('hosted agents survive kill -9 of their node', () => {
  let server: RestartableServer;
  let client: Orchestra;
  let model: ScriptedModelServer;
  let upstream: ToolUpstream;

  before(async () => {
    model = await new ScriptedModelServer().listen();
    upstream = await new ToolUpstream().listen();
    server = await startRestartableServer('sqlite', {
      ORCHESTRA_INSTANCE_ID: 'crash-node',
      ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
      ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '3000',
      ORCHESTRA_TASK_RETRY_BASE_MS: '50',
    });
    client = new Orchestra({ url: server.url, apiKey: server.adminKey, timeoutMs: 20_000 });
    await client.modelProviders.create({
      name: 'scripted',
      kind: 'anthropic',
      base_url: model.url,
      models: [{ name: 'crash' }],
      max_retries: 0,
    });
    for (const [name, annotations] of [
      ['lookup', { readOnlyHint: true }],
      ['send_email', { destructiveHint: false, idempotentHint: false }],
    ] as const) {
      const created = await client.request('POST', '/v1/tools', {
        body: {
          name,
          description: name,
          annotations,
          input_schema: { type: 'object' },
          timeout_ms: 120_000,
          source: { type: 'http', method: 'POST', url: `${upstream.url}/${name}` },
        },
      });
      assert.ok(created);
    }
    await client.templates.create({
      name: 'crashy',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'crash' }, tools: ['lookup', 'send_email'] },
      default_max_attempts: 3,
    });
  });
  after(async () => {
    await server?.remove();
    await model?.close();
    await upstream?.close();
    killSpawned();
  });

  /** Kills the node once `ready` holds, starts it again, and waits for the task to end. */
  async function crashDuring(taskId: string, ready: () => boolean) {
    await eventually('the step to be under way', ready);
    await server.crash();
    upstream.hold = false;
    await server.restart();
    return client.tasks.wait(taskId, { timeoutMs: WAIT_MS });
  }

  test('during a model call: the call had not completed, so it is made again; the run succeeds', async () => {
    upstream.hold = true;
    model.script(
      'crash',
      { text: 'never finished', stall_after_chunks: 1 },
      { text: 'answered after the crash' },
    );
    const before = model.requestsFor('crash').length;
    const task = await client.tasks.create({ template: 'crashy', input: { prompt: 'hi' } });
    const done = await crashDuring(task.id, () => model.requestsFor('crash').length > before);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result, 'answered after the crash');
    assert.equal(done.attempt, 2);
    const events: TaskEvent[] = [];
    for await (const e of client.tasks.events(task.id))
      if ('offset' in e) events.push(e as TaskEvent);
    assert.equal(journal(events, 'llm.model_call').length, 1, 'one completed model call');
  });

  test('during an idempotent tool call: the completed model call is replayed, not repeated; the tool runs again', async () => {
    upstream.hold = true;
    model.script(
      'crash',
      {
        text: 'Looking it up.',
        tool_calls: [{ id: 'toolu_1', name: 'lookup', arguments: { q: 'x' } }],
      },
      { text: 'found it' },
    );
    const modelBefore = model.requestsFor('crash').length;
    const hitsBefore = upstream.hits.length;
    const task = await client.tasks.create({ template: 'crashy', input: { prompt: 'look it up' } });
    const done = await crashDuring(task.id, () => upstream.hits.length > hitsBefore);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result, 'found it');
    assert.equal(model.requestsFor('crash').length - modelBefore, 2, 'turn 1 once, turn 2 once');
    assert.deepEqual(upstream.hits.slice(hitsBefore), ['/lookup', '/lookup']);
    const second = model.requestsFor('crash').at(-1);
    const results = ((second?.body.messages ?? []) as { role: string; content: unknown }[]).filter(
      (m) => m.role === 'user' && Array.isArray(m.content),
    );
    assert.match(JSON.stringify(results), /tool_result.*toolu_1.*\\"got\\":\{\\"q\\":\\"x\\"\}/);
    // Usage counts each completed model call once, across the attempts.
    const usage = await client.usage.report({ group_by: 'task' });
    assert.equal(usage.rows.find((r) => r.key === task.id)?.model_calls, 2);
  });

  test('during a tool call that is not idempotent: it is not made again, and the run stops with TOOL_CALL_INTERRUPTED', async () => {
    upstream.hold = true;
    model.script('crash', {
      text: '',
      tool_calls: [{ id: 'toolu_2', name: 'send_email', arguments: { to: 'a@example.com' } }],
    });
    const modelBefore = model.requestsFor('crash').length;
    const hitsBefore = upstream.hits.length;
    const task = await client.tasks.create({ template: 'crashy', input: { prompt: 'mail it' } });
    const done = await crashDuring(task.id, () => upstream.hits.length > hitsBefore);
    assert.equal(done.state, 'failed');
    assert.equal(done.error?.code, 'TOOL_CALL_INTERRUPTED');
    assert.match(done.error?.message ?? '', /"send_email"/);
    assert.deepEqual(upstream.hits.slice(hitsBefore), ['/send_email'], 'sent once');
    assert.equal(
      model.requestsFor('crash').length - modelBefore,
      1,
      'no model call after the crash',
    );
  });

  test('while a task awaits an approval: it still awaits after the restart; approving resumes it, and the call runs once, on approval', async () => {
    await client.templates.create({
      name: 'crashy-approved',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'crash' }, tools: ['send_email'] },
      default_max_attempts: 3,
    });
    await client.request('POST', '/v1/tool-policies', {
      body: {
        name: 'mail-needs-approval',
        effect: 'allow',
        tools: ['send_email'],
        approval: 'required',
        match: { templates: ['crashy-approved'] },
      },
    });
    upstream.hold = false;
    model.script(
      'crash',
      {
        text: '',
        tool_calls: [{ id: 'toolu_3', name: 'send_email', arguments: { to: 'b@example.com' } }],
      },
      { text: 'mail sent after approval' },
    );
    const modelBefore = model.requestsFor('crash').length;
    const hitsBefore = upstream.hits.length;
    const task = await client.tasks.create({
      template: 'crashy-approved',
      input: { prompt: 'mail' },
    });
    for await (const item of client.tasks.events(task.id)) {
      if ((item as TaskEvent).type === 'task.awaiting_approval') break;
    }
    await server.crash();
    await server.restart();
    const waiting = await client.tasks.get(task.id);
    assert.equal(waiting.state, 'awaiting_approval', 'the wait is durable');
    const approvalId =
      waiting.waiting?.reason === 'approval' ? waiting.waiting.approvals[0]?.id : undefined;
    assert.ok(approvalId);
    const approval = (await client.request('GET', `/v1/tool-approvals/${approvalId}`)) as {
      arguments_hash: string;
    };
    await client.request('POST', `/v1/tool-approvals/${approvalId}/approve`, {
      body: { arguments_hash: approval.arguments_hash },
    });
    const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result, 'mail sent after approval');
    assert.deepEqual(upstream.hits.slice(hitsBefore), ['/send_email'], 'sent once, on approval');
    assert.equal(model.requestsFor('crash').length - modelBefore, 2, 'turn 1 once, turn 2 once');
  });
});
