import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AgentWorker, Orchestra, type Task } from '@orchestra/sdk';
import type { Browser, Page } from 'playwright-core';
import {
  type ConsoleFixture,
  launchBrowser,
  REPORT_TEMPLATE,
  sidewaysOverflow,
  signIn,
  startConsoleFixture,
  watchProblems,
} from './support.ts';

// The web console in a real browser (Debian's Chromium, headless) against a real server
// with real SDK agents: what a user does, through the page.

/** Every wait in a browser is bounded by this; machines are shared. */
const WAIT_MS = 30_000;

let fixture: ConsoleFixture;
let browser: Browser;

before(async () => {
  fixture = await startConsoleFixture();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await fixture?.stop();
});

/** The HTTP status an SDK call rejects with. */
async function rejectionStatus(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
  } catch (err) {
    return (err as { status: number }).status;
  }
  assert.fail('expected the call to reject');
}

/** The state the task page shows, once it is `state`. */
async function waitForState(page: Page, state: string): Promise<void> {
  await page.locator('.facts .badge', { hasText: state.replace('_', ' ') }).waitFor({
    timeout: WAIT_MS,
  });
}

/** The offsets of the timeline's events, in the order shown. */
async function timelineOffsets(page: Page): Promise<number[]> {
  const texts = await page.locator('.timeline .offset').allTextContents();
  return texts.map((t) => Number(t.replace('#', '')));
}

