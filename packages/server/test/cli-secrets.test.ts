import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Orchestra } from '@orchestra/sdk';
import { type CliServer, expectExit, jsonOf, runCli, startCliServer } from './helpers.ts';

// `orchestra secrets` as a user runs it: a spawned `node bin/orchestra.js` against a spawned
// `orchestra start`. No command ever prints a value.

let fixture: CliServer;
let api: Orchestra;

before(async () => {
  fixture = await startCliServer('secrets');
  api = new Orchestra({ url: fixture.server.url, apiKey: fixture.adminKey });
});
after(() => fixture.stop());

const cli = (args: string[], options?: { input?: string; env?: Record<string, string> }) =>
  options?.env
    ? runCli([...args, '--url', fixture.server.url, '--api-key', fixture.adminKey], {
        cwd: fixture.workDir,
        env: options.env,
      })
    : fixture.cli(args, options);

/** A value no output may contain. */
const value = () => `cli-secret-${randomBytes(8).toString('hex')}`;

describe('orchestra secrets', () => {
  test('set reads standard input, --value-file or --from-env, and never prints the value', async () => {
    const piped = value();
    const created = await cli(['secrets', 'set', 'CLI_PIPED', '--description', 'piped'], {
      input: `${piped}\n`,
    });
    expectExit(created, 0);
    assert.equal(created.stdout, 'Created secret CLI_PIPED, version 1.\n');

    const fromFile = value();
    writeFileSync(join(fixture.workDir, 'value.txt'), `${fromFile}\n`);
    const replaced = await cli(['secrets', 'set', 'CLI_PIPED', '--value-file', 'value.txt']);
    expectExit(replaced, 0);
    assert.equal(replaced.stdout, 'Replaced secret CLI_PIPED, version 2.\n');

    const fromEnv = value();
    const env = await cli(['secrets', 'set', 'CLI_ENV', '--from-env', 'MY_TOKEN', '--json'], {
      env: { MY_TOKEN: fromEnv },
    });
    const secret = jsonOf(env);
    assert.deepEqual([secret.name, secret.version], ['CLI_ENV', 1]);

    const listed = await cli(['secrets', 'list', '--prefix', 'CLI_']);
    expectExit(listed, 0);
    assert.match(listed.stdout, /^NAME\s+VERSION\s+UPDATED\s+DESCRIPTION\n/);
    assert.match(listed.stdout, /CLI_ENV\s+1\s/);
    assert.match(listed.stdout, /CLI_PIPED\s+2\s.*piped/);
    const got = await cli(['secrets', 'get', 'CLI_PIPED']);
    expectExit(got, 0);
    assert.match(got.stdout, /Version:\s+2/);
    for (const output of [created, replaced, env, listed, got]) {
      for (const v of [piped, fromFile, fromEnv]) {
        assert.ok(!output.stdout.includes(v) && !output.stderr.includes(v), 'a value was printed');
      }
    }
    assert.equal((await api.secrets.get('CLI_PIPED')).version, 2);
  });

  test('usage errors: no name, an empty value, an unset variable, both sources', async () => {
    const noName = await cli(['secrets', 'set'], { input: 'x' });
    expectExit(noName, 2);
    assert.match(noName.stderr, /needs a secret name/);
    const empty = await cli(['secrets', 'set', 'CLI_EMPTY'], { input: '\n' });
    expectExit(empty, 2);
    assert.match(empty.stderr, /standard input is empty/);
    const unset = await cli(['secrets', 'set', 'CLI_UNSET', '--from-env', 'NOT_SET_HERE'], {
      env: {},
    });
    expectExit(unset, 2);
    assert.match(unset.stderr, /NOT_SET_HERE is not set/);
    const both = await cli(['secrets', 'set', 'X', '--from-env', 'A', '--value-file', 'f']);
    expectExit(both, 2);
    const badName = await cli(['secrets', 'set', 'bad-name'], { input: 'secret-input-value' });
    assert.notEqual(badName.code, 0);
    assert.match(badName.stderr, /VALIDATION_FAILED|name/);
    assert.ok(!badName.stderr.includes('secret-input-value'));
  });

  test('delete removes it; get of a missing secret names the error code', async () => {
    expectExit(await cli(['secrets', 'set', 'CLI_GONE'], { input: 'bye' }), 0);
    const deleted = await cli(['secrets', 'delete', 'CLI_GONE']);
    expectExit(deleted, 0);
    assert.equal(deleted.stdout, 'Deleted secret CLI_GONE.\n');
    const missing = await cli(['secrets', 'get', 'CLI_GONE']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /SECRET_NOT_FOUND/);
  });
});
