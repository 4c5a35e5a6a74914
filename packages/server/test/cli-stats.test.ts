import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentWorker, Orchestra } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, runCli, startCliServer } from './helpers.ts';

// `orchestra stats` and `orchestra cluster nodes` as a user runs them: a spawned CLI against a spawned server, with a real
// AgentWorker running the tasks.

let fixture: CliServer;
let api: Orchestra;
let worker: AgentWorker;

before(async () => {
  fixture = await startCliServer('stats');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
  const agentKey = (await api.apiKeys.create({ name: 'cli-stats', role: 'agent' })).secret;
  await api.templates.create({ name: 'echo', capabilities: ['echo'] });
  worker = new AgentWorker({
    url: fixture.server.url,
    apiKey: agentKey,
    agentId: 'stats-echo',
    capabilities: ['echo'],
    concurrency: 2,
    handleSignals: false,
    handler: async (input) => {
      await sleep(5);
      return input;
    },
  });
  await worker.start();
});
after(async () => {
  try {
    await worker.stop({ drain: false });
  } finally {
    await fixture.stop();
  }
});

const cli = (args: string[]) => fixture.cli(args);

test('stats prints agents, tasks now, the window and a row per minute; --json is the API answer', async () => {
  const tasks = await Promise.all(
    Array.from({ length: 3 }, (_, i) => api.tasks.create({ template: 'echo', input: { i } })),
  );
  for (const task of tasks) await api.tasks.wait(task.id);

  const result = await cli(['stats', '--minutes', '3']);
  expectExit(result, 0);
  const lines = result.stdout.trimEnd().split('\n');
  assert.match(
    lines[0] ?? '',
    /^Agents: +1 \(1 online, 0 busy, 0 draining, 0 offline, 0 error\); 0 of 2 slots in use, 0 tasks held$/,
  );
  assert.match(lines[1] ?? '', /^Tasks now: 0 queued, 0 assigned, 0 running, 0 awaiting approval$/);
  assert.match(
    lines[2] ?? '',
    /^Last 3 min: 3 submitted; 3 succeeded, 0 failed, 0 cancelled, 0 timed out, 0 dead$/,
  );
  // Durations print as `12 ms`, `1.4 s` or `2.0 min`, whatever the machine's speed.
  const d = String.raw`\d+(\.\d)? (ms|s|min)`;
  assert.match(
    lines[3] ?? '',
    new RegExp(String.raw`^Latency: +p50 ${d}, p95 ${d}, p99 ${d}, max ${d} \(3 tasks\)$`),
  );
  assert.match(lines[4] ?? '', new RegExp(String.raw`^Queue wait: +p50 ${d}, .* \(3 tasks\)$`));
  const table = lines.slice(6).map((line) => line.split(/ {2,}/));
  assert.deepEqual(table[0], [
    'MINUTE (UTC)',
    'SUBMITTED',
    'SUCCEEDED',
    'FAILED',
    'CANCELLED',
    'TIMED OUT',
    'DEAD',
    'P50',
    'P99',
  ]);
  const rows = table.slice(1);
  assert.equal(rows.length, 3, result.stdout);
  for (const row of rows) assert.match(row[0] ?? '', /^\d\d:\d\d$/);
  assert.equal(
    rows.reduce((n, row) => n + Number(row[2]), 0),
    3,
  );

  const json = jsonOf(await cli(['stats', '--minutes', '2', '--template', 'echo', '--json']));
  assert.equal(json.template, 'echo');
  assert.equal(json.window.minutes, 2);
  assert.equal(json.tasks.per_minute.length, 2);
  const fromApi = await api.stats({ minutes: 2, template: 'echo' });
  assert.deepEqual(json.tasks.finished, fromApi.tasks.finished);
  assert.deepEqual(json.agents.by_status, fromApi.agents.by_status);

  const unknown = await cli(['stats', '--template', 'nothing-of-this-name']);
  expectExit(unknown, 1);
  assert.match(unknown.stderr, /does not exist/);
  const scoped = await cli(['stats', '--template', 'echo']);
  expectExit(scoped, 0);
  assert.match(scoped.stdout, /^Tasks now of template echo: 0 queued/m);
});

test('stats refuses a bad window or arguments before asking the server', async () => {
  for (const minutes of ['0', '61', 'ten']) {
    const result = await cli(['stats', '--minutes', minutes]);
    expectExit(result, 2);
    assert.match(result.stderr, /--minutes must be a number from 1 to 60/);
  }
  const extra = await cli(['stats', 'now']);
  expectExit(extra, 2);
  assert.match(extra.stderr, /stats takes no arguments/);
  const help = await cli(['stats', '--help']);
  expectExit(help, 0);
  assert.match(help.stdout, /^Usage: orchestra stats/);
});

test('cluster nodes lists this node for a system admin and refuses other tenants', async () => {
  const ready = await api.ready();
  const result = await cli(['cluster', 'nodes']);
  expectExit(result, 0);
  const [header, ...rows] = result.stdout
    .trimEnd()
    .split('\n')
    .map((line) => line.split(/ {2,}/));
  assert.deepEqual(header, [
    'ID',
    'URL',
    'VERSION',
    'STORE',
    'KV',
    'SEEN',
    'RSS',
    'LOOP DELAY',
    'AGENTS',
    'CONNECTIONS',
    'INSTANCES',
    'DRIVERS',
  ]);
  assert.equal(rows.length, 1, result.stdout);
  assert.equal(rows[0]?.[11], 'process', 'this node runs instances with the process driver');
  assert.match(rows[0]?.[0] ?? '', new RegExp(`^${ready.instance_id}( \\*)?$`));
  assert.equal(rows[0]?.[2], ready.version);
  assert.match(rows[0]?.[6] ?? '', /^\d+ MiB$/);
  assert.match(rows[0]?.[8] ?? '', /^\d+$/);

  const json = jsonOf(await cli(['cluster', 'nodes', '--json']));
  assert.equal(json[0].id, ready.instance_id);

  const { admin_key } = await api.tenants.create({ id: 'cli-not-system' });
  const denied = await runCli(
    ['cluster', 'nodes', '--url', fixture.server.url, '--api-key', admin_key.secret],
    { cwd: fixture.workDir },
  );
  expectExit(denied, 1);
  assert.match(denied.stderr, /PERMISSION_DENIED|system tenant/);
  expectExit(await cli(['cluster', 'leaders']), 2);
});
