import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, startCliServer } from './helpers.ts';

// `orchestra config` and `orchestra services` as a user runs them: a spawned CLI against a
// spawned `orchestra start`.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('config');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(async () => {
  await fixture.stop();
});

const cli = (args: string[], input?: string) =>
  fixture.cli(args, input === undefined ? {} : { input });

test('put, get, ls and rm, per environment, with compare-and-set', async () => {
  const put = await cli(['config', 'put', 'app/db/pool', '{"size":10}', '--env', 'prod']);
  expectExit(put, 0);
  assert.match(put.stdout, /Set app\/db\/pool in prod: version 1, revision \d+/);
  expectExit(await cli(['config', 'put', 'app/name', 'orchestra', '--string']), 0);
  const file = join(fixture.workDir, 'limits.json');
  writeFileSync(file, '{"rps": 50}');
  expectExit(await cli(['config', 'put', 'app/limits', '--file', file, '--env', 'prod']), 0);
  expectExit(await cli(['config', 'put', 'app/flag', '--file', '-', '--env', 'prod'], 'true'), 0);

  const got = await cli(['config', 'get', 'app/db/pool', '--env', 'prod']);
  expectExit(got, 0);
  assert.deepEqual(JSON.parse(got.stdout), { size: 10 });
  assert.match(got.stderr, /version 1, revision \d+/);
  assert.equal((await api.config.get('app/name')).value, 'orchestra');

  const listed = await cli(['config', 'ls', '--prefix', 'app/', '--env', 'prod']);
  expectExit(listed, 0);
  const rows = listed.stdout.trim().split('\n');
  assert.match(rows[0] ?? '', /^KEY\s+VERSION\s+REVISION\s+UPDATED\s+VALUE$/);
  assert.deepEqual(
    rows.slice(1).map((r) => r.split(/\s+/)[0]),
    ['app/db/pool', 'app/flag', 'app/limits'],
  );
  const paged = jsonOf(
    await cli(['config', 'ls', '--prefix', 'app/', '--env', 'prod', '--limit', '2', '--json']),
  );
  assert.equal(paged.items.length, 2);
  assert.equal(paged.more, true);

  // Compare-and-set: a stale version is refused and nothing changes.
  const stale = await cli([
    'config',
    'put',
    'app/db/pool',
    '{"size":99}',
    '--env',
    'prod',
    '--if-version',
    '7',
  ]);
  expectExit(stale, 1);
  assert.match(stale.stderr, /PRECONDITION_FAILED/);
  const exists = await cli(['config', 'put', 'app/db/pool', '1', '--env', 'prod', '--if-absent']);
  expectExit(exists, 1);
  expectExit(
    await cli([
      'config',
      'put',
      'app/db/pool',
      '{"size":20}',
      '--env',
      'prod',
      '--if-version',
      '1',
    ]),
    0,
  );
  assert.deepEqual((await api.config.get('app/db/pool', { env: 'prod' })).value, { size: 20 });

  const removed = await cli(['config', 'rm', 'app/flag', '--env', 'prod', '--reason', 'unused']);
  expectExit(removed, 0);
  assert.match(removed.stdout, /Deleted app\/flag in prod: version 2/);
  const gone = await cli(['config', 'get', 'app/flag', '--env', 'prod']);
  expectExit(gone, 1);
  assert.match(gone.stderr, /CONFIG_KEY_NOT_FOUND/);
});

