import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pty from '@lydell/node-pty';
import { Orchestra } from '@orchestra/sdk';
import {
  type CliServer,
  childEnv,
  eventually,
  expectExit,
  jsonOf,
  ORCHESTRA_BIN,
  runCli,
  startCliServer,
} from './helpers.ts';

// `orchestra instances` as a user runs it: a spawned CLI against a spawned server, the
// command's output streamed to the terminal and its exit code passed on.

let fixture: CliServer;

before(async () => {
  fixture = await startCliServer('instances');
  const api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
  await api.workspaceTemplates.create({ name: 'shell', env: { GREETING: 'hello' } });
});
after(async () => {
  await fixture.stop();
});

/** `instances exec ID FLAGS -- COMMAND`: the connection flags go before the `--`. */
const exec = (id: string, flags: string[], command: string[]) =>
  runCli(
    [
      'instances',
      'exec',
      id,
      '--url',
      fixture.server.url,
      '--api-key',
      fixture.adminKey,
      ...flags,
      ...(command.length > 0 ? ['--', ...command] : []),
    ],
    { cwd: fixture.workDir },
  );

test('create, list, exec with the exit code passed on, stop, get and rm; usage errors exit 2', async () => {
  const { cli } = fixture;
  const created = await cli(['instances', 'create', 'shell', '--label', 'team=cli', '--json']);
  expectExit(created, 0);
  const instance = jsonOf(created);
  assert.equal(instance.state, 'running');
  const listed = await cli(['instances', 'ls', '--state', 'running', '--label', 'team=cli']);
  expectExit(listed, 0);
  assert.match(listed.stdout, new RegExp(`${instance.id}.*running.*shell v1.*team=cli`));

  const ran = await exec(
    instance.id,
    ['--env', 'WHO=cli'],
    ['sh', '-c', 'echo "$GREETING $WHO"; echo to-stderr >&2; exit 3'],
  );
  expectExit(ran, 3);
  assert.equal(ran.stdout, 'hello cli\n');
  assert.equal(ran.stderr, 'to-stderr\n');
  const slow = await exec(instance.id, ['--timeout', '300ms'], ['sleep', '30']);
  expectExit(slow, 124);
  assert.match(slow.stderr, /timed out/);
  const events = await exec(instance.id, ['--json'], ['echo', 'x']);
  expectExit(events, 0);
  const types = events.stdout
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { type: string }).type);
  assert.deepEqual([types[0], types.at(-1)], ['exec.started', 'exec.exited']);

  expectExit(await exec(instance.id, [], []), 2);
  expectExit(await cli(['instances', 'ls', '--state', 'sleeping']), 2);
  const outside = await exec(instance.id, ['--cwd', '..'], ['pwd']);
  expectExit(outside, 1);
  assert.match(outside.stderr, /VALIDATION_FAILED/);

  const stopped = await cli(['instances', 'stop', instance.id]);
  expectExit(stopped, 0);
  assert.match(stopped.stdout, /is stopped: stopped by key_/);
  const shown = await cli(['instances', 'get', instance.id]);
  assert.match(shown.stdout, /State:\s+stopped/);
  assert.match(shown.stdout, /Idle stop: never/);
  const timed = await cli([
    'instances',
    'create',
    'shell',
    '--stopped',
    '--idle-timeout',
    '30m',
    '--ttl',
    '2d',
    '--json',
  ]);
  expectExit(timed, 0);
  const lifetimes = jsonOf(timed);
  assert.equal(lifetimes.idle_timeout_ms, 1_800_000);
  assert.equal(Date.parse(lifetimes.expires_at) - Date.parse(lifetimes.created_at), 172_800_000);
  const shownTimed = await cli(['instances', 'get', lifetimes.id]);
  assert.match(shownTimed.stdout, /Idle stop: after 1800s without activity/);
  assert.match(shownTimed.stdout, new RegExp(`Expires:\\s+${lifetimes.expires_at}`));
  expectExit(await cli(['instances', 'create', 'shell', '--ttl', 'forever']), 2);
  const usage = await cli(['instances', 'usage', instance.id]);
  expectExit(usage, 0);
  assert.match(usage.stdout, /^Node .*CPUs.*limits by (cgroup-v1|cgroup-v2)/);
  assert.match(usage.stdout, new RegExp(`${instance.id}\\s+stopped`));
  const advice = await cli(['instances', 'usage', '--recommend']);
  expectExit(advice, 0);
  const quotas = await cli(['instances', 'quotas']);
  expectExit(quotas, 0);
  assert.match(
    quotas.stdout,
    /max_running_instances\s+0\s+100\s+setting \(ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES\)/,
  );
  expectExit(await cli(['instances', 'rm', lifetimes.id]), 0);
  expectExit(await cli(['instances', 'rm', instance.id]), 0);
  const gone = await cli(['instances', 'get', instance.id]);
  expectExit(gone, 1);
  assert.match(gone.stderr, /WORKSPACE_INSTANCE_NOT_FOUND/);
});

