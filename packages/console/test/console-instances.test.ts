import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker, Orchestra } from '@orchestra/sdk';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import { launchBrowser, sidewaysOverflow, signIn, watchProblems } from './support.ts';

// The console's workspace pages in a real browser (Debian's Chromium) against a real server
// whose instances run in bubblewrap: the live list, a terminal in xterm.js that survives a
// reload and is shared by two browsers, the file editor, and checkpoints.

/** Every wait in a browser is bounded by this; machines are shared. */
const WAIT_MS = 30_000;

let server: TestServer;
let client: Orchestra;
let browser: Browser;

before(async () => {
  server = await startTestServer();
  client = new Orchestra({ url: server.url, apiKey: server.adminKey });
  await client.workspaceTemplates.create({ name: 'shell', description: 'A bare workspace' });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The instances table's rows, as `name state` texts. */
async function instanceRows(page: Page): Promise<string[]> {
  return page
    .locator('table[aria-label="Instances"] tbody tr')
    .evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.instance ?? ''));
}

/** What the terminal shows now, row by row (xterm.js's DOM renderer). */
async function screenText(page: Page, terminal: string): Promise<string> {
  return page
    .locator(`[data-terminal="${terminal}"] .xterm-rows`)
    .evaluate((rows) => [...rows.children].map((r) => r.textContent ?? '').join('\n'));
}

async function waitForScreen(page: Page, terminal: string, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  let text = '';
  while (Date.now() < deadline) {
    text = await screenText(page, terminal).catch(() => '');
    if (pattern.test(text)) return;
    await page.waitForTimeout(50);
  }
  assert.fail(`${pattern} not on the screen of ${terminal}:\n${text}`);
}