test('history, diff and revert', async () => {
  await api.config.set('svc/timeouts', { read: 1, write: 2 }, { reason: 'first' });
  await api.config.set('svc/timeouts', { read: 5, write: 2, retry: true }, { reason: 'slower' });
  const history = await cli(['config', 'history', 'svc/timeouts']);
  expectExit(history, 0);
  const lines = history.stdout.trim().split('\n');
  assert.match(lines[0] ?? '', /^VERSION\s+REVISION\s+TYPE\s+AT\s+BY\s+REASON\s+VALUE$/);
  assert.deepEqual(
    lines.slice(1).map((l) =>
      l
        .split(/\s+/)
        .slice(0, 1)
        .concat(l.includes('slower') ? 'slower' : 'first'),
    ),
    [
      ['2', 'slower'],
      ['1', 'first'],
    ],
  );
  const diff = await cli(['config', 'diff', 'svc/timeouts', '1', '2']);
  expectExit(diff, 0);
  assert.match(diff.stdout, /version 1 → 2/);
  assert.match(diff.stdout, /~ \/read: 1 → 5/);
  assert.match(diff.stdout, /\+ \/retry: true/);
  const reverted = await cli(['config', 'revert', 'svc/timeouts', '1', '--reason', 'too slow']);
  expectExit(reverted, 0);
  assert.match(reverted.stdout, /now version 3/);
  const item = await api.config.get('svc/timeouts');
  assert.deepEqual([item.value, item.version], [{ read: 1, write: 2 }, 3]);
  const json = jsonOf(await cli(['config', 'history', 'svc/timeouts', '--limit', '1', '--json']));
  assert.deepEqual(
    json.items.map((h: { version: number; reason: string }) => [h.version, h.reason]),
    [[3, 'too slow']],
  );
  assert.notEqual(json.next_before, null);
});

test('watch prints each change after a revision, and stops after --count', async () => {
  const start = (await api.config.list({ prefix: 'watched/', limit: 1 })).revision;
  const watching = cli([
    'config',
    'watch',
    '--prefix',
    'watched/',
    '--from-revision',
    String(start),
    '--count',
    '3',
  ]);
  await api.config.set('watched/a', 1);
  await api.config.set('elsewhere/b', 2);
  await api.config.set('watched/a', { n: 2 });
  await api.config.delete('watched/a');
  const result = await watching;
  expectExit(result, 0);
  assert.deepEqual(
    result.stdout
      .replace(/\n$/, '')
      .split('\n')
      .map((l) => l.split('\t').slice(1)),
    [
      ['put', 'watched/a', '1'],
      ['put', 'watched/a', '{"n":2}'],
      ['delete', 'watched/a', ''],
    ],
  );
});

test('services ls and resolve', async () => {
  expectExit(await cli(['services', 'ls']), 0);
  await api.services.register('billing', 'b1', {
    address: '127.0.0.1',
    port: 7001,
    metadata: { version: '2.1.0', zone: 'eu-1' },
  });
  await api.services.register('billing', 'b2', { address: '::1', port: 7002 });
  const services = await cli(['services', 'ls']);
  expectExit(services, 0);
  assert.match(services.stdout, /billing\s+2\s+/);
  const instances = await cli(['services', 'ls', 'billing', '--all']);
  expectExit(instances, 0);
  assert.match(instances.stdout, /b1\s+127\.0\.0\.1:7001\s+\w+\s+2\.1\.0\s+eu-1/);
  assert.match(instances.stdout, /b2\s+\[::1\]:7002/);
  // The same key resolves to the same instance every time.
  const first = await cli([
    'services',
    'resolve',
    'billing',
    '--strategy',
    'consistent_hash',
    '--key',
    'c-42',
  ]);
  expectExit(first, 0);
  assert.match(first.stdout.trim(), /^(127\.0\.0\.1:7001|\[::1\]:7002)$/);
  for (let i = 0; i < 3; i++) {
    const again = await cli([
      'services',
      'resolve',
      'billing',
      '--strategy',
      'consistent_hash',
      '--key',
      'c-42',
    ]);
    assert.equal(again.stdout, first.stdout);
  }
  const json = jsonOf(await cli(['services', 'resolve', 'billing', '--json']));
  assert.ok(['b1', 'b2'].includes(json.id));
  const none = await cli(['services', 'resolve', 'nobody']);
  expectExit(none, 1);
  assert.match(none.stderr, /SERVICE_NOT_FOUND|NO_HEALTHY_INSTANCE/);
});

