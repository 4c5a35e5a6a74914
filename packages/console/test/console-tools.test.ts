import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';
import {
  launchBrowser,
  sidewaysOverflow,
  signIn,
  ToolUpstream,
  WEATHER_SCHEMA,
  watchProblems,
  weatherTool,
} from './support.ts';

// The console's tools pages in a real browser (Debian's Chromium) against a real server
// whose HTTP tools call a loopback HTTP server: what a user does, through the page.

/** Every wait in a browser is bounded by this; machines are shared. */
const WAIT_MS = 30_000;

let server: TestServer;
let client: Orchestra;
let browser: Browser;
const upstream = new ToolUpstream();

before(async () => {
  await upstream.start();
  server = await startTestServer();
  client = new Orchestra({ url: server.url, apiKey: server.adminKey });
  const tool = (body: Record<string, unknown>) => client.request('POST', '/v1/tools', { body });
  await tool(weatherTool(upstream.url));
  await tool({
    name: 'pixel',
    description: 'A picture of one pixel.',
    annotations: { readOnlyHint: true },
    source: { type: 'http', method: 'GET', url: `${upstream.url}/pixel.png` },
  });
  await tool({
    name: 'deploy',
    description: 'Deploys a service (destructive: needs an allow).',
    input_schema: {
      type: 'object',
      required: ['service'],
      properties: { service: { type: 'string', title: 'Service' } },
    },
    source: { type: 'http', method: 'POST', url: `${upstream.url}/deploy` },
  });
  await tool({
    name: 'either',
    description: 'Takes one of two shapes: the form cannot show it.',
    annotations: { readOnlyHint: true },
    input_schema: {
      type: 'object',
      oneOf: [{ required: ['a'] }, { required: ['b'] }],
      properties: { a: { type: 'string' }, b: { type: 'string' } },
    },
    source: { type: 'http', method: 'POST', url: `${upstream.url}/either` },
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await upstream.stop();
});

/** The rows of the call log, as `tool status` texts, newest first. */
async function logRows(page: Page): Promise<string[]> {
  return page.locator('table[aria-label="Tool calls"] tbody tr[data-call]').evaluateAll((rows) =>
    rows.map((r) =>
      [...r.querySelectorAll('td')]
        .slice(1, 3)
        .map((td) => td.textContent?.trim())
        .join(' '),
    ),
  );
}

describe('tools', () => {
  test('search the catalogue, try a tool through the form built from its schema, and see the call appear live in the log', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    // The arguments the server refuses answer 400, on purpose.
    const problems = watchProblems(page, { expectedStatuses: [400] });
    // A second tab keeps the call log open: the call must appear there without a reload.
    // (The key lives in each tab's sessionStorage: the tab signs in too.)
    const log = await signIn(context, server.url, server.adminKey);
    const logProblems = watchProblems(log);
    await log.goto(`${server.url}/tool-calls`);
    await log.getByRole('heading', { name: 'Tool calls', level: 1 }).waitFor({ timeout: WAIT_MS });
    await log.locator('.empty').waitFor({ timeout: WAIT_MS });

    await page
      .getByRole('navigation', { name: 'Sections' })
      .getByRole('link', { name: 'Tools' })
      .click();
    await page.getByRole('heading', { name: 'Tools', level: 1 }).waitFor({ timeout: WAIT_MS });
    await page.getByRole('link', { name: 'weather' }).waitFor({ timeout: WAIT_MS });
    // Its four, and the seven built-in workspace tools every tenant has.
    assert.equal(await page.locator('table[aria-label="Tools"] tbody tr').count(), 11);
    await page.getByLabel('Source').selectOption('workspace');
    await page
      .getByRole('link', { name: 'weather' })
      .waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal(await page.locator('table[aria-label="Tools"] tbody tr').count(), 7);
    await page.getByRole('link', { name: 'workspace.exec' }).click();
    await page
      .getByRole('heading', { name: 'Tool workspace.exec', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    assert.match(
      (await page.getByRole('region', { name: 'Tool' }).textContent()) ?? '',
      /Built in: exec in the instance of the calling task/,
    );
    await page.goBack();
    await page.getByLabel('Source').selectOption('');
    await page.getByRole('link', { name: 'weather' }).waitFor({ timeout: WAIT_MS });

    // Search: words of the description.
    await page.getByLabel('Search').fill('city forecast');
    await page.getByLabel('Search').press('Enter');
    await page
      .getByRole('link', { name: 'pixel' })
      .waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal(await page.locator('table[aria-label="Tools"] tbody tr').count(), 1);
    await page.getByLabel('Source').selectOption('mcp');
    await page.getByText('No tool matches these filters.').waitFor({ timeout: WAIT_MS });
    await page.getByLabel('Source').selectOption('http');
    await page.getByLabel('State').selectOption('active');
    await page.getByRole('link', { name: 'weather' }).click();

    // Its page: description, schema, annotations, source, state.
    await page
      .getByRole('heading', { name: 'Tool weather', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    const facts = await page.getByRole('region', { name: 'Tool' }).textContent();
    assert.match(facts ?? '', /Forecast for a city, day by day\./);
    assert.match(facts ?? '', new RegExp(`POST ${upstream.url}/forecast`));
    assert.match(facts ?? '', /read-only, idempotent/);
    assert.deepEqual(
      JSON.parse((await page.getByRole('figure', { name: 'Input schema' }).textContent()) ?? ''),
      WEATHER_SCHEMA,
    );
    assert.deepEqual(
      JSON.parse((await page.getByRole('figure', { name: 'Annotations' }).textContent()) ?? ''),
      { readOnlyHint: true, idempotentHint: true },
    );

    // Try it: defaults filled in, the required field marked, errors at their fields.
    const form = page.getByRole('form', { name: 'Try the tool' });
    assert.equal(await form.getByLabel('Days').inputValue(), '3');
    assert.equal(await form.getByLabel('Units').inputValue(), 'metric');
    assert.equal(await form.locator('label', { hasText: 'City' }).locator('.required').count(), 1);
    await form.getByLabel('Days').fill('12');
    await form.getByRole('button', { name: 'Call the tool' }).click();
    await form.locator('.field-error', { hasText: 'Required.' }).waitFor();
    await form.locator('.field-error', { hasText: 'Must be at most 10.' }).waitFor();
    assert.equal(await form.getByLabel('City').getAttribute('aria-invalid'), 'true');

    await form.getByLabel('City').fill('Lisbon');
    await form.getByLabel('Days').fill('5');
    await form.getByLabel('Units').selectOption('imperial');
    await form.getByLabel('Hourly').check();
    await form.getByLabel('Country').fill('PT');
    await form.getByLabel('Fields').fill('temperature\nwind');
    await form.getByRole('button', { name: 'Call the tool' }).click();
    const structured = page.getByRole('figure', { name: 'Structured result' });
    await structured.waitFor({ timeout: WAIT_MS });
    const sent = {
      city: 'Lisbon',
      days: 5,
      units: 'imperial',
      hourly: true,
      place: { country: 'PT' },
      fields: ['temperature', 'wind'],
    };
    assert.deepEqual(JSON.parse((await structured.textContent()) ?? ''), {
      path: '/forecast',
      received: sent,
    });
    const record = page.locator('.try-outcome .call-record');
    assert.match((await record.locator('.facts').textContent()) ?? '', /succeeded/);
    assert.deepEqual(
      JSON.parse((await record.getByRole('figure', { name: 'Arguments' }).textContent()) ?? ''),
      sent,
    );

    // The log tab shows it, live, newest first; a row opens to its record.
    await log.locator('tr[data-call]', { hasText: 'weather' }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(await logRows(log), ['weather succeeded']);
    await log.getByRole('button', { name: /^Record of tc_/ }).click();
    const logged = log.locator('.record-cell').getByRole('figure', { name: 'Arguments' });
    assert.deepEqual(JSON.parse((await logged.textContent()) ?? ''), sent);

    // An image result is shown as an image.
    await page.goto(`${server.url}/tools/pixel`);
    await page.getByRole('button', { name: 'Call the tool' }).click();
    const image = page.getByRole('img', { name: /image\/png/ });
    await image.waitFor({ timeout: WAIT_MS });
    assert.equal(await image.evaluate((img: HTMLImageElement) => img.naturalWidth), 1);
    await log.locator('tr[data-call]', { hasText: 'pixel' }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(await logRows(log), ['pixel succeeded', 'weather succeeded']);

    // A schema the form cannot lay out: raw JSON, and the server's answer to bad arguments.
    await page.goto(`${server.url}/tools/either`);
    const raw = page.getByLabel('Arguments (JSON)');
    await raw.waitFor({ timeout: WAIT_MS });
    await raw.fill('{"c": 1}');
    await page.getByRole('button', { name: 'Call the tool' }).click();
    await page.getByRole('alert').filter({ hasText: 'do not match' }).waitFor({ timeout: WAIT_MS });
    await raw.fill('{"a": "x"}');
    await page.getByRole('button', { name: 'Call the tool' }).click();
    await page.getByRole('figure', { name: 'Structured result' }).waitFor({ timeout: WAIT_MS });

    // The log's filters.
    await log.locator('tr[data-call]', { hasText: 'denied' }).waitFor({ timeout: WAIT_MS });
    await log.getByLabel('Status').selectOption('denied');
    await log.locator('tr[data-call]', { hasText: 'succeeded' }).first().waitFor({
      state: 'detached',
      timeout: WAIT_MS,
    });
    assert.deepEqual(await logRows(log), ['either denied']);
    await log.getByLabel('Status').selectOption('');
    await log.getByLabel('Tool', { exact: true }).fill('weather');
    await log.getByLabel('Tool', { exact: true }).press('Enter');
    await log.locator('tr[data-call]', { hasText: 'pixel' }).waitFor({
      state: 'detached',
      timeout: WAIT_MS,
    });
    assert.deepEqual(await logRows(log), ['weather succeeded']);

    assert.deepEqual(
      problems.filter((p) => !p.includes('status of 400')),
      [],
    );
    assert.deepEqual(logProblems, []);
    await context.close();
  });

  test('a policy that requires approval: made on the policies page; the call waits; approved and rejected live on the approvals page', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);

    // A policy from the form.
    await page.goto(`${server.url}/tool-policies`);
    await page.getByRole('link', { name: 'New policy' }).click();
    const form = page.getByRole('form', { name: 'Tool policy' });
    await form.getByLabel('Name').fill('deploys-need-approval');
    await form.getByLabel('Description').fill('Every deploy waits for an operator.');
    await form.getByLabel('Tools').fill('deploy');
    await form.getByLabel('Approval', { exact: true }).selectOption('required');
    await form.getByLabel('Approval deadline (seconds)').fill('600');
    await form.getByRole('button', { name: 'Create policy' }).click();
    await page.getByRole('link', { name: 'deploys-need-approval' }).waitFor({ timeout: WAIT_MS });
    const row = page.locator('tr', { hasText: 'deploys-need-approval' });
    assert.match((await row.textContent()) ?? '', /approval within 600 s/);
    const stored = await client.request<{ approval: string; tools: string[] }>(
      'GET',
      '/v1/tool-policies/deploys-need-approval',
    );
    assert.equal(stored.approval, 'required');
    assert.deepEqual(stored.tools, ['deploy']);

    // The approvals page stays open in a second tab.
    const approvals = await signIn(context, server.url, server.adminKey);
    const approvalProblems = watchProblems(approvals);
    await approvals.goto(`${server.url}/tool-approvals`);
    await approvals.getByText('No call is waiting for an approval.').waitFor({ timeout: WAIT_MS });

    // Trying the tool: 202, awaiting approval, with a link to the approvals.
    await page.goto(`${server.url}/tools/deploy`);
    await page.getByLabel('Service').fill('billing');
    await page.getByRole('button', { name: 'Call the tool' }).click();
    await page.getByText('The call is awaiting approval').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('link', { name: 'Go to the approvals' }).count(), 1);

    // It appears live, with the exact arguments and their hash.
    const waiting = approvals.locator('li.approval', { hasText: 'deploy' });
    await waiting.waitFor({ timeout: WAIT_MS });
    const pending = await client.request<{
      items: { id: string; arguments_hash: string; arguments: unknown }[];
    }>('GET', '/v1/tool-approvals', { query: { status: 'pending' } });
    const first = pending.items[0];
    assert.ok(first);
    assert.equal(await waiting.locator('code.hash').textContent(), first.arguments_hash);
    assert.deepEqual(JSON.parse((await waiting.getByRole('figure').textContent()) ?? ''), {
      service: 'billing',
    });
    assert.match((await waiting.textContent()) ?? '', /deploys-need-approval/);

    await waiting.getByRole('button', { name: /^Approve deploy/ }).click();
    const decision = approvals.getByRole('region', { name: /Approved: deploy/ });
    await decision.waitFor({ timeout: WAIT_MS });
    assert.deepEqual(
      JSON.parse(
        (await decision.getByRole('figure', { name: 'Structured result' }).textContent()) ?? '',
      ),
      { path: '/deploy', received: { service: 'billing' } },
    );
    await approvals.getByText('No call is waiting for an approval.').waitFor({ timeout: WAIT_MS });
    await approvals
      .locator('table[aria-label="Decided calls"] tr', { hasText: 'approved' })
      .waitFor({ timeout: WAIT_MS });

    // A call made elsewhere (the API) appears live; rejected with a reason.
    const second = await client.request<{ call: { id: string; status: string } }>(
      'POST',
      '/v1/tools/deploy/invoke',
      { body: { arguments: { service: 'payments' } } },
    );
    assert.equal(second.call.status, 'awaiting_approval');
    const next = approvals.locator('li.approval', { hasText: 'payments' });
    await next.waitFor({ timeout: WAIT_MS });
    await next.getByRole('textbox', { name: /^Reason to reject/ }).fill('not during the freeze');
    await next.getByRole('button', { name: /^Reject deploy/ }).click();
    await approvals
      .locator('table[aria-label="Decided calls"] tr', { hasText: 'not during the freeze' })
      .waitFor({ timeout: WAIT_MS });
    const call = await client.request<{ status: string }>(
      'GET',
      `/v1/tool-calls/${second.call.id}`,
    );
    assert.equal(call.status, 'rejected');

    // One nobody decides expires (the server sweeps every 2 s), and the page shows it.
    await client.request('PUT', '/v1/tool-policies/deploys-need-approval', {
      body: { effect: 'allow', tools: ['deploy'], approval: 'required', approval_timeout_ms: 1000 },
    });
    await client.request('POST', '/v1/tools/deploy/invoke', {
      body: { arguments: { service: 'search' } },
    });
    await approvals
      .locator('table[aria-label="Decided calls"] tr', { hasText: 'expired' })
      .waitFor({ timeout: WAIT_MS });

    // Edit the policy on its page (no approval any more), then delete it from the list.
    await page.goto(`${server.url}/tool-policies/deploys-need-approval`);
    await form.getByLabel('Approval', { exact: true }).selectOption('none');
    await form.getByRole('button', { name: 'Save' }).click();
    await page
      .getByRole('heading', { name: 'Tool policies', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    assert.doesNotMatch(
      (await page.locator('tr', { hasText: 'deploys-need-approval' }).textContent()) ?? '',
      /approval within/,
    );
    await page.getByRole('button', { name: 'Delete deploys-need-approval' }).click();
    await page.getByRole('button', { name: 'Delete deploys-need-approval' }).click();
    await page.getByRole('link', { name: 'deploys-need-approval' }).waitFor({
      state: 'detached',
      timeout: WAIT_MS,
    });

    assert.deepEqual(problems, []);
    assert.deepEqual(approvalProblems, []);
    await context.close();
  });

  test('a viewer reads tools and the log, is not offered to try, approve or edit', async () => {
    const viewer = await client.apiKeys.create({ name: 'tools viewer', role: 'viewer' });
    const context = await browser.newContext();
    const page = await signIn(context, server.url, viewer.secret);
    const problems = watchProblems(page);
    await page.goto(`${server.url}/tools/weather`);
    await page
      .getByRole('heading', { name: 'Tool weather', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('button', { name: 'Call the tool' }).count(), 0);
    const tabs = page.getByRole('navigation', { name: 'Tools section' });
    assert.deepEqual(await tabs.getByRole('link').allTextContents(), [
      'Catalogue',
      'MCP servers',
      'Policies',
      'Call log',
    ]);
    await tabs.getByRole('link', { name: 'Call log' }).click();
    await page.locator('tr[data-call]').first().waitFor({ timeout: WAIT_MS });
    await tabs.getByRole('link', { name: 'Policies' }).click();
    await page
      .getByRole('heading', { name: 'Tool policies', level: 1 })
      .waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByRole('link', { name: 'New policy' }).count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('the tools pages fit a narrow screen without sideways scrolling', async () => {
    await client.request('POST', '/v1/tool-policies', {
      body: { name: 'narrow-approvals', effect: 'allow', tools: ['deploy'], approval: 'required' },
    });
    await client.request('POST', '/v1/tools/deploy/invoke', {
      body: { arguments: { service: 'a-service-with-a-rather-long-name-that-wraps' } },
    });
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await signIn(context, server.url, server.adminKey);
    const problems = watchProblems(page);
    for (const path of [
      '/tools',
      '/tools/weather',
      '/tool-policies',
      '/tool-policies/new',
      '/tool-policies/narrow-approvals',
      '/tool-approvals',
      '/tool-calls',
    ]) {
      await page.goto(server.url + path);
      assert.equal(await sidewaysOverflow(page), 0, `${path} scrolls sideways`);
    }
    assert.deepEqual(problems, []);
    await context.close();
  });
});