describe('instances', () => {
  test('create one and a batch, follow them live, stop, start and delete; usage and quotas', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    await page
      .getByRole('navigation', { name: 'Sections' })
      .getByRole('link', { name: 'Instances' })
      .click();
    await page.getByRole('heading', { name: 'Instances', level: 1 }).waitFor({ timeout: WAIT_MS });
    await page.getByText('No instance yet.').waitFor({ timeout: WAIT_MS });

    await page.getByLabel('Name').fill('first');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.getByText('Created first: running.').waitFor({ timeout: WAIT_MS });
    await page.getByLabel('How many').fill('3');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.getByText('Created 3 of 3.').waitFor({ timeout: WAIT_MS });
    await page.waitForFunction(
      () => document.querySelectorAll('table[aria-label="Instances"] tbody tr').length === 4,
      null,
      { timeout: WAIT_MS },
    );

    // One created elsewhere shows up without a reload (the instances topic).
    const elsewhere = await client.instances.create({ template: 'shell', name: 'from-the-api' });
    await page.getByRole('link', { name: 'from-the-api' }).waitFor({ timeout: WAIT_MS });
    assert.equal((await instanceRows(page)).length, 5);

    const row = page.locator(`tr[data-instance="${elsewhere.id}"]`);
    await row.getByRole('button', { name: 'Stop from-the-api' }).click();
    await row.locator('.badge-stopped').waitFor({ timeout: WAIT_MS });
    await page.getByLabel('State').selectOption('stopped');
    await page.waitForFunction(
      () => document.querySelectorAll('table[aria-label="Instances"] tbody tr').length === 1,
      null,
      { timeout: WAIT_MS },
    );
    assert.match(page.url(), /state=stopped/);
    await row.getByRole('button', { name: 'Start from-the-api' }).click();
    await page.getByText('No instance is in this state.').waitFor({ timeout: WAIT_MS });
    await page.getByLabel('State').selectOption('');
    await page.getByRole('button', { name: 'Delete from-the-api' }).click();
    await page.getByRole('button', { name: 'Delete from-the-api' }).click();
    await row.waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await client.instances.list()).items.length, 4);

    // Usage: the tenant's quotas and what its running instances use.
    const quotas = page.getByRole('table', { name: 'Quotas' });
    await quotas
      .getByRole('cell', { name: 'max_running_instances', exact: true })
      .waitFor({ timeout: WAIT_MS });
    await quotas
      .getByRole('cell', { name: 'max_terminals', exact: true })
      .waitFor({ timeout: WAIT_MS });
    await page
      .getByRole('table', { name: 'Instance usage' })
      .getByRole('link', { name: 'first' })
      .waitFor({ timeout: WAIT_MS });
    assert.equal(await sidewaysOverflow(page), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a terminal in xterm.js: typed into, shown again after a reload, shared by two browsers, closed', async () => {
    const instance = await client.instances.create({ template: 'shell', name: 'term-box' });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/instances/${instance.id}`);
    await page
      .getByRole('heading', { name: 'Instance term-box', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    await page.getByText('No terminal yet.').waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: 'Open a terminal' }).click();
    const host = page.locator('[data-terminal]');
    await host.waitFor({ timeout: WAIT_MS });
    const terminal = (await host.getAttribute('data-terminal')) as string;
    await page.getByText('Attached').first().waitFor({ timeout: WAIT_MS });
    await waitForScreen(page, terminal, /[#$] *$/m);
    await host.click();
    // (Typed text is echoed: what the test waits for is computed by the shell.)
    await page.keyboard.type('echo "web-$((6 * 7))"');
    await page.keyboard.press('Enter');
    await waitForScreen(page, terminal, /^web-42\s*$/m);
    // The page's size wins: the terminal took the page's columns.
    const sized = await client.instances.terminals.get(instance.id, terminal);
    assert.ok(sized.cols > 80, `the terminal is ${sized.cols} columns wide`);

    // A reload attaches again: the screen is the server's copy.
    await page.reload();
    await page.locator(`[data-terminal="${terminal}"]`).waitFor({ timeout: WAIT_MS });
    await waitForScreen(page, terminal, /^web-42\s*$/m);

    // Another browser, another person: the same screen, and what either types.
    const other = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const second = await signIn(other, server.url, server.adminKey);
    await second.goto(`${server.url}/instances/${instance.id}?terminal=${terminal}`);
    await waitForScreen(second, terminal, /^web-42\s*$/m);
    await second.getByText('2 viewers').waitFor({ timeout: WAIT_MS });
    await second.locator(`[data-terminal="${terminal}"]`).click();
    await second.keyboard.type('echo "shared-$((7 * 7))"');
    await second.keyboard.press('Enter');
    await waitForScreen(page, terminal, /^shared-49\s*$/m);
    await other.close();

    const row = page.locator(`tr[data-terminal-row="${terminal}"]`);
    await row.getByRole('button', { name: `Close ${terminal}` }).click();
    await row.getByRole('button', { name: `Close ${terminal}` }).click();
    await row.waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await client.instances.terminals.list(instance.id)).items.length, 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('files: browse, create and edit a file, a stale save is refused; checkpoints: save, changes, restore', async () => {
    const instance = await client.instances.create({ template: 'shell', name: 'files-box' });
    await client.instances.files.write(instance.id, 'src/app.ts', 'export const a = 1;\n');
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    // The stale save answers 412, on purpose.
    const problems = watchProblems(page, { expectedStatuses: [412] });
    await page.goto(`${server.url}/instances/${instance.id}?tab=files`);
    await page.getByRole('link', { name: 'src/' }).click();
    await page.getByRole('link', { name: 'app.ts' }).click();
    const editor = page.getByRole('textbox', { name: 'src/app.ts', exact: true });
    await editor.waitFor({ timeout: WAIT_MS });
    assert.equal(await editor.inputValue(), 'export const a = 1;\n');
    await editor.fill('export const a = 2;\n');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved src/app.ts').waitFor({ timeout: WAIT_MS });
    assert.equal(
      await client.instances.files.readText(instance.id, 'src/app.ts'),
      'export const a = 2;\n',
    );
    // Someone else changes it: this editor's save would lose that, and is refused.
    await client.instances.files.write(instance.id, 'src/app.ts', 'export const a = 3;\n');
    await editor.fill('export const a = 4;\n');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('changed since you opened it').waitFor({ timeout: WAIT_MS });
    assert.equal(
      await client.instances.files.readText(instance.id, 'src/app.ts'),
      'export const a = 3;\n',
    );
    await page.getByRole('button', { name: 'Close' }).click();
    await page.getByLabel('New', { exact: true }).fill('notes.md');
    await page.getByRole('button', { name: 'New file' }).click();
    await page
      .getByRole('textbox', { name: 'src/notes.md', exact: true })
      .waitFor({ timeout: WAIT_MS });
    await page.getByRole('link', { name: 'notes.md' }).waitFor({ timeout: WAIT_MS });

    // Checkpoints: save, change, see the change, restore.
    await page.getByRole('link', { name: 'Checkpoints' }).click();
    await page.getByLabel('Message').fill('before the edit');
    await page.getByRole('button', { name: 'Save a checkpoint' }).click();
    await page.getByText(/Saved chk_\S+: 2 files\./).waitFor({ timeout: WAIT_MS });
    const [saved] = (await client.instances.checkpoints.list(instance.id)).items;
    await client.instances.files.write(instance.id, 'src/app.ts', 'export const a = 5;\n');
    await page.getByRole('button', { name: `Changes since ${saved?.id}` }).click();
    await page.getByText('+export const a = 5;').waitFor({ timeout: WAIT_MS });
    await page.getByText('-export const a = 3;').waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: `Restore ${saved?.id}` }).click();
    await page.getByRole('button', { name: `Restore ${saved?.id}` }).click();
    await page.getByText(/Restored chk_\S+\. The workspace as it was is saved as chk_/).waitFor({
      timeout: WAIT_MS,
    });
    assert.equal(
      await client.instances.files.readText(instance.id, 'src/app.ts'),
      'export const a = 3;\n',
    );
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('an agent’s task in an instance: submitted from its page, linked both ways, its checkpoints name it', async () => {
    const instance = await client.instances.create({ template: 'shell', name: 'agent-home' });
    const key = await client.apiKeys.create({ name: 'console-agent', role: 'agent' });
    const worker = new AgentWorker({
      url: server.url,
      apiKey: key.secret,
      agentId: 'console-agent',
      capabilities: ['console-agent'],
      handleSignals: false,
      handler: async (_input, ctx) => ({ checkpoint: await ctx.checkpoint('by the agent') }),
    });
    await worker.start();
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    try {
      await page.goto(`${server.url}/instances/${instance.id}`);
      await page.getByRole('link', { name: 'Submit a task here' }).click();
      assert.equal(await page.getByLabel('Instance').inputValue(), instance.id);
      await page.getByLabel('Capabilities').fill('console-agent');
      await page.getByRole('button', { name: 'Submit', exact: true }).click();
      await page
        .getByRole('heading', { name: /^Task tsk_/, level: 1 })
        .waitFor({ timeout: WAIT_MS });
      const facts = page.getByRole('region', { name: 'Summary' });
      await facts.getByText('succeeded').first().waitFor({ timeout: WAIT_MS });
      const taskId = ((await page.getByRole('heading', { level: 1 }).textContent()) ?? '').replace(
        'Task ',
        '',
      );
      await facts.getByRole('link', { name: instance.id }).click();
      await page
        .getByRole('heading', { name: 'Instance agent-home', level: 1 })
        .waitFor({ timeout: WAIT_MS });
      await page.getByRole('link', { name: 'Checkpoints' }).click();
      const table = page.locator('table[aria-label="Checkpoints"]');
      await table.getByText('by the agent').waitFor({ timeout: WAIT_MS });
      await table.getByText(`before attempt 1 of task ${taskId}`).waitFor({ timeout: WAIT_MS });
      assert.equal(await table.getByRole('link', { name: taskId }).count(), 2);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      await worker.stop();
    }
  });

  test('ports: the declared ones, a share link that opens the app in a browser without signing in, revoked', async () => {
    await client.workspaceTemplates.create({
      name: 'web-app',
      ports: [{ name: 'web' }],
      startup: {
        command: [
          'node',
          '-e',
          "require('http').createServer((q, s) => { s.setHeader('content-type', 'text/html'); s.end('<h1>hello from the app</h1>'); }).listen(Number(process.env.PORT_WEB), '127.0.0.1')",
        ],
      },
    });
    const instance = await client.instances.create({ template: 'web-app', name: 'web-box' });
    const port = instance.ports[0]?.port as number;
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/instances/${instance.id}?tab=ports`);
    await page
      .getByRole('table', { name: 'Ports' })
      .getByRole('cell', { name: `PORT_WEB` })
      .waitFor({ timeout: WAIT_MS });
    await page.getByText('No share link works now.').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByLabel('Port', { exact: true }).inputValue(), String(port));
    await page.getByRole('button', { name: 'Share' }).click();
    const link = page.getByRole('status').getByRole('link');
    await link.waitFor({ timeout: WAIT_MS });
    const url = (await link.getAttribute('href')) as string;
    assert.match(url, /\/share\/ors_/);

    // Someone without a key opens it.
    const stranger = await browser.newContext();
    const visit = await stranger.newPage();
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const response = await visit.goto(url);
      if (response?.status() === 200) break;
      if (Date.now() > deadline) assert.fail(`the app never answered at ${url}`);
      await visit.waitForTimeout(200);
    }
    await visit.getByRole('heading', { name: 'hello from the app' }).waitFor({ timeout: WAIT_MS });
    // On Orchestra's origin, but sandboxed: the app's page cannot reach the console's storage.
    const storage = await visit.evaluate(() => {
      try {
        return String(window.sessionStorage.length);
      } catch (err) {
        return (err as Error).name;
      }
    });
    assert.equal(storage, 'SecurityError');

    const [share] = (await client.instances.ports.listShares(instance.id)).items;
    const row = page.locator(`tr[data-share="${share?.id}"]`);
    await row.getByRole('button', { name: `Revoke ${share?.id}` }).click();
    await row.getByRole('button', { name: `Revoke ${share?.id}` }).click();
    await page.getByText('No share link works now.').waitFor({ timeout: WAIT_MS });
    assert.equal((await visit.goto(url))?.status(), 404);
    await stranger.close();
    assert.deepEqual(problems, []);
    await context.close();
  });
});
