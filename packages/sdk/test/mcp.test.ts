import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { FIXTURES, WAIT_MS } from '../../server/test/mcp-servers.ts';
import { type McpServer, Orchestra } from '../src/index.ts';
import { collect, rejection } from './support.ts';

// `orchestra.mcpServers`, `mcpCatalog` and `mcpViews` against a real server that runs a real
// stdio MCP server (the changing-server fixture: tools, one resource, one prompt).

describe('orchestra.mcpServers, mcpCatalog and mcpViews', () => {
  let server: TestServer;
  let admin: Orchestra;

  before(async () => {
    server = await startTestServer();
    admin = new Orchestra({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    await server.stop();
  });

  /** Polls the server until `done` holds; fails with its last status after WAIT_MS. */
  async function until(ref: string, done: (s: McpServer) => boolean): Promise<McpServer> {
    const deadline = Date.now() + WAIT_MS;
    let last = await admin.mcpServers.get(ref);
    while (!done(last)) {
      if (Date.now() > deadline) assert.fail(`${ref}: still ${JSON.stringify(last.status)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      last = await admin.mcpServers.get(ref);
    }
    return last;
  }
  const ready = (s: McpServer) => s.status.state === 'ready' && s.tools > 0;

  test('create, follow to ready, list, logs, resources, prompts, disable, enable, update, delete', async () => {
    const created = await admin.mcpServers.create({
      name: 'sdk-changing',
      description: 'The changing fixture',
      transport: 'stdio',
      command: process.execPath,
      args: [join(FIXTURES, 'changing-server.ts')],
      env: { FIXTURE_TOKEN: 'not-to-be-shown' },
    });
    assert.match(created.id, /^mcp_/);
    assert.equal(created.name, 'sdk-changing');
    assert.deepEqual(created.env_names, ['FIXTURE_TOKEN']);
    assert.doesNotMatch(JSON.stringify(created), /not-to-be-shown/);
    const twice = await rejection(() =>
      admin.mcpServers.create({ name: 'sdk-changing', transport: 'stdio', command: 'true' }),
    );
    assert.equal(twice.code, 'MCP_SERVER_ALREADY_EXISTS');

    const up = await until('sdk-changing', ready);
    assert.equal(up.status.server_info?.name, 'changing-server');
    assert.equal((await admin.mcpServers.get(created.id)).name, 'sdk-changing');
    const tools = await collect(admin.tools.listAll({ server: 'sdk-changing' }));
    assert.ok(tools.some((t) => t.name === 'sdk-changing__echo'));

    const listed = await collect(admin.mcpServers.listAll({ limit: 1 }));
    assert.deepEqual(
      listed.map((s) => s.name),
      ['sdk-changing'],
    );
    assert.equal((await admin.mcpServers.list()).items.length, 1);

    const logs = await admin.mcpServers.logs('sdk-changing');
    assert.equal(typeof logs.dropped, 'number');
    assert.ok(logs.lines.length > 0, 'what happened to it is logged');
    for (const line of logs.lines) assert.ok(['stderr', 'event'].includes(line.stream));

    assert.deepEqual(
      (await admin.mcpServers.resources('sdk-changing')).map((r) => r.uri),
      ['fixture://greeting'],
    );
    const prompts = await admin.mcpServers.prompts('sdk-changing');
    assert.deepEqual(
      prompts.map((p) => p.name),
      ['greet'],
    );
    assert.deepEqual(
      prompts[0]?.arguments?.map((a) => a.name),
      ['who'],
    );

    const disabled = await admin.mcpServers.disable('sdk-changing');
    assert.equal(disabled.enabled, false);
    await until('sdk-changing', (s) => s.status.state === 'disabled');
    const notRunning = await rejection(() => admin.mcpServers.resources('sdk-changing'));
    assert.equal(notRunning.code, 'MCP_SERVER_NOT_RUNNING');
    const enabled = await admin.mcpServers.enable('sdk-changing');
    assert.equal(enabled.enabled, true);
    await until('sdk-changing', ready);

    const restarted = await admin.mcpServers.restart('sdk-changing');
    assert.equal(restarted.name, 'sdk-changing');
    await until('sdk-changing', ready);

    const updated = await admin.mcpServers.update('sdk-changing', {
      description: 'Changed',
      transport: 'stdio',
      command: process.execPath,
      args: [join(FIXTURES, 'changing-server.ts')],
      tool_timeout_ms: 5000,
    });
    assert.equal(updated.description, 'Changed');
    assert.equal(updated.tool_timeout_ms, 5000);
    assert.deepEqual(updated.env_names, [], 'an update replaces every setting');
    await until('sdk-changing', ready);

    await admin.mcpServers.delete('sdk-changing');
    const gone = await rejection(() => admin.mcpServers.get('sdk-changing'));
    assert.equal(gone.code, 'MCP_SERVER_NOT_FOUND');
    assert.equal(gone.status, 404);
    assert.equal(
      (await rejection(() => admin.mcpServers.logs('sdk-changing'))).code,
      'MCP_SERVER_NOT_FOUND',
    );
  });

  test('the catalog: built-in entries, a tenant entry installed with a name and config, delete', async () => {
    const builtin = await admin.mcpCatalog.list();
    assert.ok(builtin.some((e) => e.id === 'everything' && e.origin === 'builtin'));

    const entry = await admin.mcpCatalog.create({
      id: 'sdk-fixture',
      title: 'The changing fixture',
      server: {
        transport: 'stdio',
        command: process.execPath,
        args: [join(FIXTURES, 'changing-server.ts')],
        env: { GREETING: '{{config.greeting}}' },
      },
      config_schema: {
        type: 'object',
        properties: { greeting: { type: 'string', default: 'hello' } },
      },
    });
    assert.equal(entry.origin, 'tenant');
    assert.ok((await admin.mcpCatalog.list()).some((e) => e.id === 'sdk-fixture'));

    const badConfig = await rejection(() =>
      admin.mcpCatalog.install('sdk-fixture', { config: { greeting: 7 } }),
    );
    assert.equal(badConfig.status, 400);
    const installed = await admin.mcpCatalog.install('sdk-fixture', {
      name: 'sdk-installed',
      config: { greeting: 'hi' },
    });
    assert.equal(installed.name, 'sdk-installed');
    assert.equal(installed.catalog_entry, 'sdk-fixture');
    assert.deepEqual(installed.env_names, ['GREETING']);
    await until('sdk-installed', ready);

    await admin.mcpCatalog.delete('sdk-fixture');
    assert.ok(!(await admin.mcpCatalog.list()).some((e) => e.id === 'sdk-fixture'));
    assert.equal(
      (await admin.mcpServers.get('sdk-installed')).catalog_entry,
      'sdk-fixture',
      'a server installed from a deleted entry stays',
    );
    const missing = await rejection(() => admin.mcpCatalog.install('sdk-fixture'));
    assert.equal(missing.code, 'MCP_CATALOG_ENTRY_NOT_FOUND');
    await admin.mcpServers.delete('sdk-installed');
  });

  test('views: create, get, list, update, delete', async () => {
    const view = await admin.mcpViews.create({
      name: 'sdk-support',
      description: 'For support agents',
      tools: [{ tool: 'sdk-any__echo', name: 'echo', hidden_arguments: { text: 'fixed' } }],
    });
    assert.equal(view.name, 'sdk-support');
    assert.equal(view.tool_exposure, 'all');
    assert.deepEqual(await admin.mcpViews.get('sdk-support'), view);
    assert.deepEqual(await admin.mcpViews.get(view.id), view);
    const twice = await rejection(() => admin.mcpViews.create({ name: 'sdk-support' }));
    assert.equal(twice.code, 'MCP_VIEW_ALREADY_EXISTS');

    await admin.mcpViews.create({ name: 'sdk-other' });
    const names = (await collect(admin.mcpViews.listAll({ limit: 1 }))).map((v) => v.name);
    assert.deepEqual(names.sort(), ['sdk-other', 'sdk-support']);

    const updated = await admin.mcpViews.update('sdk-support', {
      tool_exposure: 'search',
      instructions: 'Search first.',
    });
    assert.equal(updated.tool_exposure, 'search');
    assert.equal(updated.instructions, 'Search first.');
    assert.deepEqual(updated.tools, [], 'an update replaces the whole view');

    await admin.mcpViews.delete('sdk-support');
    await admin.mcpViews.delete('sdk-other');
    const gone = await rejection(() => admin.mcpViews.get('sdk-support'));
    assert.equal(gone.code, 'MCP_VIEW_NOT_FOUND');
    assert.deepEqual((await admin.mcpViews.list()).items, []);
  });
});
