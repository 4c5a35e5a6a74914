import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Orchestra, type Session, type Task } from '@orchestra/sdk';
import {
  type CliResult,
  type CliServer,
  expectExit,
  followCli,
  jsonOf,
  runCli,
  startCliServer,
} from './helpers.ts';

// `orchestra sessions` as a user runs it: a spawned `node bin/orchestra.js` against a
// spawned `orchestra start`. No agent connects, so tasks submitted in a session stay
// queued (unfinished) until a test cancels them. Each test uses sessions of its own.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('sessions');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(async () => {
  await fixture.stop();
});

const cli = (args: string[]) => fixture.cli(args);

/** The NDJSON lines of a command's output. */
function ndjson(result: CliResult): any[] {
  return result.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line));
}

/** The cells of each row of a table, split on the two-space column gaps. */
function tableRows(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split('\n')
    .map((line) => line.split(/ {2,}/));
}

/** The lines of `sessions events` output. */
function lines(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line !== '');
}

async function usageError(args: string[], message: RegExp): Promise<void> {
  const result = await cli(args);
  expectExit(result, 2);
  assert.match(result.stderr, message);
  assert.match(result.stderr, /Run "orchestra sessions --help" for usage/);
  assert.equal(result.stdout, '');
}

describe('orchestra sessions', { concurrency: 4 }, () => {
  test('create prints the id on the first line; --json, --name, --label and --strategy', async () => {
    const created = await cli(['sessions', 'create', '--name', 'chat-1']);
    expectExit(created, 0);
    const [first, second] = lines(created.stdout);
    assert.match(first ?? '', /^ses_\w+$/);
    assert.equal(second, `Created session ${first} (chat-1), strategy enqueue.`);
    const session = await api.sessions.get(first ?? '');
    assert.equal(session.name, 'chat-1');
    assert.equal(session.multitask_strategy, 'enqueue');

    const json: Session = jsonOf(
      await cli([
        'sessions',
        'create',
        '--label',
        'suite=create',
        '--label',
        'team=a=b',
        '--strategy',
        'reject',
        '--json',
      ]),
    );
    assert.equal(json.name, null);
    assert.deepEqual(json.labels, { suite: 'create', team: 'a=b' });
    assert.equal(json.multitask_strategy, 'reject');
    assert.deepEqual(json.tasks, { total: 0, unfinished: [] });
    assert.deepEqual(await api.sessions.get(json.id), json);

    const bare = await cli(['sessions', 'create']);
    expectExit(bare, 0);
    assert.match(bare.stdout, /^ses_\w+\nCreated session ses_\w+, strategy enqueue\.\n/);
  });

  test('ls prints a table, newest first, filtered by --label; --limit; --json', async () => {
    const older = await api.sessions.create({ name: 'ls-old', labels: { suite: 'ls' } });
    const newer = await api.sessions.create({
      labels: { suite: 'ls' },
      multitask_strategy: 'interrupt',
    });
    await api.sessions.create({ name: 'ls-other', labels: { suite: 'ls-other' } });
    const task = await api.tasks.create({ capabilities: ['ls:none'], session_id: older.id });

    const result = await cli(['sessions', 'ls', '--label', 'suite=ls']);
    expectExit(result, 0);
    const [header, ...rows] = tableRows(result.stdout);
    assert.deepEqual(header, ['ID', 'NAME', 'STRATEGY', 'TASKS', 'UNFINISHED', 'CREATED']);
    assert.deepEqual(rows, [
      [newer.id, '-', 'interrupt', '0', '0', newer.created_at],
      [older.id, 'ls-old', 'enqueue', '1', '1', older.created_at],
    ]);

    const limited = await cli(['sessions', 'ls', '--label', 'suite=ls', '--limit', '1']);
    expectExit(limited, 0);
    assert.equal(tableRows(limited.stdout).length, 2);
    assert.match(limited.stderr, /Showing the newest 1 sessions; use --limit N for more/);

    const listed: Session[] = jsonOf(
      await cli(['sessions', 'ls', '--label', 'suite=ls', '--json']),
    );
    assert.deepEqual(
      listed.map((s) => [s.id, s.tasks]),
      [
        [newer.id, { total: 0, unfinished: [] }],
        [older.id, { total: 1, unfinished: [task.id] }],
      ],
    );

    const none = await cli(['sessions', 'ls', '--label', 'suite=nobody']);
    expectExit(none, 0);
    assert.equal(none.stdout, '(none)\n');
    assert.deepEqual(
      jsonOf(await cli(['sessions', 'ls', '--label', 'suite=nobody', '--json'])),
      [],
    );
  });

  test('task submit --session runs the task in it; task ls --session; get shows unfinished tasks', async () => {
    const session = await api.sessions.create({ name: 'get-me', labels: { suite: 'get' } });
    const submitted = await cli([
      'task',
      'submit',
      '--capability',
      'get:none',
      '--session',
      session.id,
      '--json',
    ]);
    const first: Task = jsonOf(submitted);
    assert.equal(first.session_id, session.id);
    const second: Task = jsonOf(
      await cli(['task', 'submit', '--capability', 'get:none', '--session', session.id, '--json']),
    );
    const other = await api.tasks.create({ capabilities: ['get:none'] });

    const listed: Task[] = jsonOf(await cli(['task', 'ls', '--session', session.id, '--json']));
    assert.deepEqual(listed.map((t) => t.id).sort(), [first.id, second.id].sort());
    assert.ok(!listed.some((t) => t.id === other.id));
    const table = await cli(['task', 'ls', '--session', session.id]);
    expectExit(table, 0);
    assert.equal(tableRows(table.stdout).length, 3, table.stdout);

    const shown = await cli(['sessions', 'get', session.id]);
    expectExit(shown, 0);
    assert.match(shown.stdout, new RegExp(`^ID: +${session.id}$`, 'm'));
    assert.match(shown.stdout, /^Name: +get-me$/m);
    assert.match(shown.stdout, /^Strategy: +enqueue$/m);
    assert.match(shown.stdout, /^Labels: +suite=get$/m);
    assert.match(shown.stdout, /^Tasks: +2 \(2 unfinished\)$/m);
    assert.match(
      shown.stdout,
      new RegExp(`^Unfinished tasks:\\n  ${first.id}\\n  ${second.id}$`, 'm'),
    );

    const json: Session = jsonOf(await cli(['sessions', 'get', session.id, '--json']));
    assert.deepEqual(json, await api.sessions.get(session.id));
    assert.deepEqual(json.tasks, { total: 2, unfinished: [first.id, second.id] });

    await api.tasks.cancel(first.id);
    await api.tasks.cancel(second.id);
    const done = await cli(['sessions', 'get', session.id]);
    assert.match(done.stdout, /^Tasks: +2 \(0 unfinished\)$/m);
    assert.match(done.stdout, /^Unfinished tasks: \(none\)$/m);
  });

  test('rm refuses a busy session (exit 1, SESSION_BUSY), then deletes it; delete alias; --json', async () => {
    const session = await api.sessions.create({ name: 'rm-me' });
    const task = await api.tasks.create({ capabilities: ['rm:none'], session_id: session.id });

    const busy = await cli(['sessions', 'rm', session.id]);
    expectExit(busy, 1);
    assert.match(busy.stderr, /SESSION_BUSY, HTTP 409/);
    assert.equal(busy.stdout, '');

    await api.tasks.cancel(task.id);
    const removed = await cli(['sessions', 'rm', session.id]);
    expectExit(removed, 0);
    assert.equal(removed.stdout, `Deleted session ${session.id} with its task and their events.\n`);
    // The task went with it (decision 0011).
    assert.equal((await api.tasks.list({ session_id: session.id })).items.length, 0);
    const gone = await cli(['sessions', 'get', session.id]);
    expectExit(gone, 1);
    assert.match(gone.stderr, /SESSION_NOT_FOUND, HTTP 404/);

    const other = await api.sessions.create({});
    assert.deepEqual(jsonOf(await cli(['sessions', 'delete', other.id, '--json'])), {
      deleted: other.id,
      deleted_tasks: 0,
    });
  });

  test('events prints the history and exits; --after; --json', async () => {
    const session = await api.sessions.create({ name: 'events-1' });
    const task = await api.tasks.create({ capabilities: ['ev:none'], session_id: session.id });
    await api.tasks.cancel(task.id);

    const history = ndjson(await cli(['sessions', 'events', session.id, '--json']));
    assert.equal(history[0]?.type, 'session.created');
    assert.equal(history[0]?.offset, 1);
    assert.ok(history.length >= 3, JSON.stringify(history));
    for (const item of history.slice(1)) assert.equal(item.data.task_id, task.id);
    assert.ok(history.some((item) => item.type === 'task.cancelled'));
    assert.deepEqual(
      history.map((item) => item.offset),
      history.map((_, i) => i + 1),
    );

    const text = await cli(['sessions', 'events', session.id]);
    expectExit(text, 0);
    const printed = lines(text.stdout);
    assert.equal(printed.length, history.length);
    assert.match(
      printed[0] ?? '',
      /^ {3}1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}session\.created +- +name=events-1 multitask_strategy=enqueue$/,
    );
    for (const [i, line] of printed.slice(1).entries()) {
      const item = history[i + 1];
      assert.ok(line.startsWith(`${String(item.offset).padStart(4)}  ${item.time}  ${item.type}`));
      assert.match(line, new RegExp(` {2}${task.id}(  |$)`));
      assert.doesNotMatch(line, /task_id=/);
    }

    const later = ndjson(await cli(['sessions', 'events', session.id, '--after', '1', '--json']));
    assert.deepEqual(later, history.slice(1));
  });

  test('events --follow goes on with new events until interrupted', async () => {
    const session = await api.sessions.create({ name: 'events-follow' });
    const following = followCli(fixture, ['sessions', 'events', session.id, '--follow']);
    try {
      await following.until('session.created line', () =>
        following.stdout().includes('session.created'),
      );
      const task = await api.tasks.create({
        capabilities: ['follow:none'],
        session_id: session.id,
      });
      await following.until('event of the new task', () => following.stdout().includes(task.id));
      await api.tasks.cancel(task.id);
      await following.until('task.cancelled line', () =>
        following.stdout().includes('task.cancelled'),
      );
      // Caught up, it goes on waiting for more.
      await sleep(500);
      assert.equal(following.exitCode(), null, `exited by itself\nstdout: ${following.stdout()}`);
      assert.equal(following.stderr(), '');
    } finally {
      await following.stop();
    }
    const stdout = following.stdout();
    assert.match(lines(stdout)[0] ?? '', /^ {3}1 {2}\S+ {2}session\.created/);
  });

  describe('errors', () => {
    test('unknown session ids exit 1 with SESSION_NOT_FOUND', async () => {
      for (const args of [
        ['sessions', 'get', 'ses_nope'],
        ['sessions', 'rm', 'ses_nope'],
        ['sessions', 'events', 'ses_nope'],
        ['sessions', 'events', 'ses_nope', '--follow'],
      ]) {
        const result = await cli(args);
        expectExit(result, 1);
        assert.match(result.stderr, /\(SESSION_NOT_FOUND, HTTP 404\)/, args.join(' '));
        assert.equal(result.stdout, '');
      }
      const submit = await cli(['task', 'submit', '--capability', 'x', '--session', 'ses_nope']);
      expectExit(submit, 1);
      assert.match(submit.stderr, /session_id/);
      assert.equal(submit.stdout, '');
      const get = await cli(['sessions', 'get', 'ses_nope']);
      assert.match(
        get.stderr,
        /^error: Session "ses_nope" does not exist \(SESSION_NOT_FOUND, HTTP 404\)$/m,
      );
    });

    test('usage errors exit 2', async () => {
      await usageError(['sessions', 'get'], /sessions get needs a session id/);
      await usageError(['sessions', 'rm'], /sessions rm needs a session id/);
      await usageError(['sessions', 'events'], /sessions events needs a session id/);
      await usageError(['sessions', 'get', 'a', 'b'], /sessions get takes one session id/);
      await usageError(['sessions', 'ls', 'extra'], /sessions ls takes no arguments/);
      await usageError(
        ['sessions', 'create', '--strategy', 'queue'],
        /--strategy must be one of reject, enqueue, interrupt; got "queue"/,
      );
      await usageError(['sessions', 'create', '--label', 'env'], /--label must be KEY=VALUE/);
      await usageError(['sessions', 'ls', '--limit', '0'], /--limit must be a number from 1/);
      await usageError(['sessions', 'events', 'ses_x', '--after', '-1'], /--after/);
      await usageError(['sessions', 'create', '--bogus'], /Unknown option '--bogus'/);
      await usageError(['sessions', 'frobnicate'], /unknown sessions subcommand "frobnicate"/);
    });

    test('sessions without a subcommand prints the usage and exits 2', async () => {
      const result = await runCli(['sessions'], { cwd: fixture.workDir });
      expectExit(result, 2);
      assert.match(result.stdout, /^Usage: orchestra sessions/);
      assert.match(result.stderr, /sessions needs a subcommand/);
    });
  });
});
