import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Orchestra, RealtimeClient } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, startCliServer } from './helpers.ts';

// `orchestra topics` as a user runs it: a spawned CLI against a spawned `orchestra start`.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('topics');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(async () => {
  await fixture.stop();
});

const cli = (args: string[]) => fixture.cli(args);

test('publish, history, ls and rm', async () => {
  const published = jsonOf(
    await cli(['topics', 'publish', 'cli.room', '--data', '{"text":"hi"}', '--json']),
  );
  assert.equal(published.offset, 1);
  const human = await cli(['topics', 'publish', 'cli.room', '--data', '"two"', '--event', 'note']);
  expectExit(human, 0);
  assert.match(human.stdout, /Published to cli\.room at offset 2/);
  const history = await cli(['topics', 'history', 'cli.room', '--after', '0']);
  expectExit(history, 0);
  assert.deepEqual(
    history.stdout
      .trim()
      .split('\n')
      .map((line) => line.split('\t').filter((_, i) => i !== 1)),
    [
      ['1', 'message', '{"text":"hi"}'],
      ['2', 'note', '"two"'],
    ],
  );
  assert.deepEqual(
    jsonOf(await cli(['topics', 'history', 'cli.room', '--last', '1', '--json'])).messages.map(
      (m: { offset: number }) => m.offset,
    ),
    [2],
  );
  const list = await cli(['topics', 'ls', '--prefix', 'cli.']);
  expectExit(list, 0);
  assert.match(list.stdout, /cli\.room\s+\S+\s+2\s/);
  expectExit(await cli(['topics', 'rm', 'cli.room']), 0);
  const gone = await cli(['topics', 'rm', 'cli.room']);
  expectExit(gone, 1);
  assert.match(gone.stderr, /TOPIC_NOT_FOUND/);
});

test('token issues a realtime token that a RealtimeClient can use; presence lists it', async () => {
  const issued = jsonOf(
    await cli(['topics', 'token', 'cli.lobby', '--client-id', 'ada', '--ttl', '60', '--json']),
  );
  assert.match(issued.token, /^ort_/);
  const rt = new RealtimeClient({ url: fixture.server.url, apiKey: issued.token });
  try {
    await rt.subscribe('cli.lobby', { presence: true, info: { name: 'Ada' } });
    const presence = jsonOf(await cli(['topics', 'presence', 'cli.lobby', '--json']));
    assert.deepEqual(
      presence.map((m: { client_id: string }) => m.client_id),
      ['ada'],
    );
    // The SDK's REST view says the same.
    assert.deepEqual(
      (await api.topics.presence('cli.lobby')).map((m) => m.info),
      [{ name: 'Ada' }],
    );
  } finally {
    rt.close();
  }
});

test('bad input exits 2 with a usage error, or 1 with the server’s code', async () => {
  const noData = await cli(['topics', 'publish', 'cli.x']);
  expectExit(noData, 2);
  assert.match(noData.stderr, /--data/);
  const badJson = await cli(['topics', 'publish', 'cli.x', '--data', '{nope']);
  expectExit(badJson, 2);
  const both = await cli(['topics', 'history', 'cli.x', '--after', '1', '--last', '1']);
  expectExit(both, 2);
  const system = await cli(['topics', 'publish', 'agents', '--data', '1']);
  expectExit(system, 1);
  assert.match(system.stderr, /PERMISSION_DENIED/);
  const badName = await cli(['topics', 'history', 'a..b']);
  expectExit(badName, 1);
  assert.match(badName.stderr, /VALIDATION_FAILED/);
  const help = await cli(['topics', '--help']);
  expectExit(help, 0);
  assert.match(help.stdout, /topics token TOPIC/);
});
