import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TaskState } from '@orchestra/protocol';
import { Orchestra, type Task } from '@orchestra/sdk';
import { InProcessBus } from '../src/bus/bus.ts';
import { EventLog } from '../src/events/event-log.ts';
import { openStore, type RelationalStore } from '../src/store/store.ts';
import {
  type CliResult,
  type CliServer,
  expectExit,
  jsonOf,
  runCli,
  startCliServer,
} from './helpers.ts';

// `orchestra task` as a user runs it: a spawned `node bin/orchestra.js` against a spawned
// `orchestra start`. The test stands in for agents: it moves tasks and appends their events
// in the server's SQLite store itself, so that it controls every state.

let fixture: CliServer;
let api: Orchestra;
let store: RelationalStore;
let events: EventLog;

before(async () => {
  // A cancellation the stand-in agent never confirms must not end on its own mid-test.
  fixture = await startCliServer('task', { ORCHESTRA_TASK_CANCEL_GRACE_MS: '3600000' });
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
  store = await openStore({ dataDir: fixture.dataDir, poolSize: 1 });
  // Its own bus: the server's followers see these events on their next poll.
  events = new EventLog({ store, bus: new InProcessBus() });
  await api.templates.create({
    name: 'cli-echo',
    capabilities: ['llm'],
    input_schema: {
      type: 'object',
      required: ['text'],
      properties: { text: { type: 'string' } },
    },
  });
});
after(async () => {
  try {
    await store?.close();
  } finally {
    await fixture.stop();
  }
});

const cli = (args: string[], options?: { input?: string }) => fixture.cli(args, options);

const json = jsonOf;

/** The NDJSON lines of a command's output. */
function ndjson(result: CliResult): any[] {
  return result.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line));
}

/** The task id in a "Submitted task tsk_…" line. */
function submittedId(result: CliResult): string {
  const match = /^Submitted task (tsk_\w+) /m.exec(result.stdout);
  assert.ok(match?.[1], result.stdout);
  return match[1];
}

/** The one task labelled `run=<run>`, once a command running in the background created it. */
async function taskOfRun(run: string): Promise<Task> {
  for (;;) {
    const { items } = await api.tasks.list({ labels: { run } });
    if (items[0] !== undefined) return items[0];
    await sleep(50);
  }
}

/** Moves a task as its agent will; `event` is appended to its stream. */
async function agentMoves(
  task: Task,
  change: { state: TaskState; result?: unknown },
  event?: { type: string; data: unknown },
): Promise<void> {
  await store.db
    .updateTable('tasks')
    .set({
      state: change.state,
      ...(change.result !== undefined ? { result: JSON.stringify(change.result) } : {}),
    })
    .where('id', '=', task.id)
    .execute();
  if (event)
    await events.transaction((_trx, emit) => emit(`task:${task.id}`, task.tenant_id, [event]));
}

const EVENT_LINE = /^\s+(\d+)\s{2}(\d{4}-\d\d-\d\dT\S+Z)\s{2}(\S+)\s*(.*)$/;

/** The offset, type and summary of each event line in a command's output. */
function eventLines(stdout: string): { offset: number; type: string; summary: string }[] {
  return stdout
    .split('\n')
    .map((line) => EVENT_LINE.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({
      offset: Number(match[1]),
      type: String(match[3]),
      summary: String(match[4]),
    }));
}

