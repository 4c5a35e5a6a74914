import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AgentTool } from '@orchestra/protocol';
import { AgentWorker, type CreateTemplateInput, Orchestra, type TaskEvent } from '@orchestra/sdk';
import { SecretBox } from '../src/platform/secret-box.ts';
import { ScriptedModelServer } from '../src/providers/index.ts';
import { expectError, runCli, startTestServer, type TestServer, tempDir } from './helpers.ts';

// Agents in workspaces, as users meet them: a task submitted with an instance, a hosted agent
// (the real provider client against the scripted model server) and an SDK agent using the
// built-in workspace tools under tool policies, and the checkpoints that let a user undo
// what the agent did.

const WAIT_MS = 60_000;
const WORKSPACE_TOOLS = [
  'workspace.checkpoint',
  'workspace.exec',
  'workspace.list_files',
  'workspace.read_file',
  'workspace.search',
  'workspace.terminal',
  'workspace.write_file',
];

/** The custom events named `name` of a task that ended (the run's journal), their data. */
async function journal(client: Orchestra, taskId: string, name: string) {
  const events: TaskEvent[] = [];
  for await (const item of client.tasks.events(taskId)) {
    if ('offset' in item) events.push(item as TaskEvent);
  }
  return events
    .filter((e) => e.type === 'task.custom' && (e.data as { name: string }).name === name)
    .map((e) => (e.data as { data: Record<string, unknown> }).data);
}

