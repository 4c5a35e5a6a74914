import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, runCli, startCliServer } from './helpers.ts';

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
  expectExit(await cli(['instances', 'rm', instance.id]), 0);
  const gone = await cli(['instances', 'get', instance.id]);
  expectExit(gone, 1);
  assert.match(gone.stderr, /WORKSPACE_INSTANCE_NOT_FOUND/);
});
