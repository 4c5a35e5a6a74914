import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { expectError, startTestServer, type TestServer } from './helpers.ts';
import { FIXTURES, runConformance, WAIT_MS } from './mcp-servers.ts';

/**
 * Orchestra as an MCP server, end to end: real MCP servers registered through the hub, their
 * tools served at /mcp and /mcp/{view} under the policy, audit and approvals of /invoke.
 */
describe('MCP gateway over the hub', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { ORCHESTRA_MCP_RECONCILE_MS: '500' } });
    for (const [name, file] of [
      ['fix', 'changing-server.ts'],
      ['conf', 'conformance-server.ts'],
    ]) {
      const created = await server.call('POST', '/v1/mcp/servers', {
        body: {
          name,
          transport: 'stdio',
          command: process.execPath,
          args: [join(FIXTURES, file as string)],
        },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
    for (const name of ['fix', 'conf']) {
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const s = (await server.call('GET', `/v1/mcp/servers/${name}`)).body;
        if (s.status.state === 'ready' && s.tools > 0) break;
        if (Date.now() > deadline) assert.fail(`${name}: ${JSON.stringify(s.status)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await server.call('POST', '/v1/tool-policies', {
      body: { name: 'mcp', effect: 'allow', tools: ['fix__*', 'conf__*'] },
    });
  });
  after(() => server.stop());

  async function connect(path: string, key = server.adminKey) {
    const client = new Client({ name: 'e2e', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${server.url}${path}`), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    return client;
  }

  test('/mcp serves every tool the caller may call, and a call is audited like /invoke', async () => {
    const client = await connect('/mcp');
    try {
      const { tools } = await client.listTools();
      const names = tools.map((t) => t.name);
      assert.ok(names.includes('fix__echo'), names.join(','));
      assert.ok(names.includes('conf__test_simple_text'));
      const result = await client.callTool({
        name: 'fix__echo',
        arguments: { text: 'through the gateway' },
      });
      assert.deepEqual(result.content, [{ type: 'text', text: 'through the gateway' }]);
      const calls = await server.call('GET', '/v1/tool-calls?tool=fix__echo');
      assert.equal(calls.body.items[0].status, 'succeeded');
      assert.deepEqual(calls.body.items[0].arguments, { text: 'through the gateway' });
      const prompts = await client.listPrompts();
      assert.ok(prompts.prompts.some((p) => p.name === 'fix__greet'));
      const resource = await client.readResource({ uri: 'fixture://greeting' });
      assert.equal((resource.contents[0] as { text: string }).text, 'hello from the fixture');
    } finally {
      await client.close();
    }
  });

  test('the policy decides what the gateway lists and runs; viewers list but do not call', async () => {
    const deny = await server.call('POST', '/v1/tool-policies', {
      body: { name: 'no-fail', effect: 'deny', tools: ['fix__fail'] },
    });
    assert.equal(deny.status, 201);
    const viewer = await server.call('POST', '/v1/api-keys', {
      body: { name: 'v', role: 'viewer' },
    });
    const client = await connect('/mcp', viewer.body.secret);
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(!names.includes('fix__fail'));
      assert.ok(names.includes('fix__echo'));
      const refused = await client.callTool({ name: 'fix__echo', arguments: { text: 'x' } });
      assert.equal(refused.isError, true);
      assert.match(JSON.stringify(refused.content), /PERMISSION_DENIED/);
    } finally {
      await client.close();
    }
    // A tool the policy denies is not listed; called by its name anyway, the call is refused
    // and recorded like any denied call.
    const admin = await connect('/mcp');
    try {
      assert.ok(!(await admin.listTools()).tools.some((t) => t.name === 'fix__fail'));
      const denied = await admin.callTool({ name: 'fix__fail', arguments: {} });
      assert.equal(denied.isError, true);
      assert.match(JSON.stringify(denied.content), /TOOL_CALL_DENIED/);
      const record = await server.call('GET', '/v1/tool-calls?tool=fix__fail&status=denied');
      assert.equal(record.body.items.length, 1);
      await assert.rejects(admin.callTool({ name: 'nope__nothing', arguments: {} }), /-32602/);
    } finally {
      await admin.close();
      await server.call('DELETE', '/v1/tool-policies/no-fail');
    }
  });

  test('a view renames tools, replaces descriptions and hides arguments; search_tools finds them', async () => {
    const view = await server.call('POST', '/v1/mcp/views', {
      body: {
        name: 'support',
        tools: [
          {
            tool: 'fix__echo',
            name: 'say',
            description: 'Says the greeting of the support desk',
            hidden_arguments: { text: 'Hello from support' },
          },
          { tool: 'fix__structured', name: 'double' },
        ],
      },
    });
    assert.equal(view.status, 201, JSON.stringify(view.body));
    const client = await connect('/mcp/support');
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['double', 'say', 'search_tools']);
      const say = tools.find((t) => t.name === 'say');
      assert.equal(say?.description, 'Says the greeting of the support desk');
      assert.deepEqual(Object.keys((say?.inputSchema.properties ?? {}) as object), []);
      const said = await client.callTool({ name: 'say', arguments: {} });
      assert.deepEqual(said.content, [{ type: 'text', text: 'Hello from support' }]);
      const doubled = await client.callTool({ name: 'double', arguments: { n: 21 } });
      assert.deepEqual(doubled.structuredContent, { doubled: 42 });
      await assert.rejects(
        client.callTool({ name: 'fix__echo', arguments: { text: 'x' } }),
        /Unknown tool|-32602/,
      );
    } finally {
      await client.close();
    }
    const search = await connect('/mcp?tool_exposure=search');
    try {
      const listed = (await search.listTools()).tools.map((t) => t.name).sort();
      assert.deepEqual(listed, ['call_tool', 'search_tools']);
      const found = await search.callTool({
        name: 'search_tools',
        arguments: { query: 'doubles a number structured' },
      });
      assert.match(JSON.stringify(found.content), /fix__structured/);
    } finally {
      await search.close();
    }
    expectError(
      await server.call('POST', '/v1/mcp/views', { body: { name: 'support' } }),
      409,
      'MCP_VIEW_ALREADY_EXISTS',
    );
    expectError(
      await server.call('POST', '/v1/mcp/views', {
        body: { name: 'twice', tools: [{ tool: 'a' }, { tool: 'b', name: 'a' }] },
      }),
      400,
      'VALIDATION_FAILED',
    );
    const unknown = await fetch(`${server.url}/mcp/nope`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${server.adminKey}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    assert.equal(unknown.status, 404);
  });

  test('the MCP conformance suite passes against a real upstream through the hub, but for the listed failures', async (t) => {
    const view = await server.call('POST', '/v1/mcp/views', {
      body: { name: 'conformance', servers: ['conf'] },
    });
    assert.equal(view.status, 201, JSON.stringify(view.body));
    const run = await runConformance({
      serverUrl: server.url,
      apiKey: server.adminKey,
      view: 'conformance',
      expectedFailures: HUB_EXPECTED_FAILURES,
    });
    t.diagnostic(run.totals);
    assert.equal(run.code, 0, `conformance failed:\n${run.output}`);
  });

  test('a client is told when its tool list changes: an upstream rug pull holds the tool back', async () => {
    const client = await connect('/mcp');
    try {
      let told = 0;
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
        told += 1;
      });
      assert.ok((await client.listTools()).tools.some((t) => t.name === 'fix__structured'));
      // The upstream rewrites the description of `structured` to instruct the model; the
      // hub holds the changed tool back, and the gateway says the list changed.
      await client.callTool({ name: 'fix__rug_pull', arguments: {} });
      const deadline = Date.now() + WAIT_MS;
      while (told === 0) {
        if (Date.now() > deadline) assert.fail('no notifications/tools/list_changed');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(!names.includes('fix__structured'), names.join(','));
      assert.ok(names.includes('fix__echo'));
      const held = await server.call('GET', '/v1/tools/fix__structured');
      assert.equal(held.body.state, 'held');
    } finally {
      await client.close();
    }
  });
});

const HUB_EXPECTED_FAILURES = new URL(
  '../../../conformance/mcp-expected-failures-hub.yml',
  import.meta.url,
).pathname;
