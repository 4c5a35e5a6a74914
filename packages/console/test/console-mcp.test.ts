import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Orchestra } from '@orchestra/sdk';
import type { Browser, Page } from 'playwright-core';
import { ScriptedModelServer } from '../../server/src/providers/index.ts';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { launchBrowser, sidewaysOverflow, signIn, watchProblems } from './support.ts';

// The console's MCP servers pages in a real browser (Debian's Chromium) against a real server
// whose hub runs real MCP servers: the reference `everything` server from the catalog, and the
// test fixture whose tools change mid-session.

/** Every wait in a browser is bounded by this: starting an MCP server on a busy machine is slow. */
const WAIT_MS = 90_000;

const CHANGING_SERVER = fileURLToPath(
  new URL('../../server/test/fixtures/mcp/changing-server.ts', import.meta.url),
);

let server: TestServer;
let client: Orchestra;
let browser: Browser;

before(async () => {
  server = await startTestServer();
  client = new Orchestra({ url: server.url, apiKey: server.adminKey });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The server page's state badge reads `state`. */
async function waitForState(page: Page, state: string): Promise<void> {
  await page
    .getByRole('region', { name: 'Status' })
    .locator(`.badge-${state}`)
    .waitFor({ timeout: WAIT_MS });
}

describe('MCP servers', () => {
  test('install the everything server from the catalog, watch it become ready, see its tools, resources, prompts and logs, disable and enable it', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/tools`);
    await page
      .getByRole('navigation', { name: 'Tools section' })
      .getByRole('link', { name: 'MCP servers' })
      .click();
    await page
      .getByRole('heading', { name: 'MCP servers', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    await page.getByText('No MCP servers yet.').waitFor({ timeout: WAIT_MS });

    await page.getByRole('link', { name: 'Add from catalog' }).click();
    const catalog = page.getByRole('list', { name: 'Catalog' });
    await catalog.locator('[data-entry="everything"]').waitFor({ timeout: WAIT_MS });
    assert.match(
      (await catalog.locator('[data-entry="everything"]').textContent()) ?? '',
      /Exercises every MCP feature/,
    );
    // An entry with a config schema gets the schema's form, its defaults filled in.
    await page.getByRole('button', { name: 'Install Memory' }).click();
    const memory = page.getByRole('form', { name: 'Install memory' });
    assert.equal(await memory.getByLabel('file').inputValue(), 'memory.jsonl');
    await memory.getByRole('button', { name: 'Cancel' }).click();
    await memory.waitFor({ state: 'detached', timeout: WAIT_MS });

    await page.getByRole('button', { name: 'Install Everything' }).click();
    const form = page.getByRole('form', { name: 'Install everything' });
    await form.getByLabel('Name (optional)').fill('kitchen');
    await form.getByRole('button', { name: 'Install' }).click();

    // Its page: it becomes ready by itself (the page polls), with its tools.
    await page
      .getByRole('heading', { name: 'MCP server kitchen', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    await waitForState(page, 'ready');
    const status = (await page.getByRole('region', { name: 'Status' }).textContent()) ?? '';
    assert.match(status, /2025-11-25/);
    const tools = page.getByRole('list', { name: 'Its tools' });
    await tools.getByRole('link', { name: 'kitchen__echo' }).waitFor({ timeout: WAIT_MS });
    const settings = (await page.getByRole('region', { name: 'Settings' }).textContent()) ?? '';
    assert.match(settings, /stdio/);
    assert.match(settings, /everything/);
    await page.getByRole('list', { name: 'Its resources' }).waitFor({ timeout: WAIT_MS });
    await page.getByRole('list', { name: 'Its prompts' }).waitFor({ timeout: WAIT_MS });

    // Logs, on demand and refreshable: the hub's events are there.
    await page.getByRole('button', { name: 'Show the logs' }).click();
    const log = page.getByRole('list', { name: 'Log lines' });
    await log.locator('li[data-stream="event"]', { hasText: 'ready' }).first().waitFor({
      timeout: WAIT_MS,
    });

    // Restart: an event of the running server, there when the logs are read again.
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/restart'), {
        timeout: WAIT_MS,
      }),
      page.getByRole('button', { name: 'Restart' }).click(),
    ]);
    await page.getByRole('button', { name: 'Refresh the logs' }).click();
    await log
      .locator('li[data-stream="event"]', { hasText: 'restart requested' })
      .waitFor({ timeout: WAIT_MS });
    await waitForState(page, 'ready');

    // Disable: it stops; enable: it comes back.
    await page.getByRole('button', { name: 'Disable' }).click();
    await waitForState(page, 'disabled');
    await page.getByRole('button', { name: 'Enable' }).click();
    await waitForState(page, 'ready');
    await tools.getByRole('link', { name: 'kitchen__echo' }).waitFor({ timeout: WAIT_MS });

    // The list: its row with state, protocol and tool count.
    await page
      .getByRole('navigation', { name: 'Tools section' })
      .getByRole('link', { name: 'MCP servers' })
      .click();
    const row = page.locator('tr[data-server="kitchen"]');
    await row.locator('.badge-ready').waitFor({ timeout: WAIT_MS });
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[1], 'stdio');
    assert.equal(cells[3], '2025-11-25');
    const listed = await client.request<{ tools: number }>('GET', '/v1/mcp/servers/kitchen');
    assert.ok(listed.tools > 0);
    assert.equal(cells[6], String(listed.tools));

    // Delete asks first.
    await row.getByRole('link', { name: 'kitchen' }).click();
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('button', { name: 'Delete kitchen and its tools' }).click();
    await page.getByText('No MCP servers yet.').waitFor({ timeout: WAIT_MS });
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('add a server by hand; a tool it changes is held, shown with its diff, and approved from the tool page', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/mcp-servers`);
    await page.getByRole('link', { name: 'Add server' }).click();
    const form = page.getByRole('form', { name: 'Add an MCP server' });
    await form.getByLabel('Name', { exact: true }).fill('changing');
    // The hint about secret references sits with the rows.
    assert.match(
      (await form.getByRole('group', { name: 'Environment' }).textContent()) ?? '',
      /\$\{secret:NAME\}/,
    );
    await form.getByLabel('Command').fill(process.execPath);
    await form.getByLabel('Arguments').fill(CHANGING_SERVER);
    await form.getByRole('button', { name: 'Add variable' }).click();
    await form.getByLabel('Variable 1 name').fill('GREETING');
    await form.getByLabel('Variable 1 value').fill('a value never shown');
    await form.getByRole('button', { name: 'Add the server' }).click();

    await page
      .getByRole('heading', { name: 'MCP server changing', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    await waitForState(page, 'ready');
    const settings = (await page.getByRole('region', { name: 'Settings' }).textContent()) ?? '';
    assert.match(settings, /GREETING/);
    assert.doesNotMatch(await page.content(), /a value never shown/);
    const structured = page.locator('li[data-tool="changing__structured"]');
    await structured.waitFor({ timeout: WAIT_MS });
    assert.equal(await structured.locator('.badge-held').count(), 0);

    // The server rewrites a tool's description mid-session.
    await client.request('POST', '/v1/tool-policies', {
      body: { name: 'changing', effect: 'allow', tools: ['changing__*'] },
    });
    await client.request('POST', '/v1/tools/changing__rug_pull/invoke', {
      body: { arguments: {} },
    });
    // The server's page marks it held, without a reload.
    await structured.locator('.badge-held', { hasText: 'pending change' }).waitFor({
      timeout: WAIT_MS,
    });
    await structured.getByRole('link', { name: 'changing__structured' }).click();
    const pending = page.getByRole('region', {
      name: 'Changed definition, waiting for approval',
    });
    await pending.waitFor({ timeout: WAIT_MS });
    assert.ok((await pending.getByRole('list', { name: 'What changed' }).count()) === 1);
    await pending.getByRole('button', { name: 'Approve this definition' }).click();
    await pending.waitFor({ state: 'detached', timeout: WAIT_MS });
    const tool = await client.request<{ state: string; pending: unknown }>(
      'GET',
      '/v1/tools/changing__structured',
    );
    assert.equal(tool.state, 'active');
    assert.equal(tool.pending, null);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a viewer reads the servers, is not offered to add, change or delete them', async () => {
    await client.request('POST', '/v1/mcp/servers', {
      body: {
        name: 'viewed',
        transport: 'stdio',
        command: process.execPath,
        args: [CHANGING_SERVER],
      },
    });
    const viewer = await client.apiKeys.create({ name: 'mcp viewer', role: 'viewer' });
    const context = await browser.newContext();
    const page = await signIn(context, server.url, viewer.secret);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/mcp-servers`);
    await page.locator('tr[data-server="viewed"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('link', { name: 'Add from catalog' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Add server' }).count(), 0);
    await page.getByRole('link', { name: 'viewed' }).click();
    await waitForState(page, 'ready');
    for (const name of ['Disable', 'Restart', 'Delete']) {
      assert.equal(await page.getByRole('button', { name }).count(), 0, name);
    }
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the MCP pages fit a narrow screen without sideways scrolling', async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    for (const path of [
      '/mcp-servers',
      '/mcp-servers/viewed',
      '/mcp-catalog',
      '/mcp-new',
      '/providers',
    ]) {
      await page.goto(server.url + path);
      assert.equal(await sidewaysOverflow(page), 0, `${path} scrolls sideways`);
    }
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('model providers', () => {
  test('add a provider whose key is a secret, test it against a scripted model, see a dead one fail, delete it; a viewer only reads', async () => {
    const model = await new ScriptedModelServer({
      apiKey: 'sk-console',
      models: ['demo'],
    }).listen();
    try {
      await client.secrets.put('CONSOLE_MODEL_KEY', 'sk-console');
      const context = await browser.newContext();
      const page = await signIn(context, server.url, server.adminKey);
      const problems = watchProblems(page, { expectedStatuses: [400] });
      await page.getByRole('link', { name: 'Providers', exact: true }).click();
      await page
        .getByRole('heading', { name: 'Model providers', level: 1 })
        .waitFor({ timeout: WAIT_MS });
      await page.getByText('No providers yet.').waitFor({ timeout: WAIT_MS });

      const form = page.getByRole('region', { name: 'Add a provider' });
      await form.getByLabel('Name').fill('scripted');
      await form.getByLabel('Base URL').fill('not a url');
      await form.getByLabel('Models').fill('demo 0.5/1.5');
      await form.getByRole('button', { name: 'Add provider' }).click();
      await form.getByText('An http:// or https:// URL.').waitFor({ timeout: WAIT_MS });
      await form.getByLabel('Base URL').fill(`${model.url}/v1`);
      // A secret that does not exist: the server's answer lands on the field.
      await form.getByLabel('API key secret (optional)').fill('NO_SUCH_SECRET');
      await form.getByRole('button', { name: 'Add provider' }).click();
      await form.getByText(/no secret named NO_SUCH_SECRET/).waitFor({ timeout: WAIT_MS });
      await form.getByLabel('API key secret (optional)').fill('CONSOLE_MODEL_KEY');
      await form.getByRole('button', { name: 'Add provider' }).click();
      const row = page.getByRole('row').filter({ hasText: 'scripted' });
      await row.waitFor({ timeout: WAIT_MS });
      assert.match((await row.textContent()) ?? '', /demo\s*\$0\.5\/\$1\.5 per Mtok/);
      assert.deepEqual((await client.modelProviders.get('scripted')).models, [
        { name: 'demo', price: { input: 0.5, output: 1.5 } },
      ]);

      model.script('demo', { text: 'ready' });
      await page.getByRole('button', { name: 'Test scripted' }).click();
      await row
        .getByRole('status')
        .filter({ hasText: /^Answers \([\d.]+ ms\); lists 1 models; answered "ready"$/ })
        .waitFor({ timeout: WAIT_MS });
      assert.equal(model.requests.at(-1)?.api_key, 'sk-console');

      await form.getByLabel('Name').fill('dead');
      await form.getByLabel('Kind').selectOption('anthropic');
      await form.getByLabel('Base URL').fill('http://127.0.0.1:9');
      await form.getByLabel('API key secret (optional)').fill('');
      await form.getByLabel('Models').fill('claude');
      await form.getByRole('button', { name: 'Add provider' }).click();
      const dead = page.getByRole('row').filter({ hasText: 'dead' });
      await dead.waitFor({ timeout: WAIT_MS });
      await page.getByRole('button', { name: 'Test dead' }).click();
      await dead
        .getByRole('status')
        .filter({ hasText: /^Fails .*: unavailable: dead could not be reached/ })
        .waitFor({ timeout: WAIT_MS });

      await page.getByRole('button', { name: 'Delete dead' }).click();
      await page.getByRole('button', { name: 'Delete dead' }).last().click();
      await dead.waitFor({ state: 'detached', timeout: WAIT_MS });
      assert.deepEqual(
        (await client.modelProviders.list()).items.map((p) => p.name),
        ['scripted'],
      );
      // With a provider listed, the page fits a narrow screen.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.goto(`${server.url}/providers`);
      await page.getByRole('row').filter({ hasText: 'scripted' }).waitFor({ timeout: WAIT_MS });
      assert.equal(await sidewaysOverflow(page), 0, '/providers scrolls sideways');
      assert.deepEqual(problems, []);
      await context.close();

      const viewer = await client.apiKeys.create({ name: 'providers viewer', role: 'viewer' });
      const viewing = await browser.newContext();
      const read = await signIn(viewing, server.url, viewer.secret);
      await read.goto(`${server.url}/providers`);
      await read.getByRole('row').filter({ hasText: 'scripted' }).waitFor({ timeout: WAIT_MS });
      assert.equal(await read.getByRole('region', { name: 'Add a provider' }).count(), 0);
      assert.equal(await read.getByRole('button', { name: 'Test scripted' }).count(), 0);
      await viewing.close();
    } finally {
      await model.close();
    }
  });
});

describe('hosted agents', () => {
  test('chat: the answer streams in, a tool call waits for its approval inline and runs once approved; usage shows what it took', async () => {
    const model = await new ScriptedModelServer({ models: ['agent'] }).listen();
    try {
      await client.modelProviders.create({
        name: 'console-model',
        kind: 'anthropic',
        base_url: model.url,
        models: [{ name: 'agent', price: { input: 2, output: 4 } }],
        max_retries: 0,
      });
      await client.request('POST', '/v1/tools', {
        body: {
          name: 'node_health',
          description: 'The node’s health',
          annotations: { readOnlyHint: true },
          input_schema: { type: 'object' },
          source: { type: 'http', method: 'GET', url: `${server.url}/healthz` },
        },
      });
      await client.request('POST', '/v1/tool-policies', {
        body: {
          name: 'health-needs-approval',
          effect: 'allow',
          tools: ['node_health'],
          approval: 'required',
          match: { templates: ['console-agent'] },
        },
      });
      await client.templates.create({
        name: 'console-agent',
        kind: 'llm',
        llm: { model: { provider: 'console-model', model: 'agent' }, tools: ['node_health'] },
      });
      const context = await browser.newContext();
      const page = await signIn(context, server.url, server.adminKey);
      const problems = watchProblems(page);
      await page.getByRole('link', { name: 'Chat', exact: true }).click();
      await page.getByRole('heading', { name: 'Chat', level: 1 }).waitFor({ timeout: WAIT_MS });
      await page.getByLabel('Hosted agent').selectOption('console-agent');

      model.script('agent', {
        text: 'Hello from the console agent.',
        chunk_chars: 4,
        usage: { input_tokens: 1000, output_tokens: 500 },
      });
      await page.getByRole('textbox', { name: 'Message' }).fill('Hi there');
      await page.getByRole('button', { name: 'Send' }).click();
      const messages = page.getByRole('list', { name: 'Messages' });
      await messages
        .locator('.chat-answer', { hasText: 'Hello from the console agent.' })
        .waitFor({ timeout: WAIT_MS });
      const sessionId = new URL(page.url()).searchParams.get('session');
      assert.match(sessionId ?? '', /^ses_/);

      model.script(
        'agent',
        {
          text: 'Checking.',
          tool_calls: [{ id: 'toolu_console', name: 'node_health', arguments: {} }],
        },
        { text: 'The node is up.' },
      );
      await page.getByRole('textbox', { name: 'Message' }).fill('Is the node up?');
      await page.getByRole('button', { name: 'Send' }).click();
      const tools = messages.getByRole('list', { name: 'Tool calls' });
      await tools.locator('li[data-status="awaiting approval"]').waitFor({ timeout: WAIT_MS });
      // The task's own page says what it waits for, and where to decide.
      let waitingId: string | undefined;
      for (let i = 0; i < 600 && waitingId === undefined; i++) {
        const listed = await client.tasks.list({
          session_id: sessionId ?? '',
          state: ['awaiting_approval'],
        });
        waitingId = listed.items[0]?.id;
        if (waitingId === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(waitingId, 'the task awaits approval');
      const taskPage = await signIn(context, server.url, server.adminKey);
      await taskPage.goto(`${server.url}/tasks/${waitingId}`);
      await taskPage
        .getByRole('status')
        .filter({
          hasText: /Awaiting approval: the run waits for approval apr_\S+ of tool node_health/,
        })
        .waitFor({ timeout: WAIT_MS });
      await taskPage
        .getByText('state awaiting_approval')
        .waitFor({ state: 'attached', timeout: WAIT_MS });
      await taskPage.close();
      await tools.getByRole('button', { name: 'Approve' }).click();
      await tools.locator('li[data-status="succeeded"]').waitFor({ timeout: WAIT_MS });
      await messages
        .locator('.chat-answer', { hasText: 'The node is up.' })
        .waitFor({ timeout: WAIT_MS });
      // The session remembers: the second turn's first request carried the first one.
      const remembered = model.requestsFor('agent').at(-2)?.body.messages as { role: string }[];
      assert.deepEqual(
        remembered.map((m) => m.role),
        ['user', 'assistant', 'user'],
      );

      // A reload shows the conversation so far, and follows an answer still streaming.
      model.script('agent', {
        text: 'A slow and steady answer.',
        chunk_chars: 3,
        chunk_delay_ms: 150,
      });
      await page.getByRole('textbox', { name: 'Message' }).fill('Slowly, please.');
      await page.getByRole('button', { name: 'Send' }).click();
      await messages.locator('.chat-answer', { hasText: /^A s/ }).waitFor({ timeout: WAIT_MS });
      await page.reload();
      await messages
        .locator('.chat-answer', { hasText: 'The node is up.' })
        .waitFor({ timeout: WAIT_MS });
      await messages
        .locator('.chat-answer', { hasText: 'A slow and steady answer.' })
        .waitFor({ timeout: WAIT_MS });
      // The text is whole before its task ends: wait for the end, which records the usage.
      const turnsOfSession = await client.tasks.list({ session_id: sessionId ?? '' });
      for (const t of turnsOfSession.items) await client.tasks.wait(t.id, { timeoutMs: WAIT_MS });

      await page.getByRole('link', { name: 'Usage', exact: true }).click();
      await page.getByRole('heading', { name: 'Usage', level: 1 }).waitFor({ timeout: WAIT_MS });
      await page
        .getByRole('figure')
        .filter({ hasText: 'Tokens per day' })
        .first()
        .waitFor({ timeout: WAIT_MS });
      await page.getByLabel('Group by').selectOption('template');
      const row = page.locator('tr[data-key="console-agent"]');
      await row.waitFor({ timeout: WAIT_MS });
      assert.match((await row.textContent()) ?? '', /^console-agent/);
      assert.equal((await client.usage.report({ group_by: 'template' })).rows[0]?.model_calls, 4);
      const download = page.waitForEvent('download');
      await page.getByRole('button', { name: 'Download CSV' }).click();
      assert.match((await download).suggestedFilename(), /^usage-template-\d{4}-\d{2}-\d{2}\.csv$/);

      // The overview shows this month's tokens and cost per day.
      await page.goto(`${server.url}/overview`);
      const hosted = page.getByRole('region', { name: /Hosted agents this month/ });
      await hosted.waitFor({ timeout: WAIT_MS });
      assert.match((await hosted.textContent()) ?? '', /4 model calls/);
      await hosted
        .getByRole('figure')
        .filter({ hasText: 'Cost per day' })
        .waitFor({ timeout: WAIT_MS });

      await page.setViewportSize({ width: 390, height: 844 });
      for (const path of [
        `/chat?template=console-agent&session=${sessionId}`,
        '/usage',
        '/overview',
      ]) {
        await page.goto(server.url + path);
        await page.getByRole('heading', { level: 1 }).waitFor({ timeout: WAIT_MS });
        assert.equal(await sidewaysOverflow(page), 0, `${path} scrolls sideways`);
      }
      assert.deepEqual(problems, []);
      await context.close();
    } finally {
      await model.close();
    }
  });

  test('a hosted agent template made with the form: model, prompt, tools, limits and memory; edited, it stays a hosted agent', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [400] });
    await page.goto(`${server.url}/templates/new`);
    const form = page.getByRole('form', { name: 'Template' });
    await form.getByLabel('Name').fill('form-agent');
    await form.getByLabel('Kind').selectOption('llm');
    assert.equal(await form.getByLabel('Capabilities').count(), 0, 'no capabilities for llm');
    // Missing model: refused at its field before anything is sent.
    await form.getByRole('button', { name: 'Create template' }).click();
    await form.getByText('Required: one of the provider’s models.').waitFor({ timeout: WAIT_MS });
    await form.getByLabel('Model provider').fill('console-model');
    await form.getByLabel('Model', { exact: true }).fill('agent');
    await form.getByLabel('Fallbacks').fill('console-model/agent-b');
    await form.getByLabel('System prompt').fill('You help with {{input.topic}}.');
    await form.getByLabel('Tools').fill('node_health, notes__*');
    await form.getByLabel('Temperature').fill('0.3');
    await form.getByLabel('Max turns').fill('4');
    await form.getByLabel('Max cost (USD)').fill('0.5');
    await form.getByLabel('Session memory').selectOption('token_window');
    await form.getByLabel('Turns or tokens').fill('2000');
    await form.getByRole('button', { name: 'Create template' }).click();
    await page
      .getByRole('heading', { name: 'Template form-agent', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    const created = await client.templates.get('form-agent');
    assert.equal(created.kind, 'llm');
    assert.deepEqual(created.llm, {
      model: { provider: 'console-model', model: 'agent' },
      fallbacks: [{ provider: 'console-model', model: 'agent-b' }],
      system_prompt: 'You help with {{input.topic}}.',
      tools: ['node_health', 'notes__*'],
      temperature: 0.3,
      limits: { max_turns: 4, max_cost_usd: 0.5 },
      memory: { strategy: 'token_window', max_tokens: 2000 },
    });
    await page.goto(`${server.url}/templates/form-agent/edit`);
    await form.getByLabel('Max turns').fill('6');
    await form.getByRole('button', { name: 'Save as a new version' }).click();
    // By its full name: the edit page's own heading ("Edit form-agent") would match a pattern at once.
    await page
      .getByRole('heading', { name: 'Template form-agent', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    const edited = await client.templates.get('form-agent');
    assert.equal(edited.version, 2);
    assert.equal(edited.kind, 'llm');
    assert.equal(edited.llm?.limits?.max_turns, 6);
    assert.deepEqual(edited.capabilities, ['orchestra:llm']);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
