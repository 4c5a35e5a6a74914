import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  Client as ModernClient,
  StreamableHTTPClientTransport as ModernTransport,
} from '@modelcontextprotocol/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResourceUpdatedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import type { GatewayTool } from '../src/mcp-gateway/index.ts';
import { MODULES } from '../src/modules.ts';
import {
  CONFORMANCE_TOOLS,
  type ConformanceBackend,
  conformanceBackend,
} from './fixtures/mcp/conformance-backend.ts';
import { mcpGatewayTestModule } from './fixtures/mcp/gateway-module.ts';
import { childEnv, eventually, expectError, startTestServer, type TestServer } from './helpers.ts';
import { EXPECTED_FAILURES, INITIALIZE, runConformance } from './mcp-servers.ts';

// Issue 20: the MCP gateway. `/mcp` speaks MCP over Streamable HTTP in both protocol
// generations to callers with an API key or a JWT, and serves what its backend allows.

let server: TestServer;
let backend: ConformanceBackend;
const MAX_SESSIONS_PER_TENANT = 20;

const extraTools: GatewayTool[] = [
  {
    name: 'github_create_issue',
    description: 'Create a new issue in a GitHub repository with a title and body',
    inputSchema: {
      type: 'object' as const,
      properties: { repo: { type: 'string' }, title: { type: 'string' } },
    },
  },
  {
    name: 'slack_post_message',
    description: 'Post a message to a Slack channel',
    inputSchema: {
      type: 'object' as const,
      properties: { channel: { type: 'string' }, text: { type: 'string' } },
    },
  },
  {
    name: 'read_file',
    description: 'Read the contents of a file from the workspace',
    inputSchema: { type: 'object' as const, properties: { path: { type: 'string' } } },
  },
];

before(async () => {
  backend = conformanceBackend(extraTools);
  server = await startTestServer({
    // Open event streams check their credential often, so that revocation shows at once.
    env: { ORCHESTRA_STREAM_CREDENTIAL_CHECK_MS: '100' },
    modules: [
      ...MODULES.filter((m) => m.name !== 'mcp-gateway'),
      mcpGatewayTestModule(backend, { maxSessionsPerTenant: MAX_SESSIONS_PER_TENANT }),
    ],
  });
});

after(async () => {
  await server?.stop();
});

const auth = () => ({ authorization: `Bearer ${server.adminKey}` });

async function legacyClient(
  path = '/mcp',
): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const transport = new StreamableHTTPClientTransport(new URL(server.url + path), {
    requestInit: { headers: auth() },
  });
  const client = new Client({ name: 'gateway-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

async function modernClient(path = '/mcp'): Promise<ModernClient> {
  const transport = new ModernTransport(new URL(server.url + path), {
    requestInit: { headers: auth() },
  });
  const client = new ModernClient(
    { name: 'gateway-test-2', version: '1.0.0' },
    { versionNegotiation: { mode: { pin: '2026-07-28' } } },
  );
  await client.connect(transport);
  return client;
}

/** A raw POST of `body` (text) to the gateway. */
async function post(path: string, body: string, headers: Record<string, string> = auth()) {
  const response = await fetch(server.url + path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    body,
  });
  const text = await response.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // an event stream or text
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

test('a 2025-11-25 client (SDK 1.x) lists, calls and searches tools in a session with an API key', async () => {
  const { client, transport } = await legacyClient();
  try {
    assert.ok(transport.sessionId, 'the gateway opens a session');
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes('test_simple_text'));
    assert.ok(names.includes('github_create_issue'));
    assert.ok(names.includes('search_tools'));
    const result = await client.callTool({ name: 'test_simple_text', arguments: {} });
    assert.deepEqual(result.content, [
      { type: 'text', text: 'This is a simple text response for testing.' },
    ]);
    assert.equal(backend.calls.at(-1)?.tenant, 'default', 'the backend gets the principal');

    const found = await client.callTool({
      name: 'search_tools',
      arguments: { query: 'open an issue on github', limit: 2 },
    });
    const structured = found.structuredContent as {
      tools: { name: string; description: string; inputSchema: unknown }[];
    };
    assert.equal(structured.tools[0]?.name, 'github_create_issue');
    assert.ok(structured.tools.length <= 2);
    assert.deepEqual(structured.tools[0]?.inputSchema, extraTools[0]?.inputSchema);
    const progress: number[] = [];
    await client.callTool({ name: 'test_tool_with_progress', arguments: {} }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    assert.deepEqual(progress, [0, 50, 100]);
    const failed = await client.callTool({ name: 'test_error_handling', arguments: {} });
    assert.equal(failed.isError, true);
    await assert.rejects(
      client.callTool({ name: 'no_such_tool', arguments: {} }),
      (err: any) => err.code === -32602,
    );
    const prompt = await client.getPrompt({
      name: 'test_prompt_with_arguments',
      arguments: { arg1: 'a', arg2: 'b' },
    });
    assert.match(JSON.stringify(prompt.messages), /arg1='a'/);
    const resource = await client.readResource({ uri: 'test://static-text' });
    assert.equal(
      (resource.contents[0] as { text: string }).text,
      'This is the content of the static text resource.',
    );

    // DELETE ends the session: its id is unknown from then on.
    const sessionId = transport.sessionId as string;
    await transport.terminateSession();
    const gone = await post(
      '/mcp',
      JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
      {
        ...auth(),
        'mcp-session-id': sessionId,
        'mcp-protocol-version': '2025-11-25',
      },
    );
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, -32001);
  } finally {
    await client.close();
  }
});

test('a session subscribed to a resource is told when it changes, until it unsubscribes', async () => {
  const { client } = await legacyClient();
  try {
    const updated: string[] = [];
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (notification) => {
      updated.push(notification.params.uri);
    });
    await client.subscribeResource({ uri: 'test://watched-resource' });
    assert.equal(backend.changed('test://watched-resource'), 1);
    await eventually('the update notification', () => updated.length === 1);
    assert.deepEqual(updated, ['test://watched-resource']);
    await client.unsubscribeResource({ uri: 'test://watched-resource' });
    assert.equal(backend.changed('test://watched-resource'), 0);
    await assert.rejects(
      client.subscribeResource({ uri: 'test://nothing' }),
      (err: any) => err.code === -32602,
    );
  } finally {
    await client.close();
  }
});

