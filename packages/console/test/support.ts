import { existsSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentWorker, type CreateTemplateInput, Orchestra, TaskFailedError } from '@orchestra/sdk';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../../server/test/helpers.ts';

// What the console's browser tests and the screenshot script share: a real server, real
// SDK agents, templates a user would have, and Debian's Chromium driven by playwright-core.

export const CHROMIUM = process.env.ORCHESTRA_CHROMIUM ?? '/usr/bin/chromium';

/** Headless Chromium with the flags a machine without outside network needs. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is not at ${CHROMIUM}: apt-get install chromium (.ci/run does), or set ORCHESTRA_CHROMIUM`,
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/**
 * Problems the page reported: console errors and uncaught exceptions. Chromium also logs
 * every response with an error status; those a test provokes on purpose (a 400 for a bad
 * input) are listed in `expectedStatuses`.
 */
export function watchProblems(page: Page, options: { expectedStatuses?: number[] } = {}): string[] {
  const problems: string[] = [];
  const expected = new Set(options.expectedStatuses ?? []);
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const status = /^Failed to load resource: the server responded with a status of (\d+)/.exec(
      message.text(),
    )?.[1];
    if (status !== undefined && expected.has(Number(status))) return;
    problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return problems;
}

/**
 * How far the page, once loaded, scrolls sideways (0 when it fits). Loaded: it has a
 * heading and nothing says "Loading…" (live pages keep a stream open: no network idle).
 */
export async function sidewaysOverflow(page: Page): Promise<number> {
  await page.locator('h1').first().waitFor({ timeout: 30_000 });
  await page.waitForFunction(
    () =>
      ![...document.querySelectorAll('[role="status"]')].some((e) =>
        e.textContent?.startsWith('Loading '),
      ),
    null,
    { timeout: 30_000 },
  );
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  return Math.max(0, overflow);
}

/** A template whose agent reports progress and streams a line per step. */
export const REPORT_TEMPLATE = {
  name: 'build-report',
  description: 'Builds a report in steps, streaming a line per step.',
  capabilities: ['reports'],
  input_schema: {
    type: 'object',
    required: ['title', 'steps'],
    additionalProperties: false,
    properties: {
      title: { type: 'string', title: 'Title', minLength: 1, maxLength: 80 },
      steps: {
        type: 'integer',
        title: 'Steps',
        description: 'How many sections to write (1 to 500).',
        minimum: 1,
        maximum: 500,
      },
      pages: {
        type: 'integer',
        title: 'Pages per section',
        description: 'An even number.',
        multipleOf: 2,
      },
      delay_ms: { type: 'integer', title: 'Pause per step (ms)', minimum: 0, maximum: 5000 },
      format: { type: 'string', enum: ['markdown', 'html'], default: 'markdown' },
      draft: { type: 'boolean', title: 'Draft' },
    },
  },
} satisfies CreateTemplateInput;

export interface ConsoleFixture {
  server: TestServer;
  client: Orchestra;
  /** The admin key, as a user would paste it. */
  adminKey: string;
  workers: AgentWorker[];
  stop(): Promise<void>;
}

/** A server with the report template and two agents that run it. */
export async function startConsoleFixture(options: { env?: Record<string, string> } = {}) {
  const server = await startTestServer({
    env: {
      ORCHESTRA_AGENT_HEARTBEAT_INTERVAL_MS: '500',
      ORCHESTRA_AGENT_HEARTBEAT_TIMEOUT_MS: '5000',
      ORCHESTRA_TASK_CANCEL_GRACE_MS: '2000',
      ...options.env,
    },
  });
  const client = new Orchestra({ url: server.url, apiKey: server.adminKey });
  await client.templates.create(REPORT_TEMPLATE);
  const agentKey = await client.apiKeys.create({ name: 'report agents', role: 'agent' });
  const workers = ['reporter-1', 'reporter-2'].map(
    (agentId) =>
      new AgentWorker({
        url: server.url,
        apiKey: agentKey.secret,
        agentId,
        capabilities: ['reports'],
        concurrency: 4,
        labels: { pool: 'reports' },
        handleSignals: false,
        handler: async (input, ctx) => {
          const {
            title,
            steps,
            delay_ms = 100,
            fail,
            fail_first,
          } = input as {
            title: string;
            steps: number;
            delay_ms?: number;
            /** Only tasks routed by capability may carry these: the template's schema refuses them. */
            fail?: string;
            /** Fails the first attempt (retryable) with this message; later ones run. */
            fail_first?: string;
          };
          if (fail !== undefined) {
            throw new TaskFailedError(fail, {
              code: 'REPORT_FAILED',
              retryable: false,
              details: { title },
            });
          }
          if (fail_first !== undefined && ctx.task.attempt === 1) {
            throw new TaskFailedError(fail_first, { code: 'FLAKY', retryable: true });
          }
          for (let i = 1; i <= steps; i++) {
            await sleep(delay_ms, undefined, { signal: ctx.signal });
            ctx.progress(i, steps, `section ${i}`);
            ctx.output(`## ${title}, section ${i}`);
          }
          return { title, sections: steps };
        },
      }),
  );
  for (const worker of workers) await worker.start();
  const fixture: ConsoleFixture = {
    server,
    client,
    adminKey: server.adminKey,
    workers,
    async stop() {
      await Promise.all(workers.map((w) => w.stop()));
      await server.stop();
    },
  };
  return fixture;
}

/** Signs in on a fresh page of `context` and waits for the overview, where it lands. */
export async function signIn(context: BrowserContext, url: string, key: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  return page;
}

/** A 1×1 PNG, as an image tool answers. */
const PIXEL = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwAEAQH/3ltHJQAAAABJRU5ErkJggg==',
  'base64',
);

/** A loopback upstream for HTTP tools: echoes what it gets as JSON, or sends a PNG. */
export class ToolUpstream {
  readonly server: Server;
  url = '';
  constructor() {
    this.server = createServer((req, res: ServerResponse) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        const path = new URL(req.url ?? '/', 'http://x').pathname;
        if (path === '/pixel.png') {
          res.writeHead(200, { 'content-type': 'image/png' }).end(PIXEL);
          return;
        }
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ path, received: body ? JSON.parse(body) : null }));
      });
    });
  }
  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export const WEATHER_SCHEMA = {
  type: 'object',
  required: ['city'],
  additionalProperties: false,
  properties: {
    city: { type: 'string', title: 'City', minLength: 1, maxLength: 50 },
    days: { type: 'integer', title: 'Days', minimum: 1, maximum: 10, default: 3 },
    units: { type: 'string', title: 'Units', enum: ['metric', 'imperial'], default: 'metric' },
    hourly: { type: 'boolean', title: 'Hourly' },
    place: {
      type: 'object',
      title: 'Place',
      properties: {
        country: { type: 'string', title: 'Country' },
        elevation: { type: 'number', title: 'Elevation (m)' },
      },
    },
    fields: { type: 'array', title: 'Fields', items: { type: 'string' } },
  },
};

/** An HTTP tool whose form has a field of every kind (the upstream echoes what it gets). */
export function weatherTool(upstreamUrl: string) {
  return {
    name: 'weather',
    description: 'Forecast for a city, day by day.',
    annotations: { readOnlyHint: true, idempotentHint: true },
    input_schema: WEATHER_SCHEMA,
    source: { type: 'http', method: 'POST', url: `${upstreamUrl}/forecast` },
  };
}