describe('sign in', () => {
  test('a wrong key, an agent key, then an admin key; the tenant and role are shown; sign out', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(fixture.server.url);
    await page.getByLabel('API key').fill('ork_not-a-real-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor({ timeout: WAIT_MS });

    const agentKey = await fixture.client.apiKeys.create({ name: 'some agent', role: 'agent' });
    await page.getByLabel('API key').fill(agentKey.secret);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'agent role' }).waitFor({ timeout: WAIT_MS });

    // The keyboard alone: the key field has the focus, Enter submits.
    await page.getByLabel('API key').fill('');
    await page.keyboard.type(fixture.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: WAIT_MS });
    const who = await fixture.client.whoami();
    assert.equal(await page.locator('.who .role').textContent(), 'admin');
    assert.ok((await page.locator('.who').textContent())?.includes(who.tenant.name));

    // A reload keeps the session (the key is in this tab's sessionStorage).
    await page.reload();
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: WAIT_MS });

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').waitFor();
    await page.reload();
    await page.getByLabel('API key').waitFor({ timeout: WAIT_MS });
    await context.close();
  });

  test('a viewer reads but is not offered to submit or cancel', async () => {
    const viewer = await fixture.client.apiKeys.create({ name: 'viewer', role: 'viewer' });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, viewer.secret);
    const problems = watchProblems(page);
    assert.equal(await page.locator('.who .role').textContent(), 'viewer');
    await page.getByRole('link', { name: 'Tasks', exact: true }).click();
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor({ timeout: WAIT_MS });
    await page.locator('table[aria-label="Tasks"], .empty').first().waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('link', { name: 'Submit a task' }).count(), 0);
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'viewer', steps: 1, delay_ms: 0 },
    });
    await page.goto(`${fixture.server.url}/tasks/${task.id}`);
    await waitForState(page, 'succeeded');
    assert.equal(await page.getByRole('button', { name: /cancel|retry/i }).count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('tasks', () => {
  test('submit from the form built from the input schema, with inline errors, and watch it stream to success', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [400] });
    await page.getByRole('link', { name: 'Tasks', exact: true }).click();
    await page.getByRole('link', { name: 'Submit a task' }).click();
    await page.getByLabel('Template').selectOption(REPORT_TEMPLATE.name);
    await page.getByLabel('Title').waitFor();

    // Checked in the page: a required field left empty, a number out of range.
    await page.getByLabel('Steps').fill('0');
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.locator('.field-error', { hasText: 'Required.' }).waitFor();
    await page.locator('.field-error', { hasText: 'Must be at least 1.' }).waitFor();
    assert.equal(await page.getByLabel('Title').getAttribute('aria-invalid'), 'true');

    // Checked by the server (multipleOf is not checked in the page): shown at its field.
    await page.getByLabel('Title').fill('Quarterly numbers');
    await page.getByLabel('Steps').fill('4');
    await page.getByLabel('Pages per section').fill('3');
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.locator('.field-error', { hasText: 'multiple of 2' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByLabel('Pages per section').getAttribute('aria-invalid'), 'true');

    await page.getByLabel('Pages per section').fill('2');
    await page.getByLabel('Pause per step (ms)').fill('300');
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.waitForURL(/\/tasks\/tsk_/, { timeout: WAIT_MS });
    const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop() ?? '');

    // Live: the progress bar moves and the output streams before the task ends.
    await page.locator('#task-progress').waitFor({ timeout: WAIT_MS });
    await waitForState(page, 'succeeded');
    assert.equal(await page.locator('#task-progress').getAttribute('max'), '4');
    assert.equal(await page.locator('#task-progress').getAttribute('value'), '4');
    const output = await page.getByRole('figure', { name: 'Streamed output' }).textContent();
    assert.equal(output?.split('\n').length, 4);
    assert.match(output ?? '', /## Quarterly numbers, section 4/);
    const result = await page.getByRole('figure', { name: 'Result' }).textContent();
    assert.deepEqual(JSON.parse(result ?? ''), { title: 'Quarterly numbers', sections: 4 });

    // The timeline is the task's event stream, gap-free, ending in succeeded.
    const task = await fixture.client.tasks.get(id);
    assert.equal(task.state, 'succeeded');
    const offsets = await timelineOffsets(page);
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => i + 1),
    );
    assert.equal(
      await page.locator('.timeline li').last().getAttribute('data-type'),
      'task.succeeded',
    );

    // The list shows it, and follows the state filter.
    await page.getByRole('link', { name: 'Tasks', exact: true }).click();
    await page.getByRole('link', { name: id }).waitFor({ timeout: WAIT_MS });
    await page.getByLabel('State').selectOption('failed');
    await page.getByRole('link', { name: id }).waitFor({ state: 'detached', timeout: WAIT_MS });
    await page.getByLabel('State').selectOption('succeeded');
    await page.getByRole('link', { name: id }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('cancel a running task from its page; retry it', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'long', steps: 500, delay_ms: 200 },
    });
    await page.goto(`${fixture.server.url}/tasks/${task.id}`);
    await waitForState(page, 'running');
    await page.locator('#task-progress').waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: 'Cancel task' }).click();
    await waitForState(page, 'cancelled');
    assert.equal((await fixture.client.tasks.get(task.id)).state, 'cancelled');
    const types = await page
      .locator('.timeline li')
      .evaluateAll((items) => items.map((li) => li.getAttribute('data-type')));
    assert.ok(types.includes('task.cancel_requested'));
    assert.equal(types.at(-1), 'task.cancelled');

    await page.getByRole('button', { name: 'Retry task' }).click();
    await waitForState(page, 'running');
    await fixture.client.tasks.cancel(task.id);
    await waitForState(page, 'cancelled');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a task that succeeds after a failed attempt shows its result, with the failure as history', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const task = await fixture.client.tasks.create({
      capabilities: ['reports'],
      input: { title: 'flaky', steps: 1, delay_ms: 0, fail_first: 'The first try timed out' },
      max_attempts: 2,
    });
    await page.goto(`${fixture.server.url}/tasks/${task.id}`);
    await waitForState(page, 'succeeded');
    // The server keeps the failed attempt's error on the task; it is not the outcome.
    assert.equal((await fixture.client.tasks.get(task.id)).error?.code, 'FLAKY');
    await page.getByRole('heading', { name: 'Result', level: 2 }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('.error-box').count(), 0);
    await page
      .getByRole('list', { name: 'Earlier attempts' })
      .getByText('Attempt 1 failed: FLAKY The first try timed out')
      .waitFor({ timeout: WAIT_MS });
    assert.match(
      (await page.getByRole('figure', { name: 'Result' }).textContent()) ?? '',
      /"sections": 1/,
    );

    // A failure shows its error, and what the agent added to it.
    const failing = await fixture.client.tasks.create({
      capabilities: ['reports'],
      input: { title: 'broken', steps: 1, fail: 'No data' },
    });
    await page.goto(`${fixture.server.url}/tasks/${failing.id}`);
    await waitForState(page, 'failed');
    await page.locator('.error-box', { hasText: 'REPORT_FAILED No data' }).waitFor();
    assert.match(
      (await page.getByRole('figure', { name: 'Error details' }).textContent()) ?? '',
      /"title": "broken"/,
    );
    assert.equal(await page.getByRole('list', { name: 'Earlier attempts' }).count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a task no connected agent can take says so, until an agent that can connects', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const task = await fixture.client.tasks.create({ capabilities: ['translation'] });
    await page.goto(`${fixture.server.url}/tasks/${task.id}`);
    await page
      .getByRole('status')
      .filter({ hasText: 'Waiting: no connected agent offers capability translation.' })
      .waitFor({ timeout: WAIT_MS });
    const agentKey = await fixture.client.apiKeys.create({ name: 'translator', role: 'agent' });
    const translator = new AgentWorker({
      url: fixture.server.url,
      apiKey: agentKey.secret,
      agentId: 'translator',
      capabilities: ['translation'],
      handler: () => 'bonjour',
      handleSignals: false,
    });
    await translator.start();
    try {
      await waitForState(page, 'succeeded');
      await page.getByRole('figure', { name: 'Result' }).getByText('"bonjour"').waitFor();
      assert.equal(await page.getByText(/^Waiting:/).count(), 0);
    } finally {
      await translator.stop();
    }
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a reload in the middle of the stream resumes after the last event shown', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'resumed', steps: 12, delay_ms: 250 },
    });
    await page.goto(`${fixture.server.url}/tasks/${task.id}`);
    await page
      .locator('.timeline li[data-type="task.progress"]')
      .first()
      .waitFor({ timeout: WAIT_MS });
    const requests: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/events')) requests.push(r.url());
    });
    await page.reload();
    await waitForState(page, 'succeeded');
    // The stream after the reload asked only for what came after the events kept.
    assert.equal(requests.length >= 1, true);
    const after = Number(new URL(requests[0] ?? '').searchParams.get('after'));
    assert.ok(after > 0, `resumed after ${after}`);
    const offsets = await timelineOffsets(page);
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => i + 1),
    );
    const finished: Task = await fixture.client.tasks.get(task.id);
    assert.equal(finished.state, 'succeeded');
    assert.equal(
      (await page.getByRole('figure', { name: 'Streamed output' }).textContent())?.split('\n')
        .length,
      12,
    );
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('errors', () => {
  test('a record that does not exist shows the API’s message and a retry, not a blank page', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [404] });
    for (const [path, title] of [
      ['/tasks/tsk_missing', 'Task'],
      ['/agents/missing-agent', 'Agent missing-agent'],
      ['/templates/missing-template', 'Template missing-template'],
    ] as const) {
      await page.goto(fixture.server.url + path);
      await page.getByRole('heading', { name: title, exact: true }).waitFor({ timeout: WAIT_MS });
      await page
        .getByRole('alert')
        .filter({ hasText: /does not exist|not found/i })
        .waitFor({
          timeout: WAIT_MS,
        });
      await page.getByRole('button', { name: 'Try again' }).waitFor();
    }
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('templates', () => {
  test('create with inline schema errors, edit into a new version, diff, roll back; a stale edit is refused', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [400, 412] });
    await page.getByRole('link', { name: 'Templates', exact: true }).click();
    await page.getByRole('link', { name: 'New template' }).click();
    await page.getByLabel('Name').fill('summarize');
    await page.getByLabel('Description').fill('Summarizes a document.');
    await page.getByLabel('Capabilities').fill('llm');
    // Not JSON: refused in the page. Not a valid schema: refused by the server, shown there.
    await page.getByLabel('Input schema (JSON Schema)').fill('{"type": ');
    await page.getByRole('button', { name: 'Create template' }).click();
    await page.locator('#template-input_schema-error', { hasText: 'Not valid JSON' }).waitFor();
    await page.getByLabel('Input schema (JSON Schema)').fill('{"type": "nope"}');
    await page.getByRole('button', { name: 'Create template' }).click();
    await page.locator('#template-input_schema-error').waitFor({ timeout: WAIT_MS });
    assert.equal(
      await page.getByLabel('Input schema (JSON Schema)').getAttribute('aria-invalid'),
      'true',
    );
    await page
      .getByLabel('Input schema (JSON Schema)')
      .fill('{"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}');
    await page.getByRole('button', { name: 'Create template' }).click();
    await page.getByRole('heading', { name: 'Template summarize' }).waitFor({ timeout: WAIT_MS });

    // Edit: a new version.
    await page.getByRole('link', { name: 'Edit' }).click();
    await page.getByLabel('Description').fill('Summarizes a web page.');
    await page.getByLabel('Timeout (ms)').fill('120000');
    await page.getByRole('button', { name: 'Save as a new version' }).click();
    await page.getByRole('heading', { name: 'Template summarize' }).waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: 'Roll back to v1' }).waitFor({ timeout: WAIT_MS });
    assert.equal((await fixture.client.templates.get('summarize')).version, 2);

    // The diff from v1 to the latest shows what the edit changed, and nothing else.
    await page.getByRole('button', { name: 'v1', exact: true }).click();
    const diff = page.getByRole('figure', { name: 'Changes from v1 to v2' });
    await diff.waitFor({ timeout: WAIT_MS });
    const removed = await diff.locator('.diff-removed').allTextContents();
    const added = await diff.locator('.diff-added').allTextContents();
    assert.deepEqual(removed.map((l) => l.trim()).sort(), [
      '-   "default_timeout_ms": 300000,',
      '-   "description": "Summarizes a document.",',
    ]);
    assert.deepEqual(added.map((l) => l.trim()).sort(), [
      '+   "default_timeout_ms": 120000,',
      '+   "description": "Summarizes a web page.",',
    ]);

    // Roll back: latest points to v1 again; no version is created.
    await page.getByRole('button', { name: 'Roll back to v1' }).click();
    await page.getByRole('status').filter({ hasText: 'latest now points to version 1' }).waitFor({
      timeout: WAIT_MS,
    });
    const rolledBack = await fixture.client.templates.get('summarize');
    assert.equal(rolledBack.version, 1);
    assert.equal(rolledBack.highest_version, 2);
    assert.equal(rolledBack.description, 'Summarizes a document.');
    await page.getByRole('button', { name: 'Roll back to v2' }).waitFor();

    // Someone else saves while this page edits: the page's save is refused, not merged.
    await page.getByRole('link', { name: 'Edit' }).click();
    await page.getByLabel('Description').fill('Mine.');
    await fixture.client.templates.update('summarize', {
      description: 'Theirs.',
      capabilities: ['llm'],
    });
    await page.getByRole('button', { name: 'Save as a new version' }).click();
    await page
      .getByRole('alert')
      .filter({ hasText: 'Someone else changed this template' })
      .waitFor({
        timeout: WAIT_MS,
      });
    assert.equal((await fixture.client.templates.get('summarize')).description, 'Theirs.');
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('config', () => {
  test('edit a key in one browser and see another update live; CAS conflicts; history, diff and revert', async () => {
    const { client } = fixture;
    await client.config.set('app/db/pool_size', 10, { env: 'prod' });
    await client.config.set('app/db/url', 'postgres://db/app', { env: 'prod' });
    await client.config.set('app/feature/search', true, { env: 'prod' });
    const watcherContext = await browser.newContext();
    const editorContext = await browser.newContext();
    const watcher = await signIn(watcherContext, fixture.server.url, fixture.adminKey);
    const editor = await signIn(editorContext, fixture.server.url, fixture.adminKey);
    const watcherProblems = watchProblems(watcher);
    const editorProblems = watchProblems(editor, { expectedStatuses: [412] });
    const shownValue = (key: string) => watcher.locator(`[data-value-of="${key}"]`);

    // The tree by prefix, in one environment.
    await watcher.goto(`${fixture.server.url}/config?env=prod&prefix=app/`);
    await shownValue('app/db/pool_size').waitFor({ timeout: WAIT_MS });
    assert.equal(await shownValue('app/db/pool_size').textContent(), '10');
    assert.equal(
      await watcher
        .locator('.tree .folder')
        .allTextContents()
        .then((t) => t.sort().join()),
      'db/,feature/',
    );

    // The other browser edits the key; the first shows the new value without a reload.
    await editor.goto(`${fixture.server.url}/config/key?env=prod&key=app/db/pool_size`);
    await editor.getByLabel('Value (JSON)').waitFor({ timeout: WAIT_MS });
    await editor.getByLabel('Value (JSON)').fill('20');
    await editor.getByLabel('Reason (kept in the history)').fill('more traffic');
    await editor.getByRole('button', { name: 'Save over version 1' }).click();
    await editor.getByRole('status').filter({ hasText: 'Saved.' }).waitFor({ timeout: WAIT_MS });
    await watcher
      .locator('[data-value-of="app/db/pool_size"]', { hasText: '20' })
      .waitFor({ timeout: WAIT_MS });
    assert.match((await watcher.locator('.config-key.changed').textContent()) ?? '', /pool_size/);
    // A new key appears too, and a deleted one goes.
    await client.config.set('app/db/timeout_ms', 5000, { env: 'prod' });
    await shownValue('app/db/timeout_ms').waitFor({ timeout: WAIT_MS });
    await client.config.delete('app/feature/search', { env: 'prod' });
    await shownValue('app/feature/search').waitFor({ state: 'detached', timeout: WAIT_MS });

    // The watcher opens the key; the editor starts a new draft from version 2; a change made
    // elsewhere meanwhile shows on both pages live.
    await watcher.goto(`${fixture.server.url}/config/key?env=prod&key=app/db/pool_size`);
    await watcher.locator('#config-current-value', { hasText: '20' }).waitFor({ timeout: WAIT_MS });
    await editor.getByLabel('Value (JSON)').fill('25');
    await client.config.set('app/db/pool_size', 30, { env: 'prod', reason: 'from the SDK' });
    for (const page of [watcher, editor]) {
      await page.getByRole('status').filter({ hasText: 'Changed to version 3' }).waitFor({
        timeout: WAIT_MS,
      });
      await page.locator('#config-current-value', { hasText: '30' }).waitFor({ timeout: WAIT_MS });
    }
    // The draft is kept, and saving it is compared with the version it started from: 412.
    assert.equal(await editor.getByLabel('Value (JSON)').inputValue(), '25');
    await editor.getByRole('button', { name: 'Save over version 2' }).click();
    await editor.getByRole('alert').filter({ hasText: 'Someone else changed this key' }).waitFor({
      timeout: WAIT_MS,
    });
    assert.equal((await client.config.get('app/db/pool_size', { env: 'prod' })).value, 30);

    // History with reasons, a diff against version 1, and a revert to it.
    await editor.reload();
    await editor.getByRole('list', { name: 'History' }).waitFor({ timeout: WAIT_MS });
    const history = await editor.getByRole('list', { name: 'History' }).textContent();
    assert.match(history ?? '', /more traffic/);
    assert.match(history ?? '', /from the SDK/);
    await editor.getByRole('button', { name: 'v1', exact: true }).click();
    const diff = editor.getByRole('figure', { name: 'Changes from v1 to the current value' });
    assert.deepEqual(await diff.locator('.diff-removed').allTextContents(), ['- 10\n']);
    assert.deepEqual(await diff.locator('.diff-added').allTextContents(), ['+ 30\n']);
    await editor.getByRole('button', { name: 'Revert to v1' }).click();
    await editor.getByRole('status').filter({ hasText: 'Reverted' }).waitFor({ timeout: WAIT_MS });
    await watcher.locator('#config-current-value', { hasText: '10' }).waitFor({ timeout: WAIT_MS });
    const reverted = await client.config.get('app/db/pool_size', { env: 'prod' });
    assert.equal(reverted.value, 10);
    assert.equal(reverted.version, 4);
    assert.deepEqual([...watcherProblems, ...editorProblems], []);
    await watcherContext.close();
    await editorContext.close();
  });

  test('the environment field offers the environments that hold keys, with how many; a new name still works', async () => {
    // A tenant of its own, so that the environments are exactly these.
    const tenant = await fixture.client.tenants.create({ id: 'envs', name: 'Environments' });
    const client = new Orchestra({ url: fixture.server.url, apiKey: tenant.admin_key.secret });
    await client.config.set('app/name', 'blue app', { env: 'blue' });
    await client.config.set('app/size', 3, { env: 'blue' });
    await client.config.set('app/name', 'green app', { env: 'green' });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, tenant.admin_key.secret);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Config', exact: true }).click();

    const offered = page.getByRole('navigation', { name: 'Environments with keys' });
    await offered.getByRole('link', { name: 'green' }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(
      (await offered.getByRole('listitem').allTextContents()).map((t) => t.replace(/\s+/g, ' ')),
      ['blue 2 keys', 'green 1 key'],
    );
    // The field suggests the same names (its datalist), with their key counts.
    const suggested = await page
      .locator('#config-env-options option')
      .evaluateAll((options) =>
        options.map((o) => [(o as HTMLOptionElement).value, (o as HTMLOptionElement).label]),
      );
    assert.deepEqual(suggested, [
      ['blue', '2 keys'],
      ['green', '1 key'],
    ]);
    assert.equal(
      await page.getByLabel('Environment', { exact: true }).getAttribute('list'),
      'config-env-options',
    );

    await offered.getByRole('link', { name: 'green' }).click();
    await page.locator('[data-value-of="app/name"]', { hasText: 'green app' }).waitFor({
      timeout: WAIT_MS,
    });
    assert.equal(new URL(page.url()).searchParams.get('env'), 'green');
    assert.equal(
      await offered.getByRole('link', { name: 'green' }).getAttribute('aria-current'),
      'page',
    );

    // A name no key uses yet is still accepted, to start an environment.
    await page.getByLabel('Environment', { exact: true }).fill('purple');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.getByText('No keys yet in purple.').waitFor({ timeout: WAIT_MS });
    assert.equal(new URL(page.url()).searchParams.get('env'), 'purple');
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('sessions, topics and services', () => {
  test('a session shows every event of its tasks, with links to them', async () => {
    const { client } = fixture;
    const session = await client.sessions.create({ name: 'weekly' });
    const tasks: Task[] = [];
    for (const title of ['first', 'second']) {
      const task = await client.tasks.create({
        template: REPORT_TEMPLATE.name,
        session_id: session.id,
        input: { title, steps: 1, delay_ms: 0 },
      });
      tasks.push(await client.tasks.wait(task.id, { timeoutMs: WAIT_MS }));
    }
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Sessions', exact: true }).click();
    await page.getByRole('link', { name: session.id }).click();
    await page.getByRole('heading', { name: 'Session weekly' }).waitFor({ timeout: WAIT_MS });
    const history = page.getByRole('list', { name: 'Session history' });
    await history.locator('li[data-type="task.succeeded"]').nth(1).waitFor({ timeout: WAIT_MS });
    for (const task of tasks) {
      assert.ok((await history.getByRole('link', { name: task.id }).count()) > 0, task.id);
    }
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('create a session, submit a task in it, delete it once nothing runs', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [409] });
    await page.getByRole('link', { name: 'Sessions', exact: true }).click();
    await page.getByText('New session').click();
    await page.getByLabel('Name (optional)').fill('console chat');
    await page.getByLabel('A task submitted while another is unfinished').selectOption('reject');
    await page.getByRole('button', { name: 'Create session' }).click();
    await page.getByRole('heading', { name: 'Session console chat' }).waitFor({ timeout: WAIT_MS });
    const sessionId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop() ?? '');
    const session = await fixture.client.sessions.get(sessionId);
    assert.equal(session.name, 'console chat');
    assert.equal(session.multitask_strategy, 'reject');

    // The submit form comes with the session filled in.
    await page.getByRole('link', { name: 'Submit a task in it' }).click();
    assert.equal(await page.getByLabel('Session').inputValue(), sessionId);
    await page.getByLabel('Template').selectOption(REPORT_TEMPLATE.name);
    await page.getByLabel('Title').fill('long answer');
    await page.getByLabel('Steps').fill('400');
    await page.getByLabel('Pause per step (ms)').fill('100');
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.waitForURL(/\/tasks\/tsk_/, { timeout: WAIT_MS });
    const taskId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop() ?? '');
    assert.equal((await fixture.client.tasks.get(taskId)).session_id, sessionId);

    // Deleting is refused while the task runs, with the API's reason; then it goes.
    await page.goto(`${fixture.server.url}/sessions/${sessionId}`);
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('button', { name: 'Delete it with its tasks' }).click();
    await page
      .getByRole('alert')
      .filter({ hasText: /unfinished|busy/i })
      .waitFor({ timeout: WAIT_MS });
    await fixture.client.tasks.cancel(taskId);
    await fixture.client.tasks.wait(taskId, { timeoutMs: WAIT_MS });
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('button', { name: 'Delete it with its tasks' }).click();
    await page.getByRole('heading', { name: 'Sessions', level: 1 }).waitFor({ timeout: WAIT_MS });
    assert.equal(await rejectionStatus(() => fixture.client.sessions.get(sessionId)), 404);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('tail a topic in two browsers and publish from one', async () => {
    const { client } = fixture;
    await client.topics.publish('chat.room-1', { text: 'before' });
    const contexts = [await browser.newContext(), await browser.newContext()];
    const pages: Page[] = [];
    const problems: string[][] = [];
    for (const context of contexts) {
      const page = await signIn(context, fixture.server.url, fixture.adminKey);
      problems.push(watchProblems(page));
      await page.getByRole('link', { name: 'Topics', exact: true }).click();
      await page.getByRole('link', { name: 'chat.room-1' }).click();
      await page
        .locator('li[data-offset="1"]', { hasText: 'before' })
        .waitFor({ timeout: WAIT_MS });
      pages.push(page);
    }
    const [first, second] = pages as [Page, Page];
    await first.getByLabel('Message (JSON)').fill('{"text": "from the console"}');
    await first.getByLabel('Event name (optional)').fill('said');
    await first.getByRole('button', { name: 'Publish' }).click();
    // The click only starts the console's request: publishing from the SDK before it is
    // stored would take offset 2 from it.
    await first
      .locator('li[data-offset="2"]', { hasText: 'from the console' })
      .waitFor({ timeout: WAIT_MS });
    await client.topics.publish('chat.room-1', { text: 'from the SDK' });
    for (const page of pages) {
      await page.locator('li[data-offset="3"]', { hasText: 'from the SDK' }).waitFor({
        timeout: WAIT_MS,
      });
      const offsets = await page
        .locator('.timeline li')
        .evaluateAll((items) => items.map((li) => Number(li.getAttribute('data-offset'))));
      assert.deepEqual(offsets, [1, 2, 3]);
    }
    assert.match(
      (await second.locator('li[data-offset="2"]').textContent()) ?? '',
      /said.*from the console/,
    );
    assert.deepEqual(problems.flat(), []);
    for (const context of contexts) await context.close();
  });

  test('a system topic offers no publish form and says why; a user topic does', async () => {
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'system topic', steps: 1, delay_ms: 0 },
    });
    await fixture.client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
    await fixture.client.config.set('topics/check', true);
    await fixture.client.topics.publish('chat.system-check', { text: 'hello' });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    for (const name of ['agents', `tasks.${task.id}`, 'config.default']) {
      await page.goto(`${fixture.server.url}/topics/${encodeURIComponent(name)}`);
      await page.getByRole('heading', { name: `Topic ${name}` }).waitFor({ timeout: WAIT_MS });
      await page.getByText('Only Orchestra publishes on system topics').waitFor({
        timeout: WAIT_MS,
      });
      assert.equal(await page.getByRole('form', { name: 'Publish' }).count(), 0, name);
      assert.equal(await page.getByLabel('Message (JSON)').count(), 0, name);
      // Still there to read: the task's own events.
      if (name.startsWith('tasks.')) {
        await page
          .locator('.timeline li', { hasText: 'task.succeeded' })
          .waitFor({ timeout: WAIT_MS });
      }
    }
    await page.goto(`${fixture.server.url}/topics/${encodeURIComponent('chat.system-check')}`);
    await page.getByRole('form', { name: 'Publish' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByText('Only Orchestra publishes on system topics').count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('services list their instances with health, and follow registrations live', async () => {
    const { client } = fixture;
    await client.services.register('search', 'search-1', { address: '127.0.0.1', port: 9200 });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Services', exact: true }).click();
    await page.getByRole('link', { name: 'search' }).click();
    await page.locator('tr[data-instance="search-1"]').waitFor({ timeout: WAIT_MS });
    assert.match(
      (await page.locator('tr[data-instance="search-1"]').textContent()) ?? '',
      /127\.0\.0\.1:9200/,
    );
    await client.services.register('search', 'search-2', { address: '127.0.0.1', port: 9201 });
    await page.locator('tr[data-instance="search-2"]').waitFor({ timeout: WAIT_MS });
    await client.services.deregister('search', 'search-1');
    await page
      .locator('tr[data-instance="search-1"]')
      .waitFor({ state: 'detached', timeout: WAIT_MS });

    // Deregistering from the page asks once more.
    const row = page.locator('tr[data-instance="search-2"]');
    await row.getByRole('button', { name: 'Deregister search-2' }).click();
    // Keep comes first and takes the focus: a double click does not act.
    const focused = () => page.evaluate(() => document.activeElement?.textContent ?? '');
    assert.equal(await focused(), 'Keep');
    await row.getByRole('button', { name: 'Keep' }).click();
    assert.equal(await focused(), 'Deregister');
    assert.equal((await client.services.instances('search', { all: true })).instances.length, 1);
    await row.getByRole('button', { name: 'Deregister search-2' }).click();
    await row.getByRole('button', { name: 'Deregister search-2' }).click();
    await row.waitFor({ state: 'detached', timeout: WAIT_MS });
    await page.getByText('No instance is registered now.').waitFor({ timeout: WAIT_MS });
    assert.equal((await client.services.instances('search', { all: true })).instances.length, 0);
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('overview', () => {
  /** The number a card shows for `label`, once it is `expected` (live updates take a moment). */
  async function figureBecomes(page: Page, label: string, expected: string): Promise<void> {
    const value = page
      .locator('.figure', {
        has: page.locator('.figure-label', { hasText: new RegExp(`^${label}$`) }),
      })
      .locator('.figure-value');
    const until = Date.now() + WAIT_MS;
    let shown: string | null = null;
    while (Date.now() < until) {
      shown = await value.textContent();
      if (shown === expected) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.fail(`the overview shows ${shown} ${label}, expected ${expected}`);
  }

  test('agents, tasks now, throughput, latency, failures and nodes, following tasks live', async () => {
    const context = await browser.newContext();
    // Signing in lands on the overview.
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const { client } = fixture;
    const quick = await client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'overview quick', steps: 1, delay_ms: 0 },
    });
    await client.tasks.wait(quick.id, { timeoutMs: WAIT_MS });
    let stats = await client.stats();
    const connected =
      stats.agents.by_status.online + stats.agents.by_status.busy + stats.agents.by_status.draining;
    await figureBecomes(page, 'connected', String(connected));

    // A task that fails appears among the recent failures, and in the counts, without a reload.
    const failed = await client.tasks.create({
      capabilities: ['reports'],
      input: { title: 'failing', steps: 1, fail: 'The data source is offline' },
    });
    await client.tasks.wait(failed.id, { timeoutMs: WAIT_MS });
    const failure = page.locator('.failures li', { hasText: failed.id });
    await failure.waitFor({ timeout: WAIT_MS });
    assert.match((await failure.textContent()) ?? '', /REPORT_FAILED The data source is offline/);
    stats = await client.stats();
    const ended = stats.tasks.finished;
    await figureBecomes(page, 'failed', String(ended.failed + ended.dead + ended.timed_out));

    // A long task shows as running, and the slots in use follow.
    const running = await client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'overview', steps: 400, delay_ms: 100 },
    });
    const runningBy = Date.now() + WAIT_MS;
    while ((await client.tasks.get(running.id)).state !== 'running') {
      assert.ok(Date.now() < runningBy, 'the long task never started');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    stats = await client.stats();
    await figureBecomes(page, 'running', String(stats.tasks.active.running));
    await figureBecomes(page, 'slots in use', `${stats.agents.slots_used} / ${stats.agents.slots}`);

    // The throughput chart, and its numbers as a table: one row per minute of the window.
    const chart = page.locator('figure.chart', { hasText: 'Tasks ended per minute' });
    assert.equal(await chart.getByRole('img', { name: /Tasks ended per minute/ }).count(), 1);
    await chart.getByText('Show as a table').click();
    assert.equal(await chart.locator('tbody tr').count(), 15);
    // The page reloads live and a minute may roll over: compare until both agree.
    const agreeBy = Date.now() + WAIT_MS;
    for (;;) {
      const cells = await chart.locator('tbody tr td:nth-of-type(1)').allTextContents();
      const shown = cells.reduce((n, cell) => n + (Number(cell) || 0), 0);
      stats = await client.stats();
      if (shown === stats.tasks.finished.succeeded) break;
      assert.ok(
        Date.now() < agreeBy,
        `the chart shows ${shown} succeeded, the API says ${stats.tasks.finished.succeeded}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(stats.tasks.finished.succeeded > 0);
    await page.locator('dl[aria-label="Latency"]').waitFor({ timeout: WAIT_MS });

    // A longer window, kept in the address.
    await page.getByLabel('Window', { exact: true }).selectOption('60');
    await page.waitForURL(/\/overview\?minutes=60$/);
    // The table stays open across the change.
    await chart.locator('tbody tr').nth(59).waitFor({ timeout: WAIT_MS });
    assert.equal(await chart.locator('tbody tr').count(), 60);

    // This node and its dependencies; the node list, for a system admin.
    const ready = await client.ready();
    const health = page.getByRole('region', { name: 'Nodes and health' });
    await health.getByText(ready.instance_id).first().waitFor({ timeout: WAIT_MS });
    assert.match((await health.textContent()) ?? '', /is ready/);
    await health.getByRole('table', { name: 'Nodes' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await health.getByRole('table', { name: 'Nodes' }).locator('tbody tr').count(), 1);

    await client.tasks.cancel(running.id);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('another tenant sees only its own figures and not the nodes', async () => {
    const { admin_key } = await fixture.client.tenants.create({ id: 'console-overview' });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, admin_key.secret);
    const problems = watchProblems(page);
    await figureBecomes(page, 'connected', '0');
    await figureBecomes(page, 'submitted', '0');
    await page.getByText('No task has failed.').waitFor({ timeout: WAIT_MS });
    await page.getByText('No task succeeded in this window.').first().waitFor();
    await page.getByText("The list of the cluster's nodes is shown to system admins.").waitFor({
      timeout: WAIT_MS,
    });
    assert.equal(await page.getByRole('table', { name: 'Nodes' }).count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('API keys', () => {
  test('an admin creates a key, sees its secret once, and revokes it; the key stops working', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'API keys', exact: true }).click();
    await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor({ timeout: WAIT_MS });

    // The name is required, said at the field.
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.locator('#key-name-error', { hasText: 'Required' }).waitFor();
    assert.equal(
      await page.getByLabel('Name', { exact: true }).getAttribute('aria-invalid'),
      'true',
    );

    await page.getByLabel('Name', { exact: true }).fill('console reader');
    await page.getByLabel('Role').selectOption('viewer');
    await page.getByLabel('Expires').selectOption('30');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secretField = page.getByLabel('Secret');
    await secretField.waitFor({ timeout: WAIT_MS });
    const secret = await secretField.inputValue();
    assert.match(secret, /^ork_/);
    const created = (await fixture.client.apiKeys.list({ role: 'viewer' })).items.find(
      (k) => k.name === 'console reader',
    );
    assert.ok(created);
    assert.ok(created.expires_at !== null);
    const days = (Date.parse(created.expires_at) - Date.now()) / 86_400_000;
    assert.ok(days > 29 && days <= 30, `expires in ${days} days`);
    const row = page.locator('tbody tr', { hasText: 'console reader' });
    await row.waitFor({ timeout: WAIT_MS });
    assert.match((await row.textContent()) ?? '', /viewer/);
    // Shown once: Done hides it, and nothing on the page shows it again.
    await page.getByRole('button', { name: 'Done' }).click();
    assert.equal(await page.getByLabel('Secret').count(), 0);
    assert.equal(await page.getByText(secret).count(), 0);

    // The new key signs in, as a viewer, who has no API keys section.
    const readerContext = await browser.newContext();
    const reader = await signIn(readerContext, fixture.server.url, secret);
    assert.equal(await reader.locator('.who .role').textContent(), 'viewer');
    assert.equal(await reader.getByRole('link', { name: 'API keys', exact: true }).count(), 0);
    await reader.goto(`${fixture.server.url}/keys`);
    await reader.getByText('Only admins manage API keys.').waitFor({ timeout: WAIT_MS });

    // Revoking asks once more, then the key is refused.
    await row.getByRole('button', { name: 'Revoke console reader' }).click();
    await row.getByRole('button', { name: 'Revoke console reader' }).click();
    await row.waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await fixture.client.apiKeys.get(created.id)).status, 'revoked');
    await page.getByLabel('Show revoked keys').check();
    await page
      .locator('tbody tr', { hasText: 'console reader' })
      .locator('.badge', { hasText: 'revoked' })
      .waitFor({ timeout: WAIT_MS });
    await reader.reload();
    await reader.getByRole('alert').filter({ hasText: 'not valid' }).waitFor({ timeout: WAIT_MS });

    assert.deepEqual(problems, []);
    await readerContext.close();
    await context.close();
  });
});

describe('secrets', () => {
  test('an admin creates and replaces a secret with a masked field, never sees its value again, and deletes it; a viewer only reads', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Secrets', exact: true }).click();
    await page.getByRole('heading', { name: 'Secrets', level: 1 }).waitFor({ timeout: WAIT_MS });

    // Checked at the fields before anything is sent.
    await page.getByLabel('Name', { exact: true }).fill('not-a-name');
    await page.getByRole('button', { name: 'Save secret' }).click();
    await page.locator('#secret-name-error').waitFor({ timeout: WAIT_MS });
    await page.locator('#secret-value-error', { hasText: 'Required' }).waitFor();

    const value = `console-value-${Date.now()}`;
    const field = page.getByLabel('Value', { exact: true });
    assert.equal(await field.getAttribute('type'), 'password');
    await page.getByLabel('Name', { exact: true }).fill('CONSOLE_TOKEN');
    await field.fill(value);
    await page.getByLabel('Description (optional)').fill('from the console');
    await page.getByRole('button', { name: 'Save secret' }).click();
    await page
      .getByRole('status')
      .filter({ hasText: 'Created CONSOLE_TOKEN, version 1.' })
      .waitFor({
        timeout: WAIT_MS,
      });
    assert.equal(await field.inputValue(), '', 'the value field is cleared once saved');
    const row = page.locator('tbody tr', { hasText: 'CONSOLE_TOKEN' });
    await row.waitFor({ timeout: WAIT_MS });
    assert.match((await row.textContent()) ?? '', /from the console/);

    // Replace: the row fills in the name; the next version.
    await row.getByRole('button', { name: 'Replace CONSOLE_TOKEN' }).click();
    assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'CONSOLE_TOKEN');
    await field.fill(`${value}-2`);
    await page.getByRole('button', { name: 'Save secret' }).click();
    await page
      .getByRole('status')
      .filter({ hasText: 'Replaced CONSOLE_TOKEN, version 2.' })
      .waitFor({ timeout: WAIT_MS });
    assert.equal((await fixture.client.secrets.get('CONSOLE_TOKEN')).version, 2);
    assert.ok(!(await page.content()).includes(value), 'the page holds the value');

    // A viewer reads the list, with no form and no buttons.
    const viewer = await fixture.client.apiKeys.create({ name: 'secrets viewer', role: 'viewer' });
    const readerContext = await browser.newContext();
    const reader = await signIn(readerContext, fixture.server.url, viewer.secret);
    await reader.goto(`${fixture.server.url}/secrets`);
    await reader.locator('tbody tr', { hasText: 'CONSOLE_TOKEN' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await reader.getByRole('button', { name: 'Save secret' }).count(), 0);
    assert.equal(await reader.getByRole('button', { name: 'Delete CONSOLE_TOKEN' }).count(), 0);

    // Deleting asks once more.
    await row.getByRole('button', { name: 'Delete CONSOLE_TOKEN' }).click();
    await row.getByRole('button', { name: 'Delete CONSOLE_TOKEN' }).click();
    await row.waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await fixture.client.secrets.list({ name_prefix: 'CONSOLE_' })).items.length, 0);

    assert.deepEqual(problems, []);
    await readerContext.close();
    await context.close();
  });
});

describe('tenants', () => {
  test('a system admin creates a tenant and gets its first admin key once; that admin sees no tenants section', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [409] });
    await page.getByRole('link', { name: 'Tenants', exact: true }).click();
    await page.getByRole('heading', { name: 'Tenants', level: 1 }).waitFor({ timeout: WAIT_MS });

    // A malformed id is refused at the field, before the server; a taken one by the server.
    await page.getByLabel('Id', { exact: true }).fill('Not Valid');
    await page.getByRole('button', { name: 'Create tenant' }).click();
    await page.locator('#tenant-id-error', { hasText: 'lowercase' }).waitFor();
    await page.getByLabel('Id', { exact: true }).fill('default');
    await page.getByRole('button', { name: 'Create tenant' }).click();
    await page.locator('#tenant-id-error', { hasText: /exists/ }).waitFor({ timeout: WAIT_MS });

    await page.getByLabel('Id', { exact: true }).fill('console-acme');
    await page.getByLabel('Name (optional)').fill('Acme');
    await page.getByRole('button', { name: 'Create tenant' }).click();
    const secret = await page.getByLabel('Secret').inputValue({ timeout: WAIT_MS });
    assert.match(secret, /^ork_/);
    await page.locator('tbody tr', { hasText: 'console-acme' }).waitFor({ timeout: WAIT_MS });
    assert.equal(
      (await fixture.client.tenants.list({ limit: 200 })).items.find((t) => t.id === 'console-acme')
        ?.name,
      'Acme',
    );

    const acmeContext = await browser.newContext();
    const acme = await signIn(acmeContext, fixture.server.url, secret);
    assert.match((await acme.locator('.who').textContent()) ?? '', /Acme/);
    assert.equal(await acme.locator('.who .role').textContent(), 'admin');
    assert.equal(await acme.getByRole('link', { name: 'Tenants', exact: true }).count(), 0);
    assert.equal(await acme.getByRole('link', { name: 'API keys', exact: true }).count(), 1);
    await acme.goto(`${fixture.server.url}/tenants`);
    await acme
      .getByText('Only admins of the system tenant manage tenants.')
      .waitFor({ timeout: WAIT_MS });

    assert.deepEqual(problems, []);
    await acmeContext.close();
    await context.close();
  });

  test('a system admin gives a tenant its own limits, sees bad ones refused at the field, and gives one back to the setting', async () => {
    await fixture.client.tenants.create({ id: 'console-limited' });
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page, { expectedStatuses: [400] });
    await page.getByRole('link', { name: 'Tenants', exact: true }).click();
    await page.getByRole('link', { name: 'console-limited' }).click();
    await page
      .getByRole('heading', { name: 'Tenant console-limited', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    // An empty field follows the setting, whose value it shows as a placeholder.
    const topics = page.getByLabel('max_topics', { exact: true });
    assert.equal(await topics.inputValue(), '');
    assert.equal(await topics.getAttribute('placeholder'), '10000');

    await topics.fill('25');
    await page.getByLabel('task_input_max_bytes', { exact: true }).fill('10');
    await page.getByRole('button', { name: 'Save limits' }).click();
    // The server's bounds are named at the field; nothing was saved.
    await page
      .locator('#limit-task_input_max_bytes-error', { hasText: /1024/ })
      .waitFor({ timeout: WAIT_MS });
    assert.deepEqual((await fixture.client.tenants.get('console-limited')).limit_overrides, {});

    await page.getByLabel('task_input_max_bytes', { exact: true }).fill('2097152');
    await page.getByRole('button', { name: 'Save limits' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved' }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual((await fixture.client.tenants.get('console-limited')).limit_overrides, {
      max_topics: 25,
      task_input_max_bytes: 2097152,
    });

    // Emptying a field gives the limit back to the server's setting.
    // (The placeholder shows the setting only for a field that follows it.)
    assert.equal(
      await page.getByLabel('max_topics', { exact: true }).getAttribute('placeholder'),
      '',
    );
    await page.getByLabel('max_topics', { exact: true }).fill('');
    await page.getByRole('button', { name: 'Save limits' }).click();
    await page.locator('#limit-max_topics[placeholder="10000"]').waitFor({ timeout: WAIT_MS });
    const back = await fixture.client.tenants.get('console-limited');
    assert.deepEqual(back.limit_overrides, { task_input_max_bytes: 2097152 });
    assert.equal(back.limits.max_topics, 10000);
    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('removing things', () => {
  test('delete a template, forget an offline agent, delete a topic; each asks once more', async () => {
    const { client } = fixture;
    await client.templates.create({ name: 'throwaway', capabilities: ['nothing'] });
    const agentKey = await client.apiKeys.create({ name: 'short-lived agent', role: 'agent' });
    const worker = new AgentWorker({
      url: fixture.server.url,
      apiKey: agentKey.secret,
      agentId: 'forget-me',
      capabilities: ['nothing'],
      handler: () => null,
      handleSignals: false,
    });
    await worker.start();
    await worker.stop();
    await client.topics.publish('scratch.notes', { text: 'draft' });

    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);

    await page.goto(`${fixture.server.url}/templates/throwaway`);
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('button', { name: 'Keep' }).click();
    assert.equal((await client.templates.get('throwaway')).name, 'throwaway');
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('button', { name: 'Delete it and all its versions' }).click();
    await page.getByRole('heading', { name: 'Templates', level: 1 }).waitFor({ timeout: WAIT_MS });
    assert.equal(await rejectionStatus(() => client.templates.get('throwaway')), 404);

    await page.goto(`${fixture.server.url}/agents/forget-me`);
    await page.locator('.facts .badge', { hasText: 'offline' }).waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: 'Forget', exact: true }).click();
    await page.getByRole('button', { name: 'Forget this agent' }).click();
    await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor({ timeout: WAIT_MS });
    assert.equal(await rejectionStatus(() => client.agents.get('forget-me')), 404);
    // A connected agent is drained, not forgotten.
    await page.goto(`${fixture.server.url}/agents/reporter-1`);
    await page.getByRole('button', { name: 'Drain' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('button', { name: 'Forget', exact: true }).count(), 0);

    await page.goto(`${fixture.server.url}/topics/scratch.notes`);
    await page.getByText('"draft"').first().waitFor({ timeout: WAIT_MS });
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByRole('button', { name: 'Delete it and its history' }).click();
    await page.getByRole('heading', { name: 'Topics', level: 1 }).waitFor({ timeout: WAIT_MS });
    const left = (await client.topics.list()).items.map((t) => t.name);
    assert.ok(!left.includes('scratch.notes'), left.join(', '));
    // The server's own topics have no delete.
    await page.goto(`${fixture.server.url}/topics/agents`);
    await page.getByRole('heading', { name: 'Topic agents' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('button', { name: 'Delete', exact: true }).count(), 0);

    assert.deepEqual(problems, []);
    await context.close();
  });
});

describe('layout', () => {
  test('pages fit a narrow screen without sideways scrolling', async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'narrow', steps: 2, delay_ms: 0 },
    });
    for (const path of [
      '/overview',
      '/tasks',
      `/tasks/${task.id}`,
      '/tasks/new',
      '/agents',
      '/agents/reporter-1',
      '/templates',
      `/templates/${REPORT_TEMPLATE.name}`,
      '/templates/new',
      '/config',
      '/sessions',
      '/instances',
      '/topics',
      '/services',
      '/secrets',
      '/keys',
      '/tenants',
      '/tenants/default',
    ]) {
      await page.goto(fixture.server.url + path);
      assert.equal(await sidewaysOverflow(page), 0, `${path} scrolls sideways`);
    }
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('on a 390 px screen the tasks table shows each task’s state', async () => {
    const width = 390;
    const task = await fixture.client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title: 'phone', steps: 1, delay_ms: 0 },
    });
    await fixture.client.tasks.wait(task.id, { timeoutMs: WAIT_MS });
    const context = await browser.newContext({ viewport: { width, height: 844 } });
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Tasks', exact: true }).click();
    const row = page.locator('table[aria-label="Tasks"] tbody tr', { hasText: task.id });
    const badge = row.locator('.badge', { hasText: 'succeeded' });
    await badge.waitFor({ timeout: WAIT_MS });
    // Scrolled to vertically only: scrolling it into view would also scroll the table sideways.
    await row.evaluate((element) => window.scrollBy(0, element.getBoundingClientRect().top - 100));
    const box = await badge.boundingBox();
    assert.ok(box, 'the state badge has a box');
    assert.ok(
      box.x >= 0 && box.x + box.width <= width,
      `the badge spans ${box.x}…${box.x + box.width}px`,
    );
    // Not clipped by the table's own scrolling, nor covered: the badge is what is shown there.
    const shown = await badge.evaluate((element) => {
      const r = element.getBoundingClientRect();
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      return hit !== null && element.contains(hit);
    });
    assert.ok(shown, 'the state badge is visible where it is laid out');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('agents are listed live with their status and load', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, fixture.server.url, fixture.adminKey);
    const problems = watchProblems(page);
    await page.getByRole('link', { name: 'Agents', exact: true }).click();
    const row = page.locator('tr', { hasText: 'reporter-1' });
    await row.waitFor({ timeout: WAIT_MS });
    assert.match((await row.textContent()) ?? '', /online.*reports/);
    // An agent that connects appears, and shows offline when it stops, without a reload.
    const agentKey = await fixture.client.apiKeys.create({ name: 'late agent', role: 'agent' });
    const late = new AgentWorker({
      url: fixture.server.url,
      apiKey: agentKey.secret,
      agentId: 'late-joiner',
      capabilities: ['reports'],
      handleSignals: false,
      handler: async () => null,
    });
    await late.start();
    // Stopped whatever happens: a running worker would keep the test process alive.
    try {
      const lateRow = page.locator('tr', { hasText: 'late-joiner' });
      await lateRow.locator('.badge', { hasText: 'online' }).waitFor({ timeout: WAIT_MS });
      await late.stop();
      await lateRow.locator('.badge', { hasText: 'offline' }).waitFor({ timeout: WAIT_MS });
    } finally {
      await late.stop();
    }
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('agents filter by status and capability, kept in the address', async () => {
    const agentKey = await fixture.client.apiKeys.create({ name: 'translators', role: 'agent' });
    const translator = (agentId: string) =>
      new AgentWorker({
        url: fixture.server.url,
        apiKey: agentKey.secret,
        agentId,
        capabilities: ['translate'],
        handleSignals: false,
        handler: async () => null,
      });
    const gone = translator('translator-gone');
    await gone.start();
    await gone.stop();
    const active = translator('translator-1');
    await active.start();
    // Stopped whatever happens: a running worker would keep the test process alive.
    try {
      const context = await browser.newContext();
      const page = await signIn(context, fixture.server.url, fixture.adminKey);
      const problems = watchProblems(page);
      await page.getByRole('link', { name: 'Agents', exact: true }).click();
      const table = page.getByRole('table', { name: 'Agents' });
      const shown = async () =>
        (await table.locator('tbody tr td:first-child a').allTextContents()).sort();
      /** Waits until the table lists exactly `ids`. */
      const waitForRows = async (ids: string[]) => {
        await page.waitForFunction(
          (want) =>
            JSON.stringify(
              [...document.querySelectorAll('table[aria-label="Agents"] tbody tr td:first-child a')]
                .map((a) => a.textContent)
                .sort(),
            ) === JSON.stringify(want),
          [...ids].sort(),
          { timeout: WAIT_MS },
        );
      };
      await table.locator('tr', { hasText: 'reporter-1' }).waitFor({ timeout: WAIT_MS });

      await page.getByLabel('Capability').fill('translate');
      await page.getByLabel('Capability').press('Enter');
      await waitForRows(['translator-1', 'translator-gone']);
      await page.getByLabel('Status').selectOption('online');
      await waitForRows(['translator-1']);
      assert.deepEqual(await shown(), ['translator-1']);
      const address = new URL(page.url());
      assert.equal(address.searchParams.get('status'), 'online');
      assert.equal(address.searchParams.get('capability'), 'translate');

      // The address opens the same view, and the list stays live under its filters.
      await page.goto(`${fixture.server.url}/agents?status=offline&capability=translate`);
      await waitForRows(['translator-gone']);
      assert.equal(await page.getByLabel('Status').inputValue(), 'offline');
      assert.equal(await page.getByLabel('Capability').inputValue(), 'translate');
      await active.stop();
      await waitForRows(['translator-1', 'translator-gone']);

      await page.getByLabel('Capability').fill('nobody-offers-this');
      await page.getByLabel('Capability').press('Enter');
      await page.getByText('No agent matches these filters.').waitFor({ timeout: WAIT_MS });
      await page.getByLabel('Status').selectOption('');
      await page.getByLabel('Capability').fill('');
      await page.getByLabel('Capability').press('Enter');
      await table.locator('tr', { hasText: 'reporter-1' }).waitFor({ timeout: WAIT_MS });
      assert.equal(new URL(page.url()).search, '');
      assert.deepEqual(problems, []);
      await context.close();
    } finally {
      await active.stop();
    }
  });

  test('the server answers console paths with the page and API paths with JSON errors', async () => {
    const html = await fetch(`${fixture.server.url}/tasks/whatever`, {
      headers: { accept: 'text/html' },
    });
    assert.equal(html.status, 200);
    assert.match(html.headers.get('content-type') ?? '', /text\/html/);
    assert.match(html.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(html.headers.get('cache-control'), 'no-cache');
    const page = await html.text();
    // Style elements need the page's nonce, a new one each time; scripts come from the origin.
    const nonceOf = (policy: string | null, body: string) => {
      const header = /style-src 'self' 'nonce-([^']+)'/.exec(policy ?? '')?.[1];
      assert.ok(header, `a style nonce in ${policy}`);
      assert.equal(/<meta name="csp-nonce" content="([^"]+)"/.exec(body)?.[1], header);
      assert.match(policy ?? '', /script-src 'self';/);
      return header;
    };
    const first = nonceOf(html.headers.get('content-security-policy'), page);
    const again = await fetch(`${fixture.server.url}/`, { headers: { accept: 'text/html' } });
    assert.notEqual(
      nonceOf(again.headers.get('content-security-policy'), await again.text()),
      first,
    );
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(page)?.[1];
    assert.ok(asset, 'the page loads its script from /assets');
    const script = await fetch(fixture.server.url + asset);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('cache-control') ?? '', /immutable/);
    for (const path of ['/v1/nothing-here', '/assets/missing.js', '/whatever']) {
      const res = await fetch(fixture.server.url + path, {
        headers: { accept: path === '/whatever' ? 'application/json' : 'text/html' },
      });
      assert.equal(res.status, 404, path);
      assert.equal(
        ((await res.json()) as { error: { code: string } }).error.code,
        'ROUTE_NOT_FOUND',
      );
    }
  });
});