test('a 2026-07-28 client (SDK 2.x) lists and calls tools statelessly', async () => {
  const client = await modernClient();
  try {
    const { tools } = await client.listTools();
    assert.ok(tools.some((t) => t.name === 'test_image_content'));
    const result = await client.callTool({ name: 'test_image_content', arguments: {} });
    assert.equal((result.content as { type: string }[])[0]?.type, 'image');
    const found = await client.callTool({
      name: 'search_tools',
      arguments: { query: 'slack message' },
    });
    assert.equal(
      (found.structuredContent as { tools: { name: string }[] }).tools[0]?.name,
      'slack_post_message',
    );
  } finally {
    await client.close();
  }
});

test('a view with tool_exposure search lists only the meta-tools, and call_tool reaches every tool', async () => {
  for (const path of ['/mcp/search-only', '/mcp?tool_exposure=search']) {
    const { client } = await legacyClient(path);
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['call_tool', 'search_tools'], path);
      const result = await client.callTool({
        name: 'call_tool',
        arguments: { name: 'read_file', arguments: { path: 'README.md' } },
      });
      assert.deepEqual(result.content, [{ type: 'text', text: 'called read_file' }]);
      assert.deepEqual(backend.calls.at(-1)?.args, { path: 'README.md' });
    } finally {
      await client.close();
    }
  }
});

test('without a credential /mcp answers 401 in the unified format with a WWW-Authenticate challenge', async () => {
  const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} });
  const response = await post('/mcp', init, {});
  expectError(response, 401, 'UNAUTHENTICATED');
  assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer/);
  expectError(
    await post('/mcp', init, { authorization: 'Bearer ork_nonsense' }),
    401,
    'INVALID_API_KEY',
  );
});

test('an unknown view is 404 MCP_VIEW_NOT_FOUND', async () => {
  const init = INITIALIZE;
  expectError(await post('/mcp/nope', init), 404, 'MCP_VIEW_NOT_FOUND');
  expectError(await post('/mcp/..%2f..', init), 404, 'MCP_VIEW_NOT_FOUND');
  expectError(await post('/mcp?tool_exposure=some', init), 400, 'VALIDATION_FAILED');
});

test('bad JSON-RPC input gets JSON-RPC errors, never a 500', async () => {
  const cases: [string, number][] = [
    ['{"jsonrpc":', -32700],
    ['', -32700],
    ['[]', -32600],
    ['[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600],
    ['{}', -32600],
    ['"text"', -32600],
    ['{"jsonrpc":"2.0","id":{},"method":"ping"}', -32600],
    ['{"jsonrpc":"1.0","id":1,"method":"ping"}', -32600],
  ];
  for (const [body, code] of cases) {
    const response = await post('/mcp', body);
    assert.equal(response.status, 400, body);
    assert.equal(response.body.jsonrpc, '2.0', body);
    assert.equal(response.body.error.code, code, body);
  }
  // A request other than initialize, with no session and no 2026 envelope.
  const noSession = await post('/mcp', '{"jsonrpc":"2.0","id":1,"method":"tools/list"}');
  assert.equal(noSession.status, 400);
  assert.equal(noSession.body.error.code, -32000);
  // Too large: refused before it is read.
  const huge = await post(
    '/mcp',
    JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'ping',
      params: { x: 'x'.repeat(5 * 1024 * 1024) },
    }),
  );
  expectError(huge, 413, 'PAYLOAD_TOO_LARGE');
});

