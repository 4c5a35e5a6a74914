import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Agent, AgentWorker, Orchestra, type TaskHandler } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, startCliServer } from './helpers.ts';

// `orchestra agents` as a user runs it: a spawned `node bin/orchestra.js` against a spawned
// `orchestra start`, with agents that are real AgentWorkers in this process. Each test
// uses agent ids and capabilities of its own.

let fixture: CliServer;
let api: Orchestra;
let agentKey: string;
const workers: AgentWorker[] = [];
const gates: (() => void)[] = [];

before(async () => {
  fixture = await startCliServer('agents');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
  agentKey = (await api.apiKeys.create({ name: 'cli-agents', role: 'agent' })).secret;
});
after(async () => {
  try {
    for (const release of gates) release();
    await Promise.all(workers.map((w) => w.stop({ drain: false })));
  } finally {
    await fixture.stop();
  }
});

const cli = (args: string[]) => fixture.cli(args);

/** Connects an agent; resolves once it registered. */
async function connect(
  agentId: string,
  capabilities: string[],
  options: { concurrency?: number; handler?: TaskHandler } = {},
): Promise<AgentWorker> {
  const worker = new AgentWorker({
    url: fixture.server.url,
    apiKey: agentKey,
    agentId,
    capabilities,
    concurrency: options.concurrency ?? 1,
    handler: options.handler ?? (() => ({ ok: true })),
    handleSignals: false,
  });
  workers.push(worker);
  await worker.start();
  return worker;
}

/** A handler that holds every task until `release()`. */
function gate(): { handler: TaskHandler; release: () => void } {
  let release: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    release = resolve;
  });
  gates.push(release);
  return {
    release,
    handler: async () => {
      await opened;
      return null;
    },
  };
}

/** Polls the agent until `ready` holds for it. */
async function agentWhen(id: string, ready: (agent: Agent) => boolean): Promise<Agent> {
  const until = Date.now() + 10_000;
  for (;;) {
    const agent = await api.agents.get(id);
    if (ready(agent)) return agent;
    if (Date.now() > until) assert.fail(`agent ${id} never got there: ${JSON.stringify(agent)}`);
    await sleep(25);
  }
}

/** The agent without what every heartbeat changes, to compare two reads of it. */
function steady(agent: Agent): Partial<Agent> {
  const { last_heartbeat_at, lease_expires_at, load, updated_at, ...rest } = agent;
  return rest;
}

/** The cells of each row of a table, split on the two-space column gaps. */
function tableRows(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split('\n')
    .map((line) => line.split(/ {2,}/));
}