test('files: put from standard input or a file, cat, ls, stat, mkdir, mv, search, tree, download and upload, rm; `orchestra exec` runs a command', async () => {
  const { cli } = fixture;
  const created = await cli(['instances', 'create', 'shell', '--json']);
  const id = jsonOf(created).id as string;

  const piped = await cli(['files', 'put', id, 'notes/todo.txt'], { input: 'write the docs\n' });
  expectExit(piped, 0);
  assert.match(piped.stdout, /Wrote notes\/todo\.txt \(15 bytes, sha256 [0-9a-f]{64}\)/);
  writeFileSync(join(fixture.workDir, 'local.txt'), 'from a local file\n');
  expectExit(await cli(['files', 'put', id, 'src/main.txt', 'local.txt']), 0);
  const cat = await cli(['files', 'cat', id, 'notes/todo.txt']);
  expectExit(cat, 0);
  assert.equal(cat.stdout, 'write the docs\n');
  const listed = await cli(['files', 'ls', id]);
  assert.match(listed.stdout, /notes\/\s+directory/);
  assert.match(listed.stdout, /src\/\s+directory/);
  const stat = await cli(['files', 'stat', id, 'src/main.txt', '--hash', '--json']);
  const hash = jsonOf(stat).sha256 as string;
  assert.match(hash, /^[0-9a-f]{64}$/);
  const stale = await cli(['files', 'put', id, 'src/main.txt', '--if-match', '0'.repeat(64)], {
    input: 'lost',
  });
  expectExit(stale, 1);
  assert.match(stale.stderr, /PRECONDITION_FAILED/);
  expectExit(
    await cli(['files', 'put', id, 'src/main.txt', '--if-match', hash], { input: 'kept\n' }),
    0,
  );

  expectExit(await cli(['files', 'mkdir', id, 'a/b', '-p']), 0);
  expectExit(await cli(['files', 'mv', id, 'notes/todo.txt', 'a/b/todo.txt']), 0);
  const found = await cli(['files', 'search', id, 'docs']);
  expectExit(found, 0);
  assert.equal(found.stdout, 'a/b/todo.txt:1:write the docs\n');
  expectExit(await cli(['files', 'search', id, 'nowhere-to-be-found']), 1);
  const tree = await cli(['files', 'tree', id]);
  assert.match(tree.stdout, /└── todo\.txt \(15\)/);
  assert.match(tree.stdout, /2 files, 3 directories/);

  expectExit(await cli(['files', 'download', id, 'a', '-o', 'a.tar']), 0);
  assert.ok(existsSync(join(fixture.workDir, 'a.tar')));
  const uploaded = await cli(['files', 'upload', id, 'a.tar', '--path', 'copy']);
  expectExit(uploaded, 0);
  assert.equal((await cli(['files', 'cat', id, 'copy/a/b/todo.txt'])).stdout, 'write the docs\n');
  expectExit(await cli(['files', 'rm', id, 'copy']), 1);
  expectExit(await cli(['files', 'rm', id, 'copy', '-r']), 0);
  const escaped = await cli(['files', 'cat', id, '../../admin-key']);
  expectExit(escaped, 1);
  assert.match(escaped.stderr, /VALIDATION_FAILED/);
  expectExit(await cli(['files', 'cat', id]), 2);

  // Checkpoints: save, change, diff, restore, undo.
  const saved = await cli(['checkpoints', 'create', id, '-m', 'before edits', '--json']);
  expectExit(saved, 0);
  const cp = jsonOf(saved).id as string;
  await cli(['files', 'put', id, 'src/main.txt'], { input: 'edited\n' });
  const changes = await cli(['checkpoints', 'diff', id, cp, '--stat']);
  expectExit(changes, 0);
  assert.match(changes.stdout, /modified\s+src\/main\.txt\s+1\s+1/);
  const patch = await cli(['checkpoints', 'diff', id, cp]);
  assert.match(patch.stdout, /^\+edited$/m);
  const restored = await cli(['checkpoints', 'restore', id, cp, '--path', 'src']);
  expectExit(restored, 0);
  const undo = /To undo: orchestra checkpoints restore \S+ (chk_\w+)/.exec(restored.stdout)?.[1];
  assert.ok(undo, restored.stdout);
  assert.equal((await cli(['files', 'cat', id, 'src/main.txt'])).stdout, 'kept\n');
  expectExit(await cli(['checkpoints', 'restore', id, undo]), 0);
  assert.equal((await cli(['files', 'cat', id, 'src/main.txt'])).stdout, 'edited\n');
  const listedCps = await cli(['checkpoints', 'ls', id]);
  assert.match(listedCps.stdout, /before edits/);
  assert.match((await cli(['checkpoints', 'get', id, cp])).stdout, /Message:\s+before edits/);
  expectExit(await cli(['checkpoints', 'get', id]), 2);
  const missing = await cli(['checkpoints', 'get', id, 'chk_none']);
  expectExit(missing, 1);
  assert.match(missing.stderr, /CHECKPOINT_NOT_FOUND/);
  await cli(['files', 'put', id, 'src/main.txt'], { input: 'kept\n' });

  const ran = await runCli(
    [
      'exec',
      id,
      '--url',
      fixture.server.url,
      '--api-key',
      fixture.adminKey,
      '--',
      'cat',
      'src/main.txt',
    ],
    { cwd: fixture.workDir },
  );
  expectExit(ran, 0);
  assert.equal(ran.stdout, 'kept\n');
  expectExit(await cli(['instances', 'rm', id]), 0);
});