describe('workspace tools', () => {
  let server: TestServer;
  let client: Orchestra;
  let model: ScriptedModelServer;
  let instance: string;
  let agentKey: string;
  const secretsKey = randomBytes(32);

  before(async () => {
    server = await startTestServer({ env: { ORCHESTRA_SECRETS_KEY: secretsKey.toString('hex') } });
    client = new Orchestra({ url: server.url, apiKey: server.adminKey });
    model = await new ScriptedModelServer({ apiKey: 'sk-ws' }).listen();
    await client.secrets.put('MODEL_KEY', 'sk-ws');
    await client.modelProviders.create({
      name: 'scripted',
      kind: 'openai',
      base_url: `${model.url}/v1`,
      api_key_secret: 'MODEL_KEY',
      models: [{ name: 'small' }],
      max_retries: 0,
    });
    // Made first: the node's hosted runner joins the tenant when a task is first submitted.
    await client.templates.create({
      name: 'coder',
      kind: 'llm',
      llm: { model: { provider: 'scripted', model: 'small' }, tools: ['workspace.*'] },
      default_max_attempts: 1,
    } as CreateTemplateInput);
    await server.call('POST', '/v1/workspace-templates', { body: { name: 'scratch' } });
    const created = await server.call('POST', '/v1/instances', { body: { template: 'scratch' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.state, 'running');
    instance = created.body.id;
    const key = await server.call('POST', '/v1/api-keys', {
      body: { name: 'coder', role: 'agent' },
    });
    agentKey = key.body.secret;
  });

  after(async () => {
    await model.close();
    await server.stop();
  });

  test('the registry lists the built-in tools; they cannot be changed, and their names are kept', async () => {
    const listed = await server.call('GET', '/v1/tools?source=workspace');
    assert.equal(listed.status, 200);
    assert.deepEqual(
      listed.body.items.map((t: { name: string }) => t.name),
      WORKSPACE_TOOLS.slice().sort((a, b) => {
        const id = (n: string) => `tool_00_${n}`;
        return id(a) < id(b) ? -1 : 1;
      }),
    );
    const exec = await server.call('GET', '/v1/tools/workspace.exec');
    assert.equal(exec.status, 200);
    assert.deepEqual(exec.body.source, { type: 'workspace', operation: 'exec' });
    assert.equal(exec.body.destructive, true);
    assert.equal(
      (await server.call('GET', `/v1/tools/${exec.body.id}`)).body.name,
      'workspace.exec',
    );
    const read = await server.call('GET', '/v1/tools/workspace.read_file');
    assert.equal(read.body.destructive, false);
    const versions = await server.call('GET', '/v1/tools/workspace.exec/versions');
    assert.deepEqual(
      versions.body.items.map((v: { version: number }) => v.version),
      [1],
    );
    expectError(
      await server.call('GET', '/v1/tools/workspace.exec/versions/2'),
      404,
      'TOOL_VERSION_NOT_FOUND',
    );
    // A page boundary inside the built-in tools and on into the stored ones.
    await server.call('POST', '/v1/tools', {
      body: {
        name: 'stored',
        annotations: { readOnlyHint: true },
        source: { type: 'http', method: 'GET', url: 'http://127.0.0.1:9/x' },
      },
    });
    const names: string[] = [];
    let cursor: string | null = null;
    do {
      const page: {
        status: number;
        body: { items: { name: string }[]; next_cursor: string | null };
      } = await server.call(
        'GET',
        `/v1/tools?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      assert.equal(page.status, 200, JSON.stringify(page.body));
      names.push(...page.body.items.map((t) => t.name));
      cursor = page.body.next_cursor;
    } while (cursor !== null);
    assert.equal(names.length, WORKSPACE_TOOLS.length + 1);
    assert.equal(names.at(-1), 'stored');
    assert.deepEqual(
      (await server.call('GET', '/v1/tools?q=ripgrep')).body.items.map(
        (t: { name: string }) => t.name,
      ),
      ['workspace.search'],
    );
    assert.equal((await server.call('GET', '/v1/tools?source=http')).body.items.length, 1);

    expectError(
      await server.call('PUT', '/v1/tools/workspace.exec', {
        body: { source: { type: 'http', method: 'GET', url: 'http://127.0.0.1:9/' } },
      }),
      409,
      'TOOL_NOT_EDITABLE',
    );
    expectError(await server.call('DELETE', '/v1/tools/workspace.exec'), 409, 'TOOL_NOT_EDITABLE');
    const taken = expectError(
      await server.call('POST', '/v1/tools', {
        body: {
          name: 'workspace.mine',
          source: { type: 'http', method: 'GET', url: 'http://127.0.0.1:9/' },
        },
      }),
      400,
      'VALIDATION_FAILED',
    );
    assert.match(taken.message, /body\.name: names starting with "workspace\." are kept/);
    // Not for a caller without a task in an instance: refused, and recorded as such.
    const direct = expectError(
      await server.call('POST', '/v1/tools/workspace.read_file/invoke', {
        body: { arguments: { path: 'a.txt' } },
      }),
      409,
      'TOOL_NOT_AVAILABLE',
    );
    assert.match(direct.message, /works only for a task that names an instance/);
    const recorded = await server.call('GET', '/v1/tool-calls?tool=workspace.read_file');
    assert.equal(recorded.body.items[0].status, 'denied');
  });

  test('a task names an instance of its tenant; the CLI submits one and shows it', async () => {
    const missing = expectError(
      await server.call('POST', '/v1/tasks', {
        body: { capabilities: ['nobody'], instance: 'ins_missing' },
      }),
      400,
      'VALIDATION_FAILED',
    );
    assert.match(missing.message, /body\.instance: no instance "ins_missing" in this tenant/);
    // Another tenant's instance is not there for it.
    const tenant = await server.call('POST', '/v1/tenants', { body: { id: 'ws-other' } });
    assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
    expectError(
      await server.call('POST', '/v1/tasks', {
        body: { capabilities: ['nobody'], instance },
        key: tenant.body.admin_key.secret,
      }),
      400,
      'VALIDATION_FAILED',
    );
    const work = tempDir('orchestra-ws-cli-');
    const cli = (args: string[]) =>
      runCli([...args, '--url', server.url, '--api-key', server.adminKey], { cwd: work.path });
    const submitted = await cli([
      'task',
      'submit',
      '--capability',
      'nobody',
      '--instance',
      instance,
    ]);
    assert.equal(submitted.code, 0, submitted.stderr);
    const id = /Submitted task (tsk_\w+)/.exec(submitted.stdout)?.[1] ?? '';
    const shown = await cli(['task', 'get', id]);
    const listed = await cli(['task', 'ls', '--instance', instance, '--json']);
    work.remove();
    assert.deepEqual(
      JSON.parse(listed.stdout).map((t: { id: string }) => t.id),
      [id],
    );
    const other = await server.call('GET', '/v1/tasks?instance_id=ins_none');
    assert.deepEqual(other.body.items, []);
    assert.match(shown.stdout, new RegExp(`Instance:\\s+${instance}`));
    const task = await client.tasks.get(id);
    assert.equal(task.instance_id, instance);
    await client.tasks.cancel(id);
  });

  test('a hosted agent works in the instance under tool policies; checkpoints before the attempt and after each turn undo it', async () => {
    // Without an allow, only the tools that change nothing (and checkpoint) are offered.
    model.script('small', { text: 'Nothing to do.' });
    const before = model.requests.length;
    const looked = await client.tasks.create({ template: 'coder', input: 'look', instance });
    assert.equal((await client.tasks.wait(looked.id, { timeoutMs: WAIT_MS })).state, 'succeeded');
    const offered = (
      (model.requests[before]?.body.tools ?? []) as { function: { name: string } }[]
    ).map((t) => t.function.name);
    assert.deepEqual(offered.sort(), [
      'workspace_checkpoint',
      'workspace_list_files',
      'workspace_read_file',
      'workspace_search',
    ]);

    const policy = await server.call('POST', '/v1/tool-policies', {
      body: {
        name: 'coders-write',
        effect: 'allow',
        tools: ['workspace.*'],
        match: { templates: ['coder'] },
      },
    });
    assert.equal(policy.status, 201, JSON.stringify(policy.body));
    model.script(
      'small',
      {
        text: '',
        tool_calls: [
          {
            id: 'w1',
            name: 'workspace_write_file',
            arguments: { path: 'notes/hello.txt', content: 'hello workspace\n' },
          },
        ],
      },
      {
        text: '',
        tool_calls: [
          {
            id: 'x1',
            name: 'workspace_exec',
            arguments: { command: 'tr a-z A-Z < notes/hello.txt' },
          },
          { id: 'r1', name: 'workspace_read_file', arguments: { path: 'missing.txt' } },
        ],
      },
      { text: 'Done.' },
    );
    const from = model.requests.length;
    const task = await client.tasks.create({ template: 'coder', input: 'write it', instance });
    const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    const workspace = join(server.dataDir, 'instances', instance, 'workspace');
    assert.equal(readFileSync(join(workspace, 'notes', 'hello.txt'), 'utf8'), 'hello workspace\n');

    // What the model got back: the command's output, and a missing file as a tool error.
    const third = model.requests[from + 2];
    const results = (
      (third?.body.messages ?? []) as { role: string; tool_call_id?: string; content?: string }[]
    ).filter((m) => m.role === 'tool');
    const byId = new Map(results.map((m) => [m.tool_call_id, m.content ?? '']));
    assert.match(byId.get('x1') ?? '', /exit code 0\nstdout:\nHELLO WORKSPACE/);
    assert.match(byId.get('r1') ?? '', /missing\.txt/);
    const calls = await server.call('GET', `/v1/tool-calls?task_id=${task.id}`);
    assert.deepEqual(
      calls.body.items.map((c: { tool: string; status: string }) => [c.tool, c.status]).sort(),
      [
        ['workspace.exec', 'succeeded'],
        ['workspace.read_file', 'succeeded'],
        ['workspace.write_file', 'succeeded'],
      ],
    );

    // One checkpoint before the attempt, one after each turn that called tools.
    const checkpoints = await client.instances.checkpoints.list(instance, { task_id: task.id });
    assert.deepEqual(checkpoints.items.map((c) => c.message).reverse(), [
      `before attempt 1 of task ${task.id}`,
      `after turn 1 of task ${task.id}`,
      `after turn 2 of task ${task.id}`,
    ]);
    const journaled = await journal(client, task.id, 'llm.checkpoint');
    assert.deepEqual(
      journaled.map((j) => [j.turn, j.checkpoint_id]),
      [
        [1, checkpoints.items[1]?.id],
        [2, checkpoints.items[0]?.id],
      ],
    );
    const beforeAttempt = checkpoints.items.at(-1);
    assert.ok(beforeAttempt);
    const diff = await client.instances.checkpoints.diff(instance, beforeAttempt.id);
    assert.deepEqual(
      diff.files.map((f) => [f.path, f.status]),
      [['notes/hello.txt', 'added']],
    );
    // The user undoes what the agent did.
    await client.instances.checkpoints.restore(instance, beforeAttempt.id);
    assert.equal(existsSync(join(workspace, 'notes', 'hello.txt')), false);

    // A deny wins over the allow.
    await server.call('POST', '/v1/tool-policies', {
      body: { name: 'no-exec', effect: 'deny', tools: ['workspace.exec'] },
    });
    model.script('small', { text: 'No exec.' });
    const mark = model.requests.length;
    const denied = await client.tasks.create({ template: 'coder', input: 'again', instance });
    assert.equal((await client.tasks.wait(denied.id, { timeoutMs: WAIT_MS })).state, 'succeeded');
    const names = ((model.requests[mark]?.body.tools ?? []) as { function: { name: string } }[])
      .map((t) => t.function.name)
      .sort();
    assert.equal(names.includes('workspace_exec'), false);
    assert.equal(names.includes('workspace_write_file'), true);
    await server.call('DELETE', '/v1/tool-policies/no-exec');
    await server.call('DELETE', '/v1/tool-policies/coders-write');
  });

  test('an SDK agent gets the workspace tools for its task: files, exec, a terminal, a checkpoint on request', async () => {
    await server.call('POST', '/v1/tool-policies', {
      body: { name: 'remote-coder', effect: 'allow', tools: ['workspace.*'] },
    });
    const seen: { listed: string[]; screen: string; checkpoint: string }[] = [];
    // The user's own terminal in the instance, and a link out of the workspace.
    const opened = await server.call('POST', `/v1/instances/${instance}/terminals`, {
      body: { command: ['sh'] },
    });
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    const userTerminal = opened.body.id as string;
    symlinkSync('/etc', join(server.dataDir, 'instances', instance, 'workspace', 'link-out'));
    const worker = new AgentWorker({
      url: server.url,
      apiKey: agentKey,
      agentId: 'remote-coder',
      capabilities: ['code'],
      handleSignals: false,
      handler: async (input, ctx) => {
        if (input === 'plain') {
          const tools: AgentTool[] = await ctx.tools.list();
          const refused = await ctx.tools.call('workspace.read_file', { path: 'x' }).then(
            () => 'called',
            (err: Error & { code?: string }) => err.code ?? err.message,
          );
          return { names: tools.map((t) => t.name), refused };
        }
        assert.equal(ctx.task.instance_id, instance);
        const listed = (await ctx.tools.list({ namePrefix: 'workspace.' })).map((t) => t.name);
        const wrote = await ctx.tools.call('workspace.write_file', {
          path: 'remote.txt',
          content: 'from the SDK\n',
        });
        assert.equal(wrote.result?.is_error, false, JSON.stringify(wrote.result));
        const ran = await ctx.tools.call('workspace.exec', { command: 'wc -c < remote.txt' });
        assert.match(
          (ran.result?.content[0] as { text: string } | undefined)?.text ?? '',
          /exit code 0\nstdout:\n13/,
        );
        // A long output: its end, where a failing build says why, and what was left out.
        const long = await ctx.tools.call('workspace.exec', { command: 'seq 1 50000' });
        const longText = (long.result?.content[0] as { text: string } | undefined)?.text ?? '';
        assert.match(longText, /^exit code 0\nstdout:\n\(\d+ characters before this left out\)\n/);
        assert.match(longText, /\n49999\n50000\n$/);
        assert.ok(longText.length < 70_000, String(longText.length));
        const opened = await ctx.tools.call('workspace.terminal', {
          input: 'echo typed-$((6*7))\n',
          wait_ms: 1500,
        });
        const terminal = opened.result?.structured_content as {
          terminal_id: string;
          lines: string[];
        };
        let screen = terminal.lines.join('\n');
        for (let i = 0; i < 20 && !screen.includes('typed-42'); i++) {
          const again = await ctx.tools.call('workspace.terminal', {
            terminal_id: terminal.terminal_id,
            wait_ms: 500,
          });
          screen =
            (again.result?.structured_content as { lines: string[] } | undefined)?.lines.join(
              '\n',
            ) ?? '';
        }
        await ctx.tools.call('workspace.terminal', {
          terminal_id: terminal.terminal_id,
          close: true,
          wait_ms: 0,
        });
        // A person's terminal is not the task's to type into.
        const theirs = await ctx.tools.call('workspace.terminal', {
          terminal_id: userTerminal,
          input: 'echo hijacked\n',
        });
        assert.equal(theirs.result?.is_error, true);
        assert.match(
          (theirs.result?.content[0] as { text: string } | undefined)?.text ?? '',
          /No terminal "trm_\w+" opened by this task/,
        );
        // Paths stay in the workspace, as through the API.
        for (const path of ['../../../etc/passwd', '/etc/passwd', 'link-out/passwd']) {
          const read = await ctx.tools.call('workspace.read_file', { path });
          assert.equal(read.result?.is_error, true, `${path}: ${JSON.stringify(read.result)}`);
        }
        const found = await ctx.tools.call('workspace.search', { query: 'SDK' });
        assert.match(
          (found.result?.content[0] as { text: string } | undefined)?.text ?? '',
          /remote\.txt:1:/,
        );
        const checkpoint = await ctx.checkpoint('halfway');
        seen.push({ listed, screen, checkpoint });
        return 'ok';
      },
    });
    await worker.start();
    try {
      const task = await client.tasks.create({ capabilities: ['code'], input: 'work', instance });
      const done = await client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
      const [outcome] = seen;
      assert.ok(outcome);
      assert.deepEqual(outcome.listed.sort(), WORKSPACE_TOOLS);
      assert.match(outcome.screen, /typed-42/);
      const checkpoints = await client.instances.checkpoints.list(instance, { task_id: task.id });
      assert.deepEqual(
        checkpoints.items.map((c) => [c.id === outcome.checkpoint, c.message]),
        [
          [true, 'halfway'],
          [false, `before attempt 1 of task ${task.id}`],
        ],
      );
      // The task's terminal is closed; the user's runs on, untouched.
      const terminals = await server.call('GET', `/v1/instances/${instance}/terminals`);
      assert.deepEqual(
        terminals.body.items
          .filter((t: { state: string }) => t.state === 'running')
          .map((t: { id: string }) => t.id),
        [userTerminal],
      );
      const screen = await server.call(
        'GET',
        `/v1/instances/${instance}/terminals/${userTerminal}/screen`,
      );
      assert.doesNotMatch(JSON.stringify(screen.body.lines), /hijacked/);
      await server.call('DELETE', `/v1/instances/${instance}/terminals/${userTerminal}`);

      // A task without an instance: no workspace tools listed, and a call is refused.
      const plain = await client.tasks.create({ capabilities: ['code'], input: 'plain' });
      const ended = await client.tasks.wait(plain.id, { timeoutMs: WAIT_MS });
      const result = ended.result as { names: string[]; refused: string };
      assert.equal(
        result.names.some((n) => n.startsWith('workspace.')),
        false,
      );
      assert.equal(result.refused, 'TOOL_NOT_AVAILABLE');
    } finally {
      await worker.stop();
      await server.call('DELETE', '/v1/tool-policies/remote-coder');
    }
  });

  test('a workspace call between nodes must be sealed with the cluster’s key', async () => {
    const body = JSON.stringify({
      tenant_id: 'ten_x',
      instance_id: instance,
      task_id: null,
      caller: { subject: 'x', role: 'admin' },
      operation: 'exec',
      args: { command: 'id' },
    });
    const send = async (credential: string | undefined, payload = body) => {
      const res = await fetch(`${server.url}/v1/internal/workspace-calls`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(credential !== undefined ? { authorization: `Bearer ${credential}` } : {}),
        },
        body: payload,
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    const forged = `owc_${Buffer.from('v2:forged:AAAA').toString('base64url')}`;
    // No credential, a forged seal: not a node of the cluster.
    for (const credential of [undefined, forged]) {
      const res = await send(credential);
      assert.equal(res.status, 401, credential);
      assert.equal(res.body.error.code, 'UNAUTHENTICATED');
    }
    // An admin's own key may not either (turned away before its body is read).
    expectError(await send(server.adminKey), 403, 'PERMISSION_DENIED');

    // What another node sends: claims sealed with the cluster's key, for these bytes.
    const box = new SecretBox(secretsKey);
    const sealFor = (payload: string, exp = Date.now() + 30_000, ten = 'default') =>
      `owc_${Buffer.from(
        box.seal(
          JSON.stringify({
            jti: randomUUID(),
            ten,
            body: createHash('sha256').update(payload).digest('hex'),
            exp,
          }),
          'orchestra.workspace-call.v1',
        ),
      ).toString('base64url')}`;
    const call = JSON.stringify({
      tenant_id: 'default',
      instance_id: instance,
      task_id: null,
      caller: { type: 'api_key', key_id: 'key_node_test', role: 'agent' },
      operation: 'exec',
      args: { command: 'echo sealed-$((20 + 1))' },
    });
    const token = sealFor(call);
    const ran = await send(token, call);
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.match(ran.body.content[0].text, /^exit code 0\nstdout:\nsealed-21/);
    const refusals: [string, string, RegExp][] = [
      [token, call, /used already/],
      [sealFor(call), call.replace('sealed-', 'changed-'), /sealed for another request/],
      [sealFor(call, Date.now() - 1), call, /expired/],
      [sealFor(call, Date.now() + 30_000, 'ws-other'), call, /another tenant/],
    ];
    for (const [credential, payload, why] of refusals) {
      const res = await send(credential, payload);
      assert.equal(res.status, 401, JSON.stringify(res.body));
      assert.match(res.body.error.message, why);
    }
    // The instance ran nothing.
    const execs = await server.call('GET', '/v1/tool-calls?tool=workspace.exec');
    assert.equal(execs.status, 200);
  });
});