// Every test uses agents of its own, so they run side by side on one server.
describe('orchestra agents', { concurrency: 4 }, () => {
  test('ls prints a table of agents; --json prints the same agents as the API', async () => {
    const held = gate();
    await connect('ls-busy', ['ls:cap', 'ls:busy'], { handler: held.handler });
    await connect('ls-idle', ['ls:cap'], { concurrency: 4 });
    const task = await api.tasks.create({ capabilities: ['ls:busy'] });
    await agentWhen('ls-busy', (a) => a.in_flight.length === 1);

    const result = await cli(['agents', 'ls', '--capability', 'ls:cap']);
    expectExit(result, 0);
    const [header, ...rows] = tableRows(result.stdout);
    assert.deepEqual(header, [
      'ID',
      'STATUS',
      'CAPABILITIES',
      'IN FLIGHT',
      'LOAD',
      'LAST HEARTBEAT',
      'NODE',
    ]);
    assert.equal(rows.length, 2, result.stdout);
    const [busy, idle] = rows as [string[], string[]];
    assert.deepEqual(busy.slice(0, 4), ['ls-busy', 'busy', 'ls:cap,ls:busy', '1/1']);
    assert.deepEqual(idle.slice(0, 4), ['ls-idle', 'online', 'ls:cap', '0/4']);
    for (const row of rows) {
      assert.match(row[4] ?? '', /^(-|(cpu \d+%)? ?(mem \d+%)?)$/);
      assert.match(row[5] ?? '', /^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
      assert.equal(row[6], (await api.agents.get(row[0] ?? '')).node_id);
    }

    const listed = jsonOf(await cli(['agents', 'ls', '--capability', 'ls:cap', '--json']));
    assert.ok(Array.isArray(listed));
    assert.deepEqual(
      listed.map((a: Agent) => [a.id, a.status, a.in_flight]),
      [
        ['ls-busy', 'busy', [task.id]],
        ['ls-idle', 'online', []],
      ],
    );
    assert.deepEqual(
      listed.map(steady),
      (await api.agents.list({ capability: 'ls:cap' })).items.map(steady),
    );

    const none = await cli(['agents', 'ls', '--capability', 'ls:nobody']);
    expectExit(none, 0);
    assert.equal(none.stdout, '(none)\n');
    assert.deepEqual(
      jsonOf(await cli(['agents', 'ls', '--capability', 'ls:nobody', '--json'])),
      [],
    );
    held.release();
  });

  test('ls --status (repeatable) and --limit', async () => {
    await connect('status-a', ['status:cap']);
    await connect('status-b', ['status:cap']);
    const gone = await connect('status-c', ['status:cap']);
    await gone.stop();
    await agentWhen('status-c', (a) => a.status === 'offline');
    await api.agents.drain('status-b');

    const ids = async (args: string[]) =>
      jsonOf(await cli(['agents', 'ls', '--capability', 'status:cap', '--json', ...args])).map(
        (a: Agent) => a.id,
      );
    assert.deepEqual(await ids([]), ['status-a', 'status-b', 'status-c']);
    assert.deepEqual(await ids(['--status', 'online']), ['status-a']);
    assert.deepEqual(await ids(['--status', 'draining', '--status', 'offline']), [
      'status-b',
      'status-c',
    ]);
    assert.deepEqual(await ids(['--status', 'error']), []);
    assert.deepEqual(await ids(['--limit', '2']), ['status-a', 'status-b']);

    // A table cut short says so on stderr, so that a script reading stdout is not misled.
    const cut = await cli(['agents', 'list', '--capability', 'status:cap', '--limit', '1']);
    expectExit(cut, 0);
    assert.deepEqual(
      tableRows(cut.stdout).map((row) => row[0]),
      ['ID', 'status-a'],
    );
    assert.match(cut.stderr, /Showing the first 1 agents; use --limit N for more/);
    const whole = await cli(['agents', 'ls', '--capability', 'status:cap', '--limit', '3']);
    expectExit(whole, 0);
    assert.equal(whole.stderr, '');
  });

  test('get prints a readable summary with the tasks it holds; --json prints the agent', async () => {
    const held = gate();
    await connect('get-1', ['get:cap', 'get:other'], { concurrency: 2, handler: held.handler });
    const task = await api.tasks.create({ capabilities: ['get:cap'] });
    await agentWhen('get-1', (a) => a.in_flight.length === 1 && a.load !== null);

    const result = await cli(['agents', 'get', 'get-1']);
    expectExit(result, 0);
    const field = (label: string) =>
      new RegExp(`^${label}:\\s+(.*)$`, 'm').exec(result.stdout)?.[1];
    assert.equal(field('ID'), 'get-1');
    assert.equal(field('Status'), 'online');
    assert.equal(field('Capabilities'), 'get:cap, get:other');
    assert.equal(field('In flight'), '1/2 (tasks held / max concurrency)');
    assert.match(field('SDK') ?? '', /^@orchestra\/sdk \d+\.\d+\.\d+/);
    assert.match(field('Node') ?? '', /\S/);
    assert.match(field('Last heartbeat') ?? '', /^\d{4}-/);
    // The load of the first heartbeat: memory always, cpu from the second one on.
    assert.match(field('Load') ?? '', /^(cpu \d+% )?mem \d+%$/);
    assert.match(result.stdout, new RegExp(`^Tasks held:\\n {2}${task.id}$`, 'm'));

    const json = jsonOf(await cli(['agents', 'get', 'get-1', '--json']));
    assert.equal(json.id, 'get-1');
    assert.deepEqual(json.in_flight, [task.id]);
    assert.deepEqual(json.capabilities, ['get:cap', 'get:other']);
    held.release();
  });

  test('drain makes the agent draining, and the tasks submitted after stay queued', async () => {
    await connect('drain-1', ['drain:cap']);
    const result = await cli(['agents', 'drain', 'drain-1']);
    expectExit(result, 0);
    assert.equal(result.stdout, 'Draining agent drain-1: it gets no new tasks.\n');
    assert.equal((await api.agents.get('drain-1')).status, 'draining');

    const task = await api.tasks.create({ capabilities: ['drain:cap'] });
    await sleep(750);
    assert.equal((await api.tasks.get(task.id)).state, 'queued');

    await connect('drain-2', ['drain:cap']);
    const json = jsonOf(await cli(['agents', 'drain', 'drain-2', '--json']));
    assert.equal(json.id, 'drain-2');
    assert.equal(json.status, 'draining');
  });

  test('rm refuses a connected agent, then removes it once it disconnected', async () => {
    const worker = await connect('rm-1', ['rm:cap']);
    const refused = await cli(['agents', 'rm', 'rm-1']);
    expectExit(refused, 1);
    assert.match(refused.stderr, /\(AGENT_CONNECTED, HTTP 409\)/);
    assert.equal(refused.stdout, '');

    await worker.stop();
    await agentWhen('rm-1', (a) => a.status === 'offline');
    const notConnected = await cli(['agents', 'drain', 'rm-1']);
    expectExit(notConnected, 1);
    assert.match(notConnected.stderr, /\(AGENT_NOT_CONNECTED, HTTP 409\)/);

    const removed = await cli(['agents', 'rm', 'rm-1']);
    expectExit(removed, 0);
    assert.equal(removed.stdout, 'Deleted agent rm-1.\n');
    const missing = await cli(['agents', 'get', 'rm-1']);
    expectExit(missing, 1);
    assert.match(missing.stderr, /\(AGENT_NOT_FOUND, HTTP 404\)/);

    // `delete` is the same command.
    const other = await connect('rm-2', ['rm:cap']);
    await other.stop();
    await agentWhen('rm-2', (a) => a.status === 'offline');
    assert.deepEqual(jsonOf(await cli(['agents', 'delete', 'rm-2', '--json'])), {
      deleted: 'rm-2',
    });
    expectExit(await cli(['agents', 'delete', 'rm-2']), 1);
  });

  test('usage mistakes exit 2 and point to the help', async () => {
    for (const args of [
      ['agents'],
      ['agents', 'frob'],
      ['agents', 'get'],
      ['agents', 'get', 'a', 'b'],
      ['agents', 'drain'],
      ['agents', 'rm'],
      ['agents', 'ls', 'extra'],
      ['agents', 'ls', '--status', 'asleep'],
      ['agents', 'ls', '--limit', '0'],
      ['agents', 'ls', '--limit', 'ten'],
      ['agents', 'ls', '--frobnicate'],
    ]) {
      const result = await cli(args);
      expectExit(result, 2);
      assert.match(result.stderr, /^error: /, args.join(' '));
      assert.match(result.stderr, /Run "orchestra agents --help" for usage/, args.join(' '));
    }
    const help = await cli(['agents', '--help']);
    expectExit(help, 0);
    assert.match(help.stdout, /^Usage: orchestra agents <ls\|get\|drain\|rm>/);
  });
});