test('terminals: open, send, screen, ls, close; `term` typed into from a pipe passes the exit code on', async () => {
  const { cli } = fixture;
  const instance = jsonOf(await cli(['instances', 'create', 'shell', '--json'])).id as string;
  const opened = await cli(['terminals', 'open', instance, '--cols', '100', '--json']);
  expectExit(opened, 0);
  const terminal = jsonOf(opened);
  assert.deepEqual([terminal.state, terminal.cols, terminal.rows], ['running', 100, 24]);
  expectExit(
    await cli(['terminals', 'send', instance, terminal.id, 'echo "sent-$((4 * 4))"', '--enter']),
    0,
  );
  // The screen shows the output once the shell ran it.
  let screen = '';
  for (
    const deadline = Date.now() + 60_000;
    !/^sent-16$/m.test(screen) && Date.now() < deadline;
  ) {
    const read = await cli(['terminals', 'screen', instance, terminal.id]);
    expectExit(read, 0);
    screen = read.stdout;
  }
  assert.match(screen, /^sent-16$/m);
  const listed = await cli(['terminals', 'ls', instance]);
  expectExit(listed, 0);
  assert.match(listed.stdout, new RegExp(`${terminal.id}\\s+running\\s+bash\\s+100x24\\s+0`));

  /** `term INSTANCE ARGS… --url … [-- COMMAND]`: the connection flags go before the `--`. */
  const term = (args: string[], input: string, command: string[] = []) =>
    runCli(
      [
        ...['term', instance, ...args],
        ...['--url', fixture.server.url, '--api-key', fixture.adminKey],
        ...(command.length > 0 ? ['--', ...command] : []),
      ],
      { cwd: fixture.workDir, input },
    );
  // Attached to the one that runs: the screen first, then what the piped input does.
  const attached = await term([terminal.id], 'echo "piped-$((6 * 6))"\nexit 4\n');
  expectExit(attached, 4);
  assert.match(attached.stdout, /sent-16/);
  assert.match(attached.stdout, /piped-36/);
  assert.equal(
    jsonOf(await cli(['terminals', 'get', instance, terminal.id, '--json'])).state,
    'exited',
  );
  // A new one, with its command after --.
  const fresh = await term([], 'abc\n', ['sh', '-c', 'read line; echo "got-$line"; exit 5']);
  expectExit(fresh, 5);
  assert.match(fresh.stdout, /got-abc/);

  expectExit(await cli(['terminals', 'close', instance, terminal.id]), 0);
  const gone = await cli(['terminals', 'get', instance, terminal.id]);
  expectExit(gone, 1);
  assert.match(gone.stderr, /TERMINAL_NOT_FOUND/);
  expectExit(await cli(['terminals', 'ls', instance, '--state', 'dead']), 2);
  expectExit(await cli(['terminals', 'screen', instance, terminal.id, '--scrollback', '-1']), 2);
  expectExit(await term(['trm_a', 'trm_b'], ''), 2);
  const help = await cli(['term', '--help']);
  expectExit(help, 0);
  assert.match(help.stdout, /Ctrl-\]/);
  expectExit(await cli(['instances', 'rm', instance]), 0);
});

