import { mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  launchBrowser,
  REPORT_TEMPLATE,
  signIn,
  startConsoleFixture,
  ToolUpstream,
  weatherTool,
} from '../test/support.ts';

// Regenerates docs/console/*.png: the console's main pages with a server, agents and tasks
// of the kind a user has. Run with `npm run console:screenshots` (needs Chromium, as the
// browser tests do).

const out = fileURLToPath(new URL('../../../docs/console/', import.meta.url));
mkdirSync(out, { recursive: true });

const fixture = await startConsoleFixture();
const browser = await launchBrowser();
const upstream = new ToolUpstream();
await upstream.start();
try {
  const { client } = fixture;
  const done = await client.tasks.create({
    template: REPORT_TEMPLATE.name,
    input: { title: 'Quarterly numbers', steps: 6, delay_ms: 50 },
  });
  for (const title of ['Weekly summary', 'Release notes', 'Incident review']) {
    await client.tasks.create({
      template: REPORT_TEMPLATE.name,
      input: { title, steps: 3, delay_ms: 20 },
    });
  }
  const cancelled = await client.tasks.create({
    template: REPORT_TEMPLATE.name,
    input: { title: 'Abandoned draft', steps: 400, delay_ms: 100 },
  });
  await client.tasks.create({ capabilities: ['gpu'], input: { model: 'large' } });
  await client.tasks.wait(done.id, { timeoutMs: 30_000 });
  await client.tasks.cancel(cancelled.id);
  await client.tasks.wait(cancelled.id, { timeoutMs: 30_000 });
  const running = await client.tasks.create({
    template: REPORT_TEMPLATE.name,
    input: { title: 'Annual report', steps: 400, delay_ms: 150 },
  });

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(fixture.server.url);
  await page.getByLabel('API key').fill('ork_…');
  await page.screenshot({ path: `${out}sign-in.png` });

  await page.close();
  const signedIn = await signIn(context, fixture.server.url, fixture.adminKey);
  const shoot = async (path: string, name: string, ready: string) => {
    await signedIn.goto(fixture.server.url + path);
    await signedIn.locator(ready).first().waitFor({ timeout: 30_000 });
    await sleep(400); // live pages keep a stream open: no network idle to wait for
    await signedIn.screenshot({ path: `${out}${name}.png`, fullPage: true });
    console.log(`docs/console/${name}.png`);
  };
  await shoot('/tasks', 'tasks', 'table');
  await sleep(1_500); // a few sections into the running task
  await shoot(`/tasks/${running.id}`, 'task-running', '#task-progress');
  await shoot(`/tasks/${done.id}`, 'task-succeeded', '.timeline li[data-type="task.succeeded"]');
  await signedIn.goto(`${fixture.server.url}/tasks/new`);
  await signedIn.getByLabel('Template').selectOption(REPORT_TEMPLATE.name);
  await signedIn.getByLabel('Title').fill('Board update');
  await signedIn.getByLabel('Steps').fill('0');
  await signedIn.getByRole('button', { name: 'Submit', exact: true }).click();
  await signedIn.locator('.field-error').first().waitFor();
  await signedIn.screenshot({ path: `${out}submit.png`, fullPage: true });
  console.log('docs/console/submit.png');
  await shoot('/agents', 'agents', 'table');

  const { name: _name, ...definition } = REPORT_TEMPLATE;
  await client.templates.update(REPORT_TEMPLATE.name, {
    ...definition,
    description: 'Builds a report in sections, streaming each one.',
    default_timeout_ms: 600_000,
  });
  await signedIn.goto(`${fixture.server.url}/templates/${REPORT_TEMPLATE.name}`);
  await signedIn.getByRole('button', { name: 'v1', exact: true }).click();
  await signedIn.locator('.diff').waitFor({ timeout: 30_000 });
  await signedIn.screenshot({ path: `${out}template.png`, fullPage: true });
  console.log('docs/console/template.png');

  for (const [key, value] of [
    ['app/db/pool_size', 20],
    ['app/db/url', 'postgres://db.internal/app'],
    ['app/feature/search', true],
    ['app/feature/summaries', { model: 'small', max_tokens: 512 }],
    ['billing/currency', 'EUR'],
  ] as const) {
    await client.config.set(key, value, { env: 'prod' });
  }
  await shoot('/config?env=prod', 'config', '.tree');

  // Tools: an HTTP tool on a loopback server tried from its page, deploys that wait for an
  // approval, and the call log.
  await client.request('POST', '/v1/tools', { body: weatherTool(upstream.url) });
  await client.request('POST', '/v1/tools', {
    body: {
      name: 'deploy',
      description: 'Deploys a service to production.',
      input_schema: {
        type: 'object',
        required: ['service', 'version'],
        properties: { service: { type: 'string' }, version: { type: 'string' } },
      },
      source: { type: 'http', method: 'POST', url: `${upstream.url}/deploy` },
    },
  });
  await client.request('POST', '/v1/tool-policies', {
    body: {
      name: 'deploys-need-approval',
      description: 'Every deploy waits for an operator.',
      effect: 'allow',
      tools: ['deploy'],
      approval: 'required',
    },
  });
  for (const city of ['Oslo', 'Nairobi', 'Lima']) {
    await client.request('POST', '/v1/tools/weather/invoke', { body: { arguments: { city } } });
  }
  for (const [service, version] of [
    ['billing', '2.4.1'],
    ['search', '7.0.0'],
  ]) {
    await client.request('POST', '/v1/tools/deploy/invoke', {
      body: { arguments: { service, version } },
    });
  }
  await signedIn.goto(`${fixture.server.url}/tools/weather`);
  await signedIn.getByLabel('City').fill('Lisbon');
  await signedIn.getByLabel('Country').fill('PT');
  await signedIn.getByRole('button', { name: 'Call the tool' }).click();
  await signedIn.getByRole('figure', { name: 'Structured result' }).waitFor({ timeout: 30_000 });
  await signedIn.screenshot({ path: `${out}tool.png`, fullPage: true });
  console.log('docs/console/tool.png');
  await shoot('/tool-approvals', 'tool-approvals', 'li.approval');
  await shoot('/tool-calls', 'tool-calls', 'tr[data-call]');

  // The overview's charts need more than one minute of traffic: a second burst of tasks in
  // the next minute, with a few failures.
  const burst = async (count: number, failures: number) => {
    const tasks = await Promise.all([
      ...Array.from({ length: count }, (_, i) =>
        client.tasks.create({
          template: REPORT_TEMPLATE.name,
          input: { title: `Digest ${i}`, steps: 1 + (i % 4), delay_ms: 40 * (i % 5) },
        }),
      ),
      ...Array.from({ length: failures }, () =>
        client.tasks.create({
          capabilities: ['reports'],
          input: { title: 'Sales import', steps: 1, fail: 'The sales database refused the query' },
        }),
      ),
    ]);
    for (const task of tasks) await client.tasks.wait(task.id, { timeoutMs: 60_000 });
  };
  await burst(30, 1);
  await sleep(60_000 - (Date.now() % 60_000) + 500);
  await burst(45, 2);
  await shoot('/overview', 'overview', 'figure.chart');
  await context.close();

  const narrow = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const phone = await signIn(narrow, fixture.server.url, fixture.adminKey);
  await phone.goto(`${fixture.server.url}/tasks/${running.id}`);
  await phone.locator('#task-progress').waitFor({ timeout: 30_000 });
  await phone.screenshot({ path: `${out}task-narrow.png` });
  console.log('docs/console/task-narrow.png');
  await narrow.close();
  await client.tasks.cancel(running.id);
} finally {
  await browser.close();
  await fixture.stop();
  await upstream.stop();
}