// Every test uses tasks of its own, so they run side by side on one server.
describe('orchestra task', { concurrency: 4 }, () => {
  test('submit TEMPLATE --input prints the new task; get shows it with its input', async () => {
    const submitted = await cli([
      'task',
      'submit',
      'cli-echo',
      '--input',
      '{"text":"hello"}',
      '--capability',
      'gpu',
      '--priority',
      '5',
      '--label',
      'team=docs',
      '--label',
      'env=dev',
    ]);
    expectExit(submitted, 0);
    // No agent is connected in this suite: the submit says at once why the task waits.
    assert.match(
      submitted.stdout,
      /^Submitted task tsk_\w+ \(cli-echo@1\): queued\.\nWaiting: no connected agent offers capabilities llm, gpu; the task stays queued until one connects\.\n$/,
    );
    const id = submittedId(submitted);

    const task = json(await cli(['task', 'get', id, '--json']));
    assert.deepEqual(task.input, { text: 'hello' });
    assert.deepEqual(task.capabilities, ['llm', 'gpu']);
    assert.equal(task.priority, 5);
    assert.deepEqual(task.labels, { team: 'docs', env: 'dev' });

    const shown = await cli(['task', 'get', id]);
    expectExit(shown, 0);
    const out = shown.stdout;
    assert.match(out, new RegExp(`^ID:\\s+${id}$`, 'm'));
    assert.match(out, /^State:\s+queued$/m);
    assert.match(out, /^Waiting:\s+no connected agent offers capabilities llm, gpu$/m);
    assert.match(out, /^Template:\s+cli-echo v1 \(tpl_\w+\)$/m);
    assert.match(out, /^Capabilities:\s+llm, gpu$/m);
    assert.match(out, /^Attempt:\s+0 of 3$/m);
    assert.match(out, /^Labels:\s+team=docs,env=dev$/m);
    assert.ok(out.includes(`Input:\n${JSON.stringify({ text: 'hello' }, null, 2)}\n`), out);
    assert.match(out, /^Result: \(none\)$/m);
  });

  test('get shows a success after a failed attempt as a success, with that error as history; a failure’s details', async () => {
    const retried = await api.tasks.create({ template: 'cli-echo', input: { text: 'again' } });
    const failed = await api.tasks.create({ template: 'cli-echo', input: { text: 'no' } });
    const error = { code: 'FLAKY', message: 'first try timed out', retryable: true };
    await store.db
      .updateTable('tasks')
      .set({ state: 'succeeded', attempt: 2, result: '"done"', error: JSON.stringify(error) })
      .where('id', '=', retried.id)
      .execute();
    await store.db
      .updateTable('tasks')
      .set({
        state: 'failed',
        error: JSON.stringify({ ...error, retryable: false, details: { line: 3 } }),
      })
      .where('id', '=', failed.id)
      .execute();
    const shown = await cli(['task', 'get', retried.id]);
    expectExit(shown, 0);
    assert.match(shown.stdout, /^Result:\n"done"$/m);
    assert.match(
      shown.stdout,
      /^Error of an earlier attempt: FLAKY: first try timed out \(retryable\)$/m,
    );
    assert.doesNotMatch(shown.stdout, /^Error:/m);
    const ended = await cli(['task', 'get', failed.id]);
    assert.match(
      ended.stdout,
      /^Error: FLAKY: first try timed out\nDetails:\n\{\n {2}"line": 3\n\}$/m,
    );
  });

  test('submit --input-file reads a file or standard input; --json prints the task', async () => {
    const fromStdin = json(
      await cli(['task', 'submit', 'cli-echo', '--input-file', '-', '--json'], {
        input: '{"text": "from stdin"}',
      }),
    );
    assert.match(fromStdin.id, /^tsk_/);
    assert.deepEqual(fromStdin.input, { text: 'from stdin' });
    assert.equal(fromStdin.state, 'queued');

    writeFileSync(join(fixture.workDir, 'input.json'), '{"text": "from a file"}');
    const fromFile = json(
      await cli(['task', 'submit', 'cli-echo', '--input-file', 'input.json', '--json']),
    );
    assert.deepEqual(fromFile.input, { text: 'from a file' });
  });

  test('submit --capability without a template; the same --idempotency-key submits nothing new', async () => {
    const args = ['task', 'submit', '--capability', 'shell', '--idempotency-key', 'cli-k1'];
    const first = await cli([...args, '--priority=-3']);
    expectExit(first, 0);
    assert.match(
      first.stdout,
      /^Submitted task tsk_\w+ \(capabilities shell\): queued\.\nWaiting: no connected agent offers capability shell; the task stays queued until one connects\.\n$/,
    );
    const id = submittedId(first);

    const again = await cli(args);
    expectExit(again, 0);
    assert.equal(
      again.stdout,
      `Task ${id} was submitted before with idempotency key "cli-k1" (queued); nothing new was submitted.\nWaiting: no connected agent offers capability shell; the task stays queued until one connects.\n`,
    );
    const task = json(await cli([...args, '--json']));
    assert.deepEqual([task.id, task.template, task.priority], [id, null, -3]);
  });

  test('submit-batch submits a JSON-lines file in order, one line a task; refusals exit 1', async () => {
    const lines = [
      '{"template": "cli-echo", "input": {"text": "one"}, "labels": {"suite": "batch"}}',
      '',
      '{"template": "cli-echo", "input": {"text": 2}, "labels": {"suite": "batch"}}',
      '{"capabilities": ["shell"], "idempotency_key": "cli-batch-k", "labels": {"suite": "batch"}}',
      '{"capabilities": ["shell"], "input": "four", "labels": {"suite": "batch"}}',
    ];
    const earlier = await api.tasks.create({
      capabilities: ['shell'],
      idempotency_key: 'cli-batch-k',
    });
    writeFileSync(join(fixture.workDir, 'batch.jsonl'), `${lines.join('\n')}\n`);
    const text = await cli(['task', 'submit-batch', 'batch.jsonl']);
    expectExit(text, 1);
    const out = text.stdout.split('\n');
    assert.match(out[0] ?? '', /^line 1: tsk_\w+ queued$/);
    assert.match(
      out[1] ?? '',
      /^line 3: refused: VALIDATION_FAILED: body\.tasks\.1\.input: does not match the input schema of cli-echo v1/,
    );
    assert.equal(
      out[2],
      `line 4: ${earlier.id} queued (submitted before with this idempotency key)`,
    );
    assert.match(out[3] ?? '', /^line 5: tsk_\w+ queued$/);
    assert.equal(out[4], 'Submitted 2 of 4 tasks; 1 submitted before, 1 refused.');
    const stored = (await api.tasks.list({ labels: { suite: 'batch' } })).items;
    assert.deepEqual(stored.map((t) => t.input).toReversed(), [{ text: 'one' }, 'four']);

    const fromStdin = ndjson(
      await cli(['task', 'submit-batch', '-', '--json'], {
        input: '{"capabilities": ["shell"], "labels": {"suite": "batch-json"}}\n',
      }),
    );
    assert.equal(fromStdin.length, 1);
    assert.deepEqual([fromStdin[0].line, fromStdin[0].status], [1, 201]);
    assert.match(fromStdin[0].task.id, /^tsk_/);
  });

  test('input that does not match the template exits 1 and names body.input', async () => {
    const result = await cli(['task', 'submit', 'cli-echo', '--input', '{"text": 1}']);
    expectExit(result, 1);
    assert.match(result.stderr, /body\.input: does not match the input schema of cli-echo v1/);
    assert.match(result.stderr, /VALIDATION_FAILED, HTTP 400/);
    assert.equal(result.stdout, '');
  });

  test('submit --wait DURATION prints a task still queued when the wait runs out, and exits 0', async () => {
    const text = await cli(['task', 'submit', '--capability', 'nobody', '--wait', '200ms']);
    expectExit(text, 0);
    const id = submittedId(text);
    assert.match(
      text.stdout,
      new RegExp(
        `^Task ${id} is still queued; wait for it with "orchestra task get ${id} --wait 5m"\\.$`,
        'm',
      ),
    );
    const task = json(
      await cli(['task', 'submit', '--capability', 'nobody', '--wait=1s', '--json']),
    );
    assert.equal(task.state, 'queued');
  });

  test('submit --wait without a duration waits until another call cancels the task; exit 1', async () => {
    const run = 'cli-wait-bare';
    const waiting = cli(['task', 'submit', '--capability', 'x', '--label', `run=${run}`, '--wait']);
    const task = await taskOfRun(run);
    expectExit(await cli(['task', 'cancel', task.id]), 0);
    const result = await waiting;
    expectExit(result, 1);
    assert.match(result.stdout, new RegExp(`^Task ${task.id} was cancelled\\.$`, 'm'));
    assert.match(result.stdout, /^State:\s+cancelled$/m);
  });

  test('submit --follow prints events and progress live until another call cancels it; exit 1', async () => {
    const run = 'cli-follow';
    const following = cli([
      'task',
      'submit',
      '--capability',
      'x',
      '--label',
      `run=${run}`,
      '--follow',
    ]);
    const task = await taskOfRun(run);
    await agentMoves(
      task,
      { state: 'running' },
      { type: 'task.progress', data: { progress: 1, total: 4, message: 'reading' } },
    );
    await agentMoves(
      task,
      { state: 'running' },
      { type: 'task.progress', data: { progress: 4, total: 4 } },
    );
    await agentMoves(task, { state: 'queued' }); // so that the cancellation ends it at once
    expectExit(await cli(['task', 'cancel', task.id]), 0);

    const result = await following;
    expectExit(result, 1);
    assert.match(result.stdout, new RegExp(`^Submitted task ${task.id} `));
    // Said before the first event: a follow of a task nobody can take is not silent.
    assert.match(
      result.stdout,
      /\nWaiting: no connected agent offers capability x; the task stays queued until one connects\.\n +1 /,
    );
    assert.deepEqual(
      eventLines(result.stdout).map((e) => [e.offset, e.type]),
      [
        [1, 'task.queued'],
        [2, 'task.progress'],
        [3, 'task.progress'],
        [4, 'task.cancelled'],
      ],
    );
    const [, quarter, full, cancelled] = eventLines(result.stdout);
    assert.equal(quarter?.summary, '[#####---------------]  25% 1/4 reading');
    assert.equal(full?.summary, '[####################] 100% 4/4');
    assert.match(
      String(cancelled?.summary),
      /^state=cancelled attempt=0 reason=cancelled while queued$/,
    );
    assert.match(result.stdout, new RegExp(`\\nTask ${task.id} was cancelled\\.\\n$`));
  });

  test('submit --follow --json prints one JSON event a line', async () => {
    const run = 'cli-follow-json';
    const following = cli([
      'task',
      'submit',
      '--capability',
      'x',
      '--label',
      `run=${run}`,
      '--follow',
      '--json',
    ]);
    const task = await taskOfRun(run);
    await api.tasks.cancel(task.id);
    const result = await following;
    expectExit(result, 1);
    const items = ndjson(result);
    assert.deepEqual(
      items.map((i) => [i.offset, i.type]),
      [
        [1, 'task.queued'],
        [2, 'task.cancelled'],
      ],
    );
    assert.equal(items[1].data.state, 'cancelled');
  });

  test('events prints the history of an ended task; --after skips; --json; --follow exits 0 on success', async () => {
    const task = await api.tasks.create({ capabilities: ['x'] });
    await agentMoves(
      task,
      { state: 'succeeded', result: { summary: 'done' } },
      { type: 'task.succeeded', data: { state: 'succeeded', attempt: 1, agent_id: 'agt_test' } },
    );
    const all = await cli(['task', 'events', task.id]);
    expectExit(all, 0);
    assert.deepEqual(
      eventLines(all.stdout).map((e) => [e.offset, e.type, e.summary]),
      [
        [1, 'task.queued', 'state=queued attempt=0 priority=0'],
        [2, 'task.succeeded', 'state=succeeded attempt=1 agent_id=agt_test'],
      ],
    );
    assert.equal(all.stdout.trim().split('\n').length, 2);

    const later = await cli(['task', 'events', task.id, '--after', '1', '--json']);
    assert.deepEqual(
      ndjson(later).map((i) => i.offset),
      [2],
    );

    const followed = await cli(['task', 'events', task.id, '--follow']);
    expectExit(followed, 0);
    assert.equal(eventLines(followed.stdout).length, 2);
    const shown = await cli(['task', 'get', task.id]);
    assert.ok(shown.stdout.includes(`Result:\n${JSON.stringify({ summary: 'done' }, null, 2)}`));
  });

  test('events without --follow stops after the events of a running task; --follow exits 1 once it is cancelled', async () => {
    const task = await api.tasks.create({ capabilities: ['x'] });
    const sofar = await cli(['task', 'events', task.id]);
    expectExit(sofar, 0);
    assert.deepEqual(
      eventLines(sofar.stdout).map((e) => e.type),
      ['task.queued'],
    );
    await api.tasks.cancel(task.id);
    const followed = await cli(['task', 'events', task.id, '--follow', '--json']);
    expectExit(followed, 1);
    assert.deepEqual(
      ndjson(followed).map((i) => i.type),
      ['task.queued', 'task.cancelled'],
    );
  });

  test('ls prints a table, newest first, filtered by --state, --template and --label; --limit; --json', async () => {
    const labels = ['--label', 'suite=ls'];
    const a = json(
      await cli(['task', 'submit', 'cli-echo', '--input', '{"text":"a"}', ...labels, '--json']),
    );
    const b = json(await cli(['task', 'submit', '--capability', 'x', ...labels, '--json']));
    expectExit(await cli(['task', 'cancel', b.id]), 0);

    const table = await cli(['task', 'ls', ...labels]);
    expectExit(table, 0);
    const lines = table.stdout.trim().split('\n');
    assert.match(
      String(lines[0]),
      /^ID\s+STATE\s+TEMPLATE\s+PRIORITY\s+ATTEMPT\s+AGENT\s+CREATED$/,
    );
    assert.match(
      String(lines[1]),
      new RegExp(`^${b.id}\\s+cancelled\\s+-\\s+0\\s+0/3\\s+-\\s+\\d{4}-`),
    );
    assert.match(
      String(lines[2]),
      new RegExp(`^${a.id}\\s+queued\\s+cli-echo@1\\s+0\\s+0/3\\s+-\\s+\\d{4}-`),
    );
    assert.equal(lines.length, 3);

    const ids = (result: CliResult) => json(result).map((t: { id: string }) => t.id);
    assert.deepEqual(ids(await cli(['task', 'ls', ...labels, '--state', 'cancelled', '--json'])), [
      b.id,
    ]);
    assert.deepEqual(
      ids(
        await cli(['task', 'ls', ...labels, '--state', 'queued', '--state', 'cancelled', '--json']),
      ),
      [b.id, a.id],
    );
    assert.deepEqual(
      ids(await cli(['task', 'ls', ...labels, '--template', 'cli-echo', '--json'])),
      [a.id],
    );
    assert.deepEqual(ids(await cli(['task', 'list', ...labels, '--limit', '1', '--json'])), [b.id]);
    const none = await cli(['task', 'ls', '--label', 'suite=nothing']);
    expectExit(none, 0);
    assert.equal(none.stdout, '(none)\n');
  });

  test('cancel and retry print what happened; refusals exit 1 with the code', async () => {
    const task = json(await cli(['task', 'submit', '--capability', 'x', '--json']));
    const cancelled = await cli(['task', 'cancel', task.id]);
    expectExit(cancelled, 0);
    assert.equal(cancelled.stdout, `Cancelled task ${task.id}.\n`);

    const retried = await cli(['task', 'retry', task.id]);
    expectExit(retried, 0);
    assert.equal(retried.stdout, `Queued task ${task.id} again (queued, attempts reset).\n`);
    const again = await cli(['task', 'retry', task.id]);
    expectExit(again, 1);
    assert.match(again.stderr, /TASK_NOT_RETRYABLE, HTTP 409/);

    await agentMoves(task, { state: 'running' });
    const requested = json(await cli(['task', 'cancel', task.id, '--json']));
    assert.equal(requested.state, 'running');
    assert.ok(requested.cancel_requested_at);
    const text = await cli(['task', 'cancel', task.id]);
    assert.match(text.stdout, /^Asked the agent holding task tsk_\w+ \(running\) to stop it/);
    assert.match(
      (await cli(['task', 'get', task.id])).stdout,
      /^State:\s+running \(cancellation requested /m,
    );

    const missing = await cli(['task', 'get', 'tsk_missing']);
    expectExit(missing, 1);
    assert.match(missing.stderr, /TASK_NOT_FOUND, HTTP 404/);
  });

  test('get --wait prints the task as it is when the wait runs out', async () => {
    const task = json(await cli(['task', 'submit', '--capability', 'x', '--json']));
    const waited = json(await cli(['task', 'get', task.id, '--wait', '100ms', '--json']));
    assert.equal(waited.state, 'queued');
  });

  describe('usage errors exit 2 and submit nothing', { concurrency: 4 }, () => {
    const usageError = async (args: string[], message: RegExp, input?: string) => {
      const result = await cli(args, input === undefined ? {} : { input });
      expectExit(result, 2);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /Run "orchestra task --help" for usage\./);
      assert.equal(result.stdout, '');
    };

    test('--input that is not JSON', async () => {
      await usageError(
        ['task', 'submit', 'cli-echo', '--input', '{text: hi}', '--label', 'suite=usage'],
        /^error: --input is not valid JSON: /m,
      );
      await usageError(
        ['task', 'submit', 'cli-echo', '--input-file', '-', '--label', 'suite=usage'],
        /standard input is not valid JSON/,
        'nope',
      );
      await usageError(
        ['task', 'submit', 'cli-echo', '--input-file', 'missing.json'],
        /cannot read missing\.json: ENOENT/,
      );
      assert.deepEqual((await api.tasks.list({ labels: { suite: 'usage' } })).items, []);
    });

    test('submit-batch: a file that is missing, empty or not JSON lines submits nothing', async () => {
      await usageError(['task', 'submit-batch'], /task submit-batch needs a FILE/);
      await usageError(
        ['task', 'submit-batch', 'missing.jsonl'],
        /cannot read missing\.jsonl: ENOENT/,
      );
      await usageError(['task', 'submit-batch', '-'], /standard input holds no task/, '\n\n');
      await usageError(
        ['task', 'submit-batch', '-'],
        /standard input line 2 is not valid JSON/,
        '{"capabilities": ["x"], "labels": {"suite": "usage"}}\n{nope}\n',
      );
      await usageError(
        ['task', 'submit-batch', '-'],
        /standard input line 1 must be a JSON object/,
        '["x"]\n',
      );
      assert.deepEqual((await api.tasks.list({ labels: { suite: 'usage' } })).items, []);
    });

    test('neither a template nor a capability, or conflicting flags', async () => {
      await usageError(['task', 'submit'], /task submit needs a template, --capability C, or both/);
      await usageError(
        ['task', 'submit', 'cli-echo', '--input', '{}', '--input-file', 'x.json'],
        /use either --input or --input-file, not both/,
      );
      await usageError(
        ['task', 'submit', '--capability', 'x', '--wait', '--follow'],
        /use either --wait or --follow, not both/,
      );
      await usageError(
        ['task', 'submit', '--capability', 'x', '--wait', '30'],
        /--wait must be a number followed by ms, s, m or h/,
      );
      await usageError(
        ['task', 'submit', '--capability', 'x', '--priority', 'high'],
        /--priority must be a whole number/,
      );
      await usageError(
        ['task', 'submit', '--capability', 'x', '--label', 'env'],
        /--label must be KEY=VALUE/,
      );
    });

    test('missing ids, bad flags and unknown subcommands', async () => {
      await usageError(['task', 'get'], /task get needs a task id/);
      await usageError(['task', 'cancel'], /task cancel needs a task id/);
      await usageError(['task', 'retry'], /task retry needs a task id/);
      await usageError(['task', 'events'], /task events needs a task id/);
      await usageError(
        ['task', 'get', 'tsk_x', '--wait', 'soon'],
        /--wait must be a number followed by/,
      );
      await usageError(['task', 'events', 'tsk_x', '--after', '-1'], /--after/);
      await usageError(
        ['task', 'ls', '--state', 'done'],
        /--state must be one of queued, assigned/,
      );
      await usageError(['task', 'ls', '--limit', '0'], /--limit must be a number from 1/);
      await usageError(['task', 'frobnicate'], /unknown task subcommand "frobnicate"/);
    });

    test('task without a subcommand prints the usage', async () => {
      const result = await runCli(['task'], { cwd: fixture.workDir });
      expectExit(result, 2);
      assert.match(result.stdout, /^Usage: orchestra task/);
      assert.match(result.stderr, /task needs a subcommand/);
    });
  });
});