test('`term` from a terminal: raw mode, the local size, Ctrl-] detaches and leaves it running', async () => {
  const { cli } = fixture;
  const instance = jsonOf(await cli(['instances', 'create', 'shell', '--json'])).id as string;
  // The CLI on a PTY of the test's own, as a user's terminal emulator would run it.
  const user = pty.spawn(
    process.execPath,
    [ORCHESTRA_BIN, 'term', instance, '--url', fixture.server.url, '--api-key', fixture.adminKey],
    { cols: 91, rows: 27, cwd: fixture.workDir, env: childEnv() },
  );
  let seen = '';
  let exitCode: number | undefined;
  user.onData((data) => {
    seen += data;
  });
  user.onExit(({ exitCode: code }) => {
    exitCode = code;
  });
  try {
    // (The prompt may be followed by escape sequences: a screen drawn on attach ends with one.)
    await eventually('a prompt', () => /[#$] /.test(seen));
    user.write('stty size; echo "tty-$((9 * 9))"\r');
    await eventually(`the output (got ${JSON.stringify(seen.slice(-200))})`, () =>
      seen.includes('tty-81'),
    );
    assert.match(seen, /27 91/);
    user.write('\x1d');
    await eventually('the CLI exits', () => exitCode !== undefined);
    assert.equal(exitCode, 0);
    assert.match(seen, /detached; the terminal goes on \(orchestra term ins_\S+ (trm_\S+)\)/);
  } finally {
    if (exitCode === undefined) user.kill('SIGKILL');
  }
  const terminal = /orchestra term ins_\S+ (trm_[^\s)]+)/.exec(seen)?.[1] as string;
  const after = jsonOf(await cli(['terminals', 'get', instance, terminal, '--json']));
  assert.deepEqual([after.state, after.cols, after.rows], ['running', 91, 27]);
  expectExit(await cli(['instances', 'rm', instance]), 0);
});

test('ports: share prints a link that works without a credential, ls lists it, unshare revokes it', async () => {
  const { cli } = fixture;
  const api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
  await api.workspaceTemplates.create({
    name: 'cli-web',
    ports: [{ name: 'web' }],
    startup: {
      command: [
        'node',
        '-e',
        "require('http').createServer((q, s) => s.end('cli-app ' + q.url)).listen(Number(process.env.PORT_WEB), '127.0.0.1')",
      ],
    },
  });
  const instance = await api.instances.create({ template: 'cli-web' });
  const port = String(instance.ports[0]?.port);
  const shared = await cli(['ports', 'share', instance.id, port, '--expires', '30m']);
  expectExit(shared, 0);
  const link = shared.stdout.split('\n')[0] ?? '';
  assert.match(link, /\/share\/ors_[\w-]+\/$/);
  let text = '';
  for (const deadline = Date.now() + 60_000; text !== 'cli-app /x' && Date.now() < deadline; ) {
    text = await (await fetch(`${link}x`)).text();
  }
  assert.equal(text, 'cli-app /x');
  const listed = await cli(['ports', 'ls', instance.id]);
  expectExit(listed, 0);
  assert.match(listed.stdout, new RegExp(`web\\s+${port}\\s+http`));
  const shareId = /unshare \S+ (shr_\S+)\)/.exec(shared.stdout)?.[1] as string;
  assert.match(listed.stdout, new RegExp(shareId));
  expectExit(await cli(['ports', 'unshare', instance.id, shareId]), 0);
  assert.equal((await fetch(`${link}x`)).status, 404);
  expectExit(await cli(['ports', 'share', instance.id, '70000']), 2);
  expectExit(await cli(['ports', 'share', instance.id, port, '--expires', '8d']), 2);
  expectExit(await cli(['instances', 'rm', instance.id]), 0);
});