test('envs lists the environments that hold keys, with how many, as table and JSON', async () => {
  expectExit(await cli(['config', 'put', 'app/a', '1', '--env', 'cli-envs']), 0);
  expectExit(await cli(['config', 'put', 'app/b', '2', '--env', 'cli-envs']), 0);
  const listed = await cli(['config', 'envs']);
  expectExit(listed, 0);
  const rows = listed.stdout.trim().split('\n');
  assert.match(rows[0] ?? '', /^ENV\s+KEYS$/);
  const shown = rows.slice(1).map((r) => r.split(/\s+/));
  assert.ok(
    shown.some(([env, keys]) => env === 'cli-envs' && keys === '2'),
    listed.stdout,
  );
  // The same as the API answers, in its order.
  const all = (await api.config.environments({ limit: 200 })).items;
  assert.deepEqual(
    shown,
    all.map((e) => [e.env, String(e.keys)]),
  );
  const json = jsonOf(await cli(['config', 'environments', '--json']));
  assert.deepEqual(json, { items: all, more: false });
  assert.ok(all.length > 1, JSON.stringify(all));
  const capped = await cli(['config', 'envs', '--limit', '1']);
  expectExit(capped, 0);
  assert.equal(capped.stdout.trim().split('\n').length, 2);
  assert.match(capped.stderr, /more environments follow: raise --limit/);
  const help = await cli(['config', '--help']);
  assert.match(help.stdout, /config envs \[options\]\n[\s\S]*?--limit N {2}How many at most/);
});

test('bad input exits 2 with a usage error, or 1 with the server’s code', async () => {
  const usage: [string[], RegExp][] = [
    [['config'], /config needs a subcommand/],
    [['config', 'get'], /needs a key/],
    [['config', 'put', 'k'], /VALUE or --file/],
    [['config', 'put', 'k', 'not json'], /not JSON.*--string/],
    [['config', 'put', 'k', '1', '--if-version', 'x'], /--if-version/],
    [['config', 'put', 'k', '1', '--if-version', '1', '--if-absent'], /not both/],
    [['config', 'ls', '--limit', '0'], /--limit/],
    // envs lists every environment: --env is not one of its options.
    [['config', 'envs', '--env', 'prod'], /Unknown option '--env'/],
    [['config', 'envs', '--limit', '0'], /--limit/],
    [['config', 'watch', '--from-revision', '-1'], /--from-revision|ambiguous|argument/],
    [['config', 'diff', 'k'], /version to compare from/],
    [['config', 'frob'], /unknown config subcommand/],
    // Options before the subcommand are still options, not the subcommand.
    [['config', '--env', 'prod', 'get'], /config get needs a key/],
    [['services', 'resolve'], /needs a service name/],
    [['services', 'resolve', 'x', '--strategy', 'random'], /--strategy must be one of/],
    [['services', 'resolve', 'x', '--strategy', 'consistent_hash'], /needs --key/],
    [['services', 'ls', '--all'], /--all needs a service name/],
  ];
  for (const [args, message] of usage) {
    const result = await cli(args);
    expectExit(result, 2);
    assert.match(result.stderr, message, args.join(' '));
  }
  const badKey = await cli(['config', 'put', 'a//b', '1']);
  expectExit(badKey, 1);
  assert.match(badKey.stderr, /VALIDATION_FAILED/);
  const badEnv = await cli(['config', 'get', 'k', '--env', 'Prod!']);
  expectExit(badEnv, 1);
  assert.match(badEnv.stderr, /VALIDATION_FAILED/);
  const help = await cli(['config', '--help']);
  expectExit(help, 0);
  assert.match(help.stdout, /config revert KEY VERSION/);
  const servicesHelp = await cli(['services', '--help']);
  expectExit(servicesHelp, 0);
  assert.match(servicesHelp.stdout, /services resolve NAME/);
  const global = await cli(['--help']);
  assert.match(global.stdout, /config get\|put\|rm\|ls\|envs\|watch\|history\|diff\|revert/);
});
