import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import type { ToolCall } from '@orchestra/protocol';
import { STORE_VARIANTS, startTestServer, type TestServer } from '../../server/test/helpers.ts';
import {
  AgentWorker,
  type AgentWorkerOptions,
  Orchestra,
  OrchestraError,
  type TaskContext,
} from '../src/index.ts';
import { eventually } from './support.ts';

// Agents call tools through Orchestra (issue 20): a real AgentWorker runs tasks whose
// handler calls HTTP tools with ctx.tools; the tools point at a loopback HTTP server.

/** Every wait for a task is bounded by this, generously: machines are shared. */
const WAIT_MS = 60_000;
/** Tool calls one agent connection may have in flight, for the bound's test. */
const MAX_TOOL_CALLS = 2;

/** A loopback upstream: `/weather` answers at once, `/slow` when the test releases it. */
class Upstream {
  readonly #server: Server;
  url = '';
  /** The query strings `/weather` was called with. */
  readonly weather: string[] = [];
  /** `/slow` requests waiting for an answer; `closed` once the caller went away. */
  readonly slow: { res: ServerResponse; closed: boolean }[] = [];

  constructor() {
    this.#server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/weather') {
        this.weather.push(url.search);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ city: url.searchParams.get('city'), sky: 'clear' }));
        return;
      }
      if (url.pathname === '/slow') {
        const held = { res, closed: false };
        res.on('close', () => {
          held.closed = true;
        });
        this.slow.push(held);
        return;
      }
      res.writeHead(404).end();
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Answers every held `/slow` request that is still open. */
  release(): void {
    for (const held of this.slow.splice(0)) {
      if (!held.closed) held.res.writeHead(200, { 'content-type': 'text/plain' }).end('done');
    }
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** What a handler saw of a refused call, to return it as the task's output. */
function refusal(err: unknown): { code: string; status: number; call?: ToolCall } {
  assert.ok(err instanceof OrchestraError, `expected an OrchestraError, got ${err}`);
  const call = err.details?.call as ToolCall | undefined;
  return { code: err.code, status: err.status, ...(call ? { call } : {}) };
}

for (const store of STORE_VARIANTS) {
  describe(`agents call tools through Orchestra on ${store}`, () => {
    let server: TestServer;
    let admin: Orchestra;
    let agentKey: string;
    const upstream = new Upstream();
    const workers: AgentWorker[] = [];
    let run = 0;

    before(async () => {
      await upstream.start();
      server = await startTestServer({
        store,
        env: {
          ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '200',
          ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '2000',
          ORCHESTRA_AGENT_MAX_TOOL_CALLS: String(MAX_TOOL_CALLS),
        },
      });
      admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
      agentKey = (await admin.apiKeys.create({ name: 'tool-agent', role: 'agent' })).secret;
      const tool = (name: string, path: string, extra: Record<string, unknown> = {}) =>
        admin.request('POST', '/v1/tools', {
          body: {
            name,
            annotations: { readOnlyHint: true },
            source: { type: 'http', method: 'GET', url: `${upstream.url}${path}` },
            ...extra,
          },
        });
      await tool('weather', '/weather', {
        description: 'The sky over a city',
        input_schema: {
          type: 'object',
          required: ['city'],
          properties: { city: { type: 'string' } },
        },
      });
      await tool('slow', '/slow');
      // Destructive (no annotations): only an allow policy lets anyone call it.
      await tool('launch', '/weather', { annotations: {} });
      await tool('secret-weather', '/weather');
    });

    afterEach(async () => {
      await Promise.all(workers.splice(0).map((w) => w.stop({ drain: false })));
      upstream.release();
    });

    after(async () => {
      await server?.stop();
      await upstream.stop();
    });

    /** Starts an agent whose handler is `handler`, on a capability of its own. */
    const startAgent = async (
      handler: (input: unknown, ctx: TaskContext) => Promise<unknown>,
      options: Partial<AgentWorkerOptions> = {},
    ): Promise<{ worker: AgentWorker; agentId: string; capability: string }> => {
      run += 1;
      const agentId = `tools-agent-${run}`;
      const capability = `tools-${run}`;
      const worker = new AgentWorker({
        url: server.url,
        apiKey: agentKey,
        agentId,
        capabilities: [capability],
        concurrency: 4,
        handler,
        handleSignals: false,
        ...options,
      });
      workers.push(worker);
      await worker.start();
      return { worker, agentId, capability };
    };

    /** Submits a task and waits until it ends; resolves to its result, failing on a failure. */
    const runTask = async (body: Record<string, unknown>): Promise<any> => {
      const task = await admin.tasks.create(body as never);
      const ended = await admin.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(ended.state, 'succeeded', JSON.stringify(ended.error));
      return { task: ended, output: ended.result };
    };

    test('a handler lists tools and calls an HTTP tool; the record names the agent, the task and its session', async () => {
      const session = await admin.sessions.create({ labels: { team: 'search' } });
      const { agentId, capability } = await startAgent(async (input, ctx) => {
        const listed = await ctx.tools.list({ q: 'sky' });
        const { call, result } = await ctx.tools.call('weather', {
          city: (input as { city: string }).city,
        });
        return { listed, call, result };
      });
      const { task, output } = await runTask({
        capabilities: [capability],
        input: { city: 'Lyon' },
        session_id: session.id,
      });
      assert.deepEqual(
        output.listed.map((t: { name: string }) => t.name),
        ['weather'],
      );
      assert.equal(output.listed[0].source, undefined, 'agents do not see where calls go');
      assert.ok(upstream.weather.includes('?city=Lyon'), upstream.weather.join());
      assert.equal(output.result.is_error, false);
      assert.deepEqual(output.result.structured_content, { city: 'Lyon', sky: 'clear' });
      assert.equal(output.call.status, 'succeeded');
      assert.deepEqual(
        { ...output.call.caller, credential: undefined },
        {
          credential: undefined,
          role: 'agent',
          agent_id: agentId,
          task_id: task.id,
          session_id: session.id,
        },
      );
      const recorded = await admin.request<ToolCall>('GET', `/v1/tool-calls/${output.call.id}`);
      assert.equal(recorded.caller.agent_id, agentId);
      assert.equal(recorded.caller.task_id, task.id);
      assert.equal(recorded.caller.session_id, session.id);
    });

    test('policies that match agents and templates allow or deny the calls of a task; a denied call rejects with TOOL_CALL_DENIED', async () => {
      const { agentId, capability } = await startAgent(async (_input, ctx) => {
        const outcome = async (name: string) => {
          try {
            const { call } = await ctx.tools.call(name, {});
            return { status: call.status };
          } catch (err) {
            return refusal(err);
          }
        };
        return {
          listed: (await ctx.tools.list()).map((t) => t.name),
          launch: await outcome('launch'),
          secret: await outcome('secret-weather'),
        };
      });
      await admin.templates.create({ name: 'launcher', capabilities: [capability] });
      await admin.templates.create({ name: 'bystander', capabilities: [capability] });
      await admin.request('POST', '/v1/tool-policies', {
        body: {
          name: 'launchers-launch',
          effect: 'allow',
          tools: ['launch'],
          match: { templates: ['launcher'] },
        },
      });
      await admin.request('POST', '/v1/tool-policies', {
        body: {
          name: 'not-this-agent',
          effect: 'deny',
          tools: ['secret-*'],
          match: { agents: [agentId] },
        },
      });

      const launcher = await runTask({ template: 'launcher' });
      // Listing shows what the policies let the task's calls reach.
      assert.deepEqual(launcher.output.listed, ['weather', 'slow', 'launch']);
      assert.deepEqual(launcher.output.launch, { status: 'succeeded' });
      const bystander = await runTask({ template: 'bystander' });
      assert.deepEqual(bystander.output.listed, ['weather', 'slow']);
      assert.equal(bystander.output.launch.code, 'TOOL_CALL_DENIED');
      assert.equal(bystander.output.launch.status, 403);
      assert.equal(bystander.output.launch.call.status, 'denied');
      assert.equal(bystander.output.launch.call.caller.task_id, bystander.task.id);
      for (const { output } of [launcher, bystander]) {
        assert.equal(output.secret.code, 'TOOL_CALL_DENIED');
        assert.equal(output.secret.call.error.code, 'TOOL_CALL_DENIED');
      }

      // Another agent is not matched by the deny: its call goes through.
      const other = await startAgent(async (_input, ctx) => {
        const { call } = await ctx.tools.call('secret-weather', {});
        return call.status;
      });
      const { output } = await runTask({ capabilities: [other.capability] });
      assert.equal(output, 'succeeded');
    });

    test('refused calls reject with their code; a bad argument is TOOL_INVALID_ARGUMENTS and an unknown tool TOOL_NOT_FOUND', async () => {
      const { capability } = await startAgent(async (_input, ctx) => {
        const codes: unknown[] = [];
        for (const [name, args] of [
          ['weather', { city: 7 }],
          ['no-such-tool', {}],
        ] as const) {
          try {
            await ctx.tools.call(name, args);
            codes.push('called');
          } catch (err) {
            codes.push(refusal(err).code);
          }
        }
        return codes;
      });
      const { output } = await runTask({ capabilities: [capability] });
      assert.deepEqual(output, ['TOOL_INVALID_ARGUMENTS', 'TOOL_NOT_FOUND']);
    });

    test(`calls run concurrently, at most ${MAX_TOOL_CALLS} per connection: one more rejects with AGENT_TOOL_CALLS_LIMITED and the task's frames go on meanwhile`, async () => {
      const { capability } = await startAgent(async (_input, ctx) => {
        const first = [ctx.tools.call('slow', {}), ctx.tools.call('slow', {})];
        await eventually('both slow calls reach the upstream', async () =>
          upstream.slow.length === MAX_TOOL_CALLS ? true : undefined,
        );
        // The frame loop is not held by the calls in flight: this event is stored meanwhile.
        ctx.progress(1, 2, 'two calls in flight');
        for await (const item of admin.tasks.events(ctx.task.id, {
          signal: AbortSignal.timeout(WAIT_MS),
        })) {
          if ((item as { type?: string }).type === 'task.progress') break;
        }
        let third: string;
        try {
          await ctx.tools.call('weather', { city: 'Oslo' });
          third = 'called';
        } catch (err) {
          third = refusal(err).code;
        }
        upstream.release();
        const results = await Promise.all(first);
        return { third, results: results.map((r) => r.result?.content) };
      });
      const { output } = await runTask({ capabilities: [capability] });
      assert.equal(output.third, 'AGENT_TOOL_CALLS_LIMITED');
      assert.deepEqual(output.results, [
        [{ type: 'text', text: 'done' }],
        [{ type: 'text', text: 'done' }],
      ]);
    });

    test('a task that times out aborts the tool calls made for it', async () => {
      const { agentId, capability } = await startAgent(async (_input, ctx) => {
        await ctx.tools.call('slow', {}).catch(() => undefined);
      });
      const heldBefore = upstream.slow.length;
      const task = await admin.tasks.create({
        capabilities: [capability],
        timeout_ms: 1000,
        max_attempts: 1,
      });
      const held = await eventually('the slow call reaches the upstream', async () =>
        upstream.slow.length > heldBefore ? upstream.slow.at(-1) : undefined,
      );
      // Well before the tool's own 30 s timeout: the task's end is what aborts the call.
      await eventually('the upstream request is aborted', async () =>
        held.closed ? true : undefined,
      );
      const ended = await admin.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(ended.state, 'timed_out');
      const call = await eventually('the call is recorded as failed', async () => {
        const page = await admin.request<{ items: ToolCall[] }>('GET', '/v1/tool-calls', {
          query: { agent_id: agentId },
        });
        return page.items[0]?.status === 'failed' ? page.items[0] : undefined;
      });
      assert.equal(call.caller.task_id, task.id);
      assert.match(call.error?.message ?? '', /cancelled/);
    });

    test('closing the connection aborts its calls in flight at their source', async () => {
      let started!: () => void;
      const calling = new Promise<void>((resolve) => {
        started = resolve;
      });
      let seen: unknown;
      const { worker, agentId, capability } = await startAgent(async (_input, ctx) => {
        started();
        try {
          await ctx.tools.call('slow', {});
          seen = 'answered';
        } catch (err) {
          seen = err;
        }
      });
      await admin.tasks.create({ capabilities: [capability] });
      await calling;
      const held = await eventually('the slow call reaches the upstream', async () =>
        upstream.slow.at(-1),
      );
      await worker.stop({ drain: false });
      await eventually('the upstream request is aborted', async () =>
        held.closed ? true : undefined,
      );
      const record = await eventually('the call is recorded as failed', async () => {
        const page = await admin.request<{ items: ToolCall[] }>('GET', '/v1/tool-calls', {
          query: { agent_id: agentId },
        });
        const call = page.items[0];
        return call?.status === 'failed' ? call : undefined;
      });
      assert.match(record.error?.message ?? '', /cancelled/);
      assert.notEqual(seen, 'answered');
    });
  });
}
