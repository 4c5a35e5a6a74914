import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type McpServer, Orchestra } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, startCliServer, tableRow } from './helpers.ts';
import { FIXTURES, WAIT_MS } from './mcp-servers.ts';

// `orchestra mcp-servers`, `mcp-catalog` and `mcp-views` as a user runs them: a spawned
// `node bin/orchestra.js` against a spawned `orchestra start` that runs the changing-server
// fixture over stdio. Each test uses servers and views of its own names.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('mcp');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(async () => {
  await fixture.stop();
});

const cli = (args: string[], options?: { input?: string }) => fixture.cli(args, options);
const CHANGING = join(FIXTURES, 'changing-server.ts');

const writeJson = (name: string, content: unknown) => fixture.writeJson(name, content);
const row = tableRow;

/** Polls (through the SDK, cheaper than spawning) until the server is ready with tools. */
async function ready(name: string): Promise<McpServer> {
  const deadline = Date.now() + WAIT_MS;
  let last = await api.mcpServers.get(name);
  while (!(last.status.state === 'ready' && last.tools > 0)) {
    if (Date.now() > deadline) assert.fail(`${name}: still ${JSON.stringify(last.status)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    last = await api.mcpServers.get(name);
  }
  return last;
}

describe('orchestra mcp-servers', () => {
  test('add with flags, ls, get (env names, never values), logs, resources, prompts, disable, enable, update from a file, rm', async () => {
    await api.secrets.put('CLI_MCP_TOKEN', 'value-from-a-secret');
    const added = await cli([
      'mcp-servers',
      'add',
      'cli-changing',
      '--transport',
      'stdio',
      '--command',
      process.execPath,
      '--arg',
      CHANGING,
      '--env',
      'FIXTURE_TOKEN=very-secret-value',
      '--env',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
      'OTHER=${secret:CLI_MCP_TOKEN}',
      '--description',
      'The fixture',
    ]);
    expectExit(added, 0);
    assert.match(added.stdout, /^Added MCP server cli-changing \(mcp_\w+\); it is \w+\./);
    await ready('cli-changing');

    const table = await cli(['mcp-servers', 'ls']);
    expectExit(table, 0);
    assert.match(table.stdout, /^NAME\s+TRANSPORT\s+STATE\s+TOOLS\s+NODE\s+UPDATED\n/);
    assert.match(
      row(table.stdout, 'cli-changing'),
      /^cli-changing\s+stdio\s+ready\s+[1-9]\d*\s+\S+\s+\d{4}-/,
    );

    const shown = await cli(['mcp-servers', 'get', 'cli-changing']);
    expectExit(shown, 0);
    assert.match(shown.stdout, /^Env:\s+FIXTURE_TOKEN, OTHER$/m);
    assert.match(shown.stdout, /^State:\s+ready$/m);
    assert.match(shown.stdout, /^Server:\s+changing-server 1\.0\.0$/m);
    const json = await cli(['mcp-servers', 'get', 'cli-changing', '--json']);
    for (const output of [added.stdout, shown.stdout, json.stdout]) {
      assert.doesNotMatch(output, /very-secret-value|value-from-a-secret/);
    }

    const logs = await cli(['mcp-servers', 'logs', 'cli-changing']);
    expectExit(logs, 0);
    assert.match(logs.stdout, /^\d{4}-\S+ (event|stderr) /m);
    const resources = await cli(['mcp-servers', 'resources', 'cli-changing']);
    expectExit(resources, 0);
    assert.match(row(resources.stdout, 'fixture://greeting'), /text\/plain/);
    const prompts = jsonOf(await cli(['mcp-servers', 'prompts', 'cli-changing', '--json']));
    assert.deepEqual(
      prompts.map((p: { name: string }) => p.name),
      ['greet'],
    );

    const disabled = await cli(['mcp-servers', 'disable', 'cli-changing']);
    expectExit(disabled, 0);
    assert.match(disabled.stdout, /^Disabled MCP server cli-changing; it is /);
    assert.equal((await api.mcpServers.get('cli-changing')).enabled, false);
    const notRunning = await cli(['mcp-servers', 'logs', 'cli-changing']);
    expectExit(notRunning, 1);
    assert.match(notRunning.stderr, /MCP_SERVER_NOT_RUNNING|disabled/);
    expectExit(await cli(['mcp-servers', 'enable', 'cli-changing']), 0);
    await ready('cli-changing');

    // `get --json` sent back: what it names but cannot show (env values) must be given.
    const document = JSON.parse(json.stdout);
    const refused = await cli([
      'mcp-servers',
      'update',
      'cli-changing',
      '--file',
      writeJson('changing.json', document),
    ]);
    expectExit(refused, 2);
    assert.match(refused.stderr, /names env FIXTURE_TOKEN, OTHER but holds no values/);
    const { env_names: _names, ...rest } = document;
    const updated = jsonOf(
      await cli([
        'mcp-servers',
        'update',
        'cli-changing',
        '--json',
        '--file',
        writeJson('changing.json', { ...rest, description: 'Changed', env: { ONLY: 'x' } }),
      ]),
    );
    assert.equal(updated.description, 'Changed');
    assert.deepEqual(updated.env_names, ['ONLY']);

    const both = await cli([
      'mcp-servers',
      'update',
      'cli-changing',
      '--file',
      'x.json',
      '--cwd',
      '/tmp',
    ]);
    expectExit(both, 2);
    assert.match(both.stderr, /--file or the settings as flags, not both \(got --cwd\)/);
    const http = await cli(['mcp-servers', 'add', 'cli-http', '--transport', 'sse']);
    expectExit(http, 2);
    assert.match(http.stderr, /needs --endpoint URL/);

    const removed = await cli(['mcp-servers', 'rm', 'cli-changing']);
    expectExit(removed, 0);
    const gone = await cli(['mcp-servers', 'get', 'cli-changing']);
    expectExit(gone, 1);
    assert.match(gone.stderr, /MCP_SERVER_NOT_FOUND|does not exist/);
  });

  test('add --wait waits for ready (exit 0) or reports a server that cannot start (exit 1)', async () => {
    const ok = await cli([
      'mcp-servers',
      'add',
      'cli-waited',
      '--transport',
      'stdio',
      '--command',
      process.execPath,
      '--arg',
      CHANGING,
      '--wait',
      '2m',
      '--json',
    ]);
    expectExit(ok, 0);
    const server = jsonOf(ok) as McpServer;
    assert.equal(server.status.state, 'ready');
    assert.ok(server.tools > 0);

    // A command that does not exist never gets ready: exit 1 with the state and the reason,
    // whether the hub is still retrying or has given up when the wait ends.
    const broken = await cli([
      'mcp-servers',
      'add',
      'cli-broken',
      '--transport',
      'stdio',
      '--command',
      '/nonexistent/mcp-server',
      '--wait',
      '1s',
    ]);
    expectExit(broken, 1);
    assert.match(
      broken.stdout,
      /^Added MCP server cli-broken \(mcp_\w+\)\.\nMCP server cli-broken (failed|is still connecting)/,
    );
    const badWait = await cli([
      'mcp-servers',
      'add',
      'cli-x',
      '--transport',
      'stdio',
      '--command',
      'x',
      '--wait',
      '5x',
    ]);
    expectExit(badWait, 2);
    assert.match(badWait.stderr, /--wait must be a number followed by/);
    await api.mcpServers.delete('cli-waited');
    await api.mcpServers.delete('cli-broken');
  });
});

describe('orchestra mcp-catalog', () => {
  test('ls, create an entry from a file, install it with --name and --config, rm', async () => {
    const table = await cli(['mcp-catalog', 'ls']);
    expectExit(table, 0);
    assert.match(table.stdout, /^ID\s+TRANSPORT\s+ORIGIN\s+TITLE\n/);
    assert.match(row(table.stdout, 'everything'), /^everything\s+stdio\s+builtin\s/);

    const entry = {
      id: 'cli-fixture',
      title: 'The changing fixture',
      server: {
        transport: 'stdio',
        command: process.execPath,
        args: [CHANGING],
        env: { GREETING: '{{config.greeting}}' },
      },
      config_schema: { type: 'object', properties: { greeting: { type: 'string' } } },
    };
    expectExit(await cli(['mcp-catalog', 'create', '--file', writeJson('entry.json', entry)]), 0);
    const badJson = await cli(['mcp-catalog', 'install', 'cli-fixture', '--config', '{nope']);
    expectExit(badJson, 2);
    assert.match(badJson.stderr, /--config is not valid JSON/);

    const installed = await cli([
      'mcp-catalog',
      'install',
      'cli-fixture',
      '--name',
      'cli-installed',
      '--config',
      '{"greeting": "hi"}',
      '--wait',
    ]);
    expectExit(installed, 0);
    assert.match(
      installed.stdout,
      /^Installed cli-fixture as MCP server cli-installed \(mcp_\w+\)\.\nMCP server cli-installed is ready with \d+ tools\.\n$/,
    );
    const server = await ready('cli-installed');
    assert.equal(server.catalog_entry, 'cli-fixture');

    expectExit(await cli(['mcp-catalog', 'rm', 'cli-fixture']), 0);
    assert.ok(!(await api.mcpCatalog.list()).some((e) => e.id === 'cli-fixture'));
    await api.mcpServers.delete('cli-installed');
  });
});

describe('orchestra mcp-views', () => {
  test('create with flags, ls, get, update from a file, rm', async () => {
    const created = await cli([
      'mcp-views',
      'create',
      'cli-support',
      '--tool',
      'cli-any__echo',
      '--server',
      'docs',
      '--exposure',
      'search',
    ]);
    expectExit(created, 0);
    assert.match(created.stdout, /^Created view cli-support \(mcpv_\w+\), at \/mcp\/cli-support\./);

    const table = await cli(['mcp-views', 'ls']);
    expectExit(table, 0);
    assert.match(table.stdout, /^NAME\s+TOOLS\s+SERVERS\s+EXPOSURE\s+UPDATED\n/);
    assert.match(row(table.stdout, 'cli-support'), /^cli-support\s+1\s+docs\s+search\s/);

    const json = jsonOf(await cli(['mcp-views', 'get', 'cli-support', '--json']));
    const file = writeJson('view.json', {
      ...json,
      tools: [{ tool: 'cli-any__echo', name: 'echo', hidden_arguments: { text: 'fixed' } }],
    });
    expectExit(await cli(['mcp-views', 'update', 'cli-support', '--file', file]), 0);
    const shown = await cli(['mcp-views', 'get', 'cli-support']);
    expectExit(shown, 0);
    assert.match(shown.stdout, /^ {2}echo \(cli-any__echo\)\n {4}set by the view: text$/m);
    assert.match(shown.stdout, /^Exposure:\s+search$/m);

    const bad = await cli(['mcp-views', 'update', 'cli-support', '--exposure', 'some']);
    expectExit(bad, 2);
    assert.match(bad.stderr, /--exposure must be all or search/);

    expectExit(await cli(['mcp-views', 'rm', 'cli-support']), 0);
    assert.deepEqual((await api.mcpViews.list()).items, []);
  });
});
