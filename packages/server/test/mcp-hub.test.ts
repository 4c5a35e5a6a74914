import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { expectError, startTestServer, type TestServer, tempDir } from './helpers.ts';
import { FIXTURES, spawnEverythingHttp, WAIT_MS } from './mcp-servers.ts';

/** Polls `read` until `done` holds for what it returns; fails with the last value after WAIT_MS. */
async function until<T>(
  what: string,
  read: () => Promise<T>,
  done: (value: T) => boolean,
): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  let last: T = await read();
  while (!done(last)) {
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    last = await read();
  }
  return last;
}

const allowAll = (name: string, tools: string[], extra: Record<string, unknown> = {}) => ({
  name,
  effect: 'allow',
  tools,
  ...extra,
});

describe('MCP hub', () => {
  let server: TestServer;
  const root = tempDir('orchestra-mcp-fs-');
  before(async () => {
    writeFileSync(join(root.path, 'notes.txt'), 'hello from the confined directory\n');
    server = await startTestServer({ env: { ORCHESTRA_MCP_RECONCILE_MS: '500' } });
  });
  after(async () => {
    await server.stop();
    root.remove();
  });

  const status = (name: string) => server.call('GET', `/v1/mcp/servers/${name}`);
  const ready = (name: string) =>
    until(
      `${name} ready`,
      async () => (await status(name)).body,
      (s) => s.status?.state === 'ready' && s.tools > 0,
    );
  const invoke = (tool: string, args: Record<string, unknown>) =>
    server.call('POST', `/v1/tools/${encodeURIComponent(tool)}/invoke`, {
      body: { arguments: args },
    });

  test('installs server-everything from the catalog (stdio); its tools join the registry and are callable', async () => {
    const catalog = await server.call('GET', '/v1/mcp/catalog');
    assert.deepEqual(catalog.body.items.map((e: { id: string }) => e.id).sort(), [
      'everything',
      'filesystem',
      'memory',
      'sequential-thinking',
    ]);
    const installed = await server.call('POST', '/v1/mcp/catalog/everything/install', { body: {} });
    assert.equal(installed.status, 201, JSON.stringify(installed.body));
    assert.equal(installed.body.transport, 'stdio');
    assert.equal(installed.body.catalog_entry, 'everything');
    const info = await ready('everything');
    assert.equal(info.status.protocol_version, '2025-11-25');
    assert.equal(typeof info.status.sandboxed, 'boolean');
    const tools = await server.call('GET', '/v1/tools?server=everything&limit=200');
    const names = tools.body.items.map((t: { name: string }) => t.name);
    assert.ok(names.includes('everything__echo'), names.join(','));
    const echo = tools.body.items.find((t: { name: string }) => t.name === 'everything__echo');
    assert.equal(echo.state, 'active');
    assert.deepEqual(echo.source, { type: 'mcp', server: 'everything', tool: 'echo' });
    assert.match(echo.pinned_hash, /^[0-9a-f]{64}$/);

    await server.call('POST', '/v1/tool-policies', {
      body: allowAll('everything', ['everything__*']),
    });
    const called = await invoke('everything__echo', { message: 'hi there' });
    assert.equal(called.status, 200, JSON.stringify(called.body));
    assert.equal(called.body.result.is_error, false);
    assert.match(called.body.result.content[0].text, /hi there/);
    assert.equal(called.body.call.source, 'mcp');
    assert.equal(called.body.call.upstream, 'everything');

    const resources = await server.call('GET', '/v1/mcp/servers/everything/resources');
    assert.ok(resources.body.items.length > 0);
    const prompts = await server.call('GET', '/v1/mcp/servers/everything/prompts');
    assert.ok(prompts.body.items.length > 0);
    const logs = await server.call('GET', '/v1/mcp/servers/everything/logs');
    assert.ok(
      logs.body.lines.some((l: { text: string }) => l.text.startsWith('ready')),
      JSON.stringify(logs.body),
    );
  });

  test('server-everything over Streamable HTTP', async () => {
    const http = await spawnEverythingHttp('streamableHttp');
    try {
      const created = await server.call('POST', '/v1/mcp/servers', {
        body: {
          name: 'everything-http',
          transport: 'streamable_http',
          url: `http://127.0.0.1:${http.port}/mcp`,
        },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await ready('everything-http');
      await server.call('POST', '/v1/tool-policies', {
        body: allowAll('everything-http', ['everything-http__*']),
      });
      const sum = await invoke('everything-http__get-sum', { a: 2, b: 3 });
      assert.equal(sum.status, 200, JSON.stringify(sum.body));
      assert.match(sum.body.result.content[0].text, /5/);

      // Through the gateway, the upstream's progress on a call reaches the MCP client.
      const client = new Client({ name: 'hub-test', version: '1.0.0' });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${server.adminKey}` } },
        }),
      );
      try {
        const progress: { progress: number; total?: number }[] = [];
        const long = await client.callTool(
          {
            name: 'everything-http__trigger-long-running-operation',
            arguments: { duration: 0.3, steps: 3 },
          },
          undefined,
          { onprogress: (p) => progress.push({ progress: p.progress, total: p.total }) },
        );
        assert.equal(long.isError ?? false, false, JSON.stringify(long));
        assert.deepEqual(progress, [
          { progress: 1, total: 3 },
          { progress: 2, total: 3 },
          { progress: 3, total: 3 },
        ]);
      } finally {
        await client.close();
      }
    } finally {
      await http.kill();
    }
    // The upstream is gone: calls fail as tool errors, recorded, not as 5xx.
    const gone = await invoke('everything-http__get-sum', { a: 1, b: 1 });
    assert.equal(gone.status, 200);
    assert.equal(gone.body.call.status, 'failed');
    assert.equal(gone.body.result.is_error, true);
    assert.equal((await server.call('DELETE', '/v1/mcp/servers/everything-http')).status, 204);
    expectError(
      await server.call('GET', '/v1/tools/everything-http__get-sum'),
      404,
      'TOOL_NOT_FOUND',
    );
  });

  test('server-filesystem confined to a directory; the argument policy refuses /etc/passwd before it reaches the server', async () => {
    const installed = await server.call('POST', '/v1/mcp/catalog/filesystem/install', {
      body: { name: 'fs', config: { root: root.path } },
    });
    assert.equal(installed.status, 201, JSON.stringify(installed.body));
    await ready('fs');
    const prefix = root.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await server.call('POST', '/v1/tool-policies', {
      body: allowAll('fs-in-root', ['fs__*'], {
        arguments_schema: {
          type: 'object',
          properties: { path: { type: 'string', maxLength: 4096, pattern: `^${prefix}/` } },
        },
      }),
    });
    const read = await invoke('fs__read_text_file', { path: join(root.path, 'notes.txt') });
    assert.equal(read.status, 200, JSON.stringify(read.body));
    assert.match(read.body.result.content[0].text, /hello from the confined directory/);
    const refused = expectError(
      await invoke('fs__read_text_file', { path: '/etc/passwd' }),
      403,
      'TOOL_CALL_DENIED',
    );
    assert.match(refused.message, /fs-in-root/);
    const record = await server.call('GET', `/v1/tool-calls/${refused.details.call_id}`);
    assert.equal(record.body.status, 'denied');
    assert.equal(record.body.duration_ms, 0, 'never sent to the server');
  });

  test('pinning: a server that changes a tool mid-session has the change held back until approved', async () => {
    const created = await server.call('POST', '/v1/mcp/servers', {
      body: {
        name: 'changing',
        transport: 'stdio',
        command: process.execPath,
        args: [join(FIXTURES, 'changing-server.ts')],
      },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await ready('changing');
    await server.call('POST', '/v1/tool-policies', { body: allowAll('changing', ['changing__*']) });
    const before = (await server.call('GET', '/v1/tools/changing__structured')).body;
    assert.equal(before.state, 'active');
    assert.equal(
      (await invoke('changing__structured', { n: 2 })).body.result.structured_content.doubled,
      4,
    );

    // The rug pull: the description now instructs the model.
    assert.equal((await invoke('changing__rug_pull', {})).status, 200);
    const held = await until(
      'structured held',
      async () => (await server.call('GET', '/v1/tools/changing__structured')).body,
      (t) => t.state === 'held',
    );
    assert.equal(held.pinned_hash, before.pinned_hash);
    assert.ok(
      held.pending.diff.some((line: string) => line.startsWith('description:')),
      JSON.stringify(held.pending),
    );
    assert.ok(held.pending.flags.length > 0, 'the new description is flagged');
    assert.equal(
      held.description,
      before.description,
      'the approved definition is what the registry shows',
    );
    const refused = expectError(
      await invoke('changing__structured', { n: 2 }),
      409,
      'TOOL_NOT_AVAILABLE',
    );
    assert.equal(refused.details.state, 'held');

    // Tools added later are held too; removed ones become unavailable.
    assert.equal((await invoke('changing__change_tools', { name: 'late_tool' })).status, 200);
    const late = await until(
      'late_tool listed',
      async () => await server.call('GET', '/v1/tools/changing__late_tool'),
      (r) => r.status === 200,
    );
    assert.equal(late.body.state, 'held');
    assert.equal((await server.call('GET', '/v1/tools/changing__echo')).body.state, 'unavailable');

    expectError(
      await server.call('POST', '/v1/tools/changing__structured/approve', {
        body: { hash: 'stale' },
      }),
      409,
      'TOOL_DEFINITION_CHANGED',
    );
    const approved = await server.call('POST', '/v1/tools/changing__structured/approve', {
      body: { hash: held.pending.hash },
    });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    assert.equal(approved.body.state, 'active');
    assert.equal(approved.body.pinned_hash, held.pending.hash);
    assert.equal(approved.body.version, before.version + 1);
    assert.equal(
      (await invoke('changing__structured', { n: 5 })).body.result.structured_content.doubled,
      10,
    );
  });

  test('a stdio server that crashes is restarted', async () => {
    await server.call('POST', '/v1/mcp/servers', {
      body: {
        name: 'crashing',
        transport: 'stdio',
        command: process.execPath,
        args: [join(FIXTURES, 'crashing-server.ts')],
      },
    });
    await ready('crashing');
    await server.call('POST', '/v1/tool-policies', { body: allowAll('crashing', ['crashing__*']) });
    const crashed = await invoke('crashing__crash', {});
    assert.equal(crashed.status, 200);
    assert.equal(crashed.body.result.is_error, true);
    const back = await until(
      'crashing restarted',
      async () => (await status('crashing')).body,
      (s) => s.status.state === 'ready' && s.status.restarts >= 1,
    );
    assert.ok(back.status.restarts >= 1);
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    assert.match(metrics, /orchestra_mcp_server_restarts_total\{server="crashing"\} [1-9]/);
    assert.match(metrics, /orchestra_mcp_server_ready\{server="crashing"\} 1/);
    const pid = await invoke('crashing__pid', {});
    assert.equal(pid.body.call.status, 'succeeded', JSON.stringify(pid.body));
  });

  test('faults through the hub: a hanging tool times out, a flood is bounded, and the server keeps serving', async () => {
    for (const [name, file] of [
      ['hanging', 'hanging-server.ts'],
      ['flood', 'flood-server.ts'],
    ] as const) {
      const created = await server.call('POST', '/v1/mcp/servers', {
        body: {
          name,
          transport: 'stdio',
          command: process.execPath,
          args: [join(FIXTURES, file)],
          tool_timeout_ms: 500,
        },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await ready(name);
      await server.call('POST', '/v1/tool-policies', { body: allowAll(name, [`${name}__*`]) });
    }
    const hung = await invoke('hanging__hang', {});
    assert.equal(hung.status, 200);
    assert.equal(hung.body.call.status, 'failed');
    assert.equal(hung.body.call.error.code, 'TOOL_TIMEOUT');
    assert.equal((await invoke('hanging__quick', {})).body.call.status, 'succeeded');
    // A flood on stderr is cut to the bounded log; the server answers on.
    const flooded = await invoke('flood__flood_stderr', { megabytes: 2 });
    assert.equal(flooded.status, 200, JSON.stringify(flooded.body));
    const logs = await server.call('GET', '/v1/mcp/servers/flood/logs');
    assert.ok(JSON.stringify(logs.body).length < 1024 * 1024, 'the log stays bounded');
    // A stdout line beyond any sane message is dropped unread; the answer after it arrives.
    const big = await invoke('flood__flood_stdout', { megabytes: 8 });
    assert.equal(big.status, 200);
    assert.equal(big.body.call.status, 'succeeded', JSON.stringify(big.body.call));
    assert.ok(big.body.call.result_bytes < 64 * 1024);
  });

  test('disabling a server stops it and its tools; enabling brings them back', async () => {
    const disabled = await server.call('POST', '/v1/mcp/servers/crashing/disable');
    assert.equal(disabled.status, 200);
    assert.equal(disabled.body.enabled, false);
    assert.equal((await server.call('GET', '/v1/tools/crashing__pid')).body.state, 'disabled');
    expectError(await invoke('crashing__pid', {}), 409, 'TOOL_NOT_AVAILABLE');
    expectError(
      await server.call('GET', '/v1/mcp/servers/crashing/logs'),
      409,
      'MCP_SERVER_NOT_RUNNING',
    );
    assert.equal((await server.call('POST', '/v1/mcp/servers/crashing/enable')).status, 200);
    await ready('crashing');
    assert.equal((await server.call('GET', '/v1/tools/crashing__pid')).body.state, 'active');
  });

  test('bad input gets a 4xx; secrets in env are never shown', async () => {
    const bad = [
      { name: 'x', transport: 'stdio' },
      { name: 'double__under', transport: 'stdio', command: 'true' },
      { name: 'x', transport: 'streamable_http' },
      { name: 'x', transport: 'streamable_http', url: 'http://127.0.0.1:9/mcp', command: 'node' },
      { name: 'x', transport: 'carrier-pigeon', url: 'http://127.0.0.1:9' },
    ];
    for (const body of bad) {
      expectError(await server.call('POST', '/v1/mcp/servers', { body }), 400, 'VALIDATION_FAILED');
    }
    expectError(
      await server.call('POST', '/v1/mcp/servers', {
        body: { name: 'fs', transport: 'stdio', command: 'true' },
      }),
      409,
      'MCP_SERVER_ALREADY_EXISTS',
    );
    expectError(
      await server.call('POST', '/v1/mcp/catalog/filesystem/install', {
        body: { name: 'fs2', config: {} },
      }),
      400,
      'VALIDATION_FAILED',
    );
    expectError(
      await server.call('POST', '/v1/mcp/catalog/nope/install', { body: {} }),
      404,
      'MCP_CATALOG_ENTRY_NOT_FOUND',
    );
    expectError(await server.call('GET', '/v1/mcp/servers/nope'), 404, 'MCP_SERVER_NOT_FOUND');

    const secretValue = 'tok-7f3a9c-not-for-anyone';
    const created = await server.call('POST', '/v1/mcp/servers', {
      body: {
        name: 'with-env',
        transport: 'stdio',
        command: process.execPath,
        args: [join(FIXTURES, 'hanging-server.ts')],
        env: { API_TOKEN: secretValue },
        enabled: false,
      },
    });
    assert.equal(created.status, 201);
    assert.deepEqual(created.body.env_names, ['API_TOKEN']);
    const listed = await server.call('GET', '/v1/mcp/servers?limit=100');
    assert.ok(!JSON.stringify(listed.body).includes(secretValue));
    assert.ok(!JSON.stringify(created.body).includes(secretValue));
  });

  test('tenant isolation: another tenant sees none of the servers or their tools', async () => {
    const tenant = await server.call('POST', '/v1/tenants', { body: { id: 'mcp-other' } });
    const other = tenant.body.admin_key.secret as string;
    assert.deepEqual((await server.call('GET', '/v1/mcp/servers', { key: other })).body.items, []);
    expectError(
      await server.call('GET', '/v1/mcp/servers/everything', { key: other }),
      404,
      'MCP_SERVER_NOT_FOUND',
    );
    expectError(
      await server.call('GET', '/v1/tools/everything__echo', { key: other }),
      404,
      'TOOL_NOT_FOUND',
    );
    expectError(
      await server.call('POST', '/v1/mcp/servers/everything/disable', { key: other }),
      404,
      'MCP_SERVER_NOT_FOUND',
    );
    // The same server name is free in the other tenant.
    const own = await server.call('POST', '/v1/mcp/servers', {
      key: other,
      body: { name: 'everything', transport: 'stdio', command: 'true', enabled: false },
    });
    assert.equal(own.status, 201);
  });
});