/** Opens a 2025-11-25 session with bare requests (no event stream is left open); its id. */
async function openRawSession(): Promise<string> {
  const init = await post('/mcp', INITIALIZE);
  assert.equal(init.status, 200, JSON.stringify(init.body));
  const id = init.headers.get('mcp-session-id');
  assert.ok(id);
  return id;
}

const sessionHeaders = (id: string) => ({
  ...auth(),
  'mcp-session-id': id,
  'mcp-protocol-version': '2025-11-25',
});
const PING = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' });

test('at the per-tenant session limit the least recently used idle session makes room, and then is unknown', async () => {
  const first = await openRawSession();
  const ids: string[] = [];
  for (let i = 0; i < MAX_SESSIONS_PER_TENANT; i++) ids.push(await openRawSession());
  const evicted = await post('/mcp', PING, sessionHeaders(first));
  assert.equal(evicted.status, 404, 'the oldest idle session was closed');
  const kept = await post('/mcp', PING, sessionHeaders(ids.at(-1) as string));
  assert.equal(kept.status, 200, JSON.stringify(kept.body));
  // Another credential cannot use the session: it is as unknown as a closed one.
  const other = await server.call('POST', '/v1/api-keys', {
    body: { name: 'mcp-other', role: 'viewer' },
  });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  const stranger = await post('/mcp', PING, {
    ...sessionHeaders(ids.at(-1) as string),
    authorization: `Bearer ${other.body.secret}`,
  });
  assert.equal(stranger.status, 404);
  for (const id of ids) {
    await fetch(`${server.url}/mcp`, { method: 'DELETE', headers: sessionHeaders(id) });
  }
});

test('a revoked key ends its open event stream, and its session answers 401', async () => {
  const created = await server.call('POST', '/v1/api-keys', {
    body: { name: 'mcp-revoked', role: 'viewer' },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const key = created.body.secret as string;
  const headers = { authorization: `Bearer ${key}` };
  const init = await post('/mcp', INITIALIZE, headers);
  const id = init.headers.get('mcp-session-id') as string;
  const stream = await fetch(`${server.url}/mcp`, {
    headers: {
      ...headers,
      accept: 'text/event-stream',
      'mcp-session-id': id,
      'mcp-protocol-version': '2025-11-25',
    },
    signal: AbortSignal.timeout(60_000),
  });
  assert.equal(stream.status, 200);
  const revoked = await server.call('DELETE', `/v1/api-keys/${created.body.id}`);
  assert.ok(revoked.status < 300, JSON.stringify(revoked.body));
  // The stream ends (or breaks off) once the check sees the revocation; the deadline is a hang.
  await stream.text().catch(() => '');
  expectError(
    await post('/mcp', PING, { ...headers, 'mcp-session-id': id }),
    401,
    'API_KEY_REVOKED',
  );
});

test('the MCP conformance suite (server scenarios) passes through /mcp, but for the expected failures', async (t) => {
  const run = await runConformance({
    serverUrl: server.url,
    apiKey: server.adminKey,
    view: 'conformance',
    expectedFailures: EXPECTED_FAILURES,
  });
  t.diagnostic(run.totals);
  assert.equal(run.code, 0, `conformance failed:\n${run.output}`);
});

test('the conformance catalogue also runs as a standalone stdio MCP server (SDK 1.x)', async () => {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [fileURLToPath(new URL('./fixtures/mcp/conformance-server.ts', import.meta.url))],
    env: childEnv(),
    stderr: 'ignore',
  });
  const client = new Client({ name: 'stdio-test', version: '1.0.0' });
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(
      tools.map((t) => t.name),
      CONFORMANCE_TOOLS.map((t) => t.name),
    );
    const result = await client.callTool({ name: 'test_simple_text', arguments: {} });
    assert.deepEqual(result.content, [
      { type: 'text', text: 'This is a simple text response for testing.' },
    ]);
    await assert.rejects(
      client.callTool({ name: 'nope', arguments: {} }),
      (err: any) => err.code === -32602,
    );
  } finally {
    await client.close();
  }
});
