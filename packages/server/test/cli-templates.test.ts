import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliServer, expectExit, jsonOf, runCli, startCliServer } from './helpers.ts';

// `orchestra templates` as a user runs it: a spawned `node bin/orchestra.js` against a
// spawned `orchestra start`, with template files in a working directory of their own.

let fixture: CliServer;

before(async () => {
  fixture = await startCliServer('templates');
});
after(() => fixture.stop());

const cli = (args: string[], options?: { input?: string }) => fixture.cli(args, options);

const json = jsonOf;

/** Writes `content` (JSON unless a string) to a file in the work dir; returns its name. */
function writeFile(name: string, content: unknown): string {
  writeFileSync(
    join(fixture.workDir, name),
    typeof content === 'string' ? content : JSON.stringify(content),
  );
  return name;
}

/** The table row whose first cell is `first`. */
function row(table: string, first: string): string {
  const found = table.split('\n').find((line) => line.split(/\s+/)[0] === first);
  assert.ok(found, `no row for ${first} in\n${table}`);
  return found;
}

const INPUT_SCHEMA = {
  type: 'object',
  properties: { ticket: { type: 'string' } },
  required: ['ticket'],
};

// Every test uses templates of its own names, so they run side by side on one server.
describe('orchestra templates', { concurrency: 4 }, () => {
  test('create --file creates version 1 from a JSON file', async () => {
    const file = writeFile('triage.json', {
      name: 'cli-triage',
      description: 'Sorts tickets',
      labels: { team: 'support' },
      capabilities: ['llm:chat', 'kb'],
      input_schema: INPUT_SCHEMA,
    });
    const created = await cli(['templates', 'create', '--file', file]);
    expectExit(created, 0);
    const match = /^Created template cli-triage \((tpl_\w+)\), version 1\.\n$/.exec(created.stdout);
    assert.ok(match, created.stdout);

    const template = json(await cli(['templates', 'get', 'cli-triage', '--json']));
    assert.equal(template.id, match[1]);
    assert.equal(template.description, 'Sorts tickets');
    assert.deepEqual(template.labels, { team: 'support' });
    assert.deepEqual(template.capabilities, ['llm:chat', 'kb']);
    assert.deepEqual(template.input_schema, INPUT_SCHEMA);

    const again = await cli(['templates', 'create', '--file', file]);
    expectExit(again, 1);
    assert.match(again.stderr, /TEMPLATE_ALREADY_EXISTS, HTTP 409/);
  });

  test('create --file - reads standard input, and --json prints the template', async () => {
    const input = JSON.stringify({ name: 'cli-stdin', default_priority: 7 });
    const template = json(await cli(['templates', 'create', '--file', '-', '--json'], { input }));
    assert.equal(template.name, 'cli-stdin');
    assert.equal(template.version, 1);
    assert.equal(template.default_priority, 7);
    assert.match(template.id, /^tpl_/);
    assert.equal(json(await cli(['templates', 'get', template.id, '--json'])).name, 'cli-stdin');
  });

  test('list prints a table and a --json array, filtered by --label and --name-prefix', async () => {
    for (const [name, labels, capabilities] of [
      ['lst-both', { env: 'prod', tier: 'gold' }, ['a', 'b']],
      ['lst-env', { env: 'prod' }, []],
      ['lst-dev', { env: 'dev', tier: 'gold' }, []],
    ] as const) {
      json(
        await cli(['templates', 'create', '--file', '-', '--json'], {
          input: JSON.stringify({ name, labels, capabilities }),
        }),
      );
    }

    const table = await cli(['templates', 'list']);
    expectExit(table, 0);
    assert.match(table.stdout, /^NAME\s+ID\s+LATEST\s+HIGHEST\s+CAPABILITIES\s+LABELS\s+UPDATED\n/);
    assert.match(
      row(table.stdout, 'lst-both'),
      /^lst-both\s+tpl_\w+\s+1\s+1\s+a,b\s+env=prod,tier=gold\s+\d{4}-\d\d-\d\dT/,
    );
    assert.match(row(table.stdout, 'lst-env'), /^lst-env\s+tpl_\w+\s+1\s+1\s+-\s+env=prod\s/);

    const filtered = await cli(['templates', 'list', '--label', 'env=prod']);
    expectExit(filtered, 0);
    const names = (text: string) =>
      text
        .trim()
        .split('\n')
        .slice(1)
        .map((line) => line.split(/\s+/)[0])
        .sort();
    assert.deepEqual(names(filtered.stdout), ['lst-both', 'lst-env']);

    const both = json(
      await cli(['templates', 'list', '--label', 'env=prod', '--label', 'tier=gold', '--json']),
    );
    assert.deepEqual(
      both.map((t: { name: string }) => t.name),
      ['lst-both'],
    );
    const prefixed = json(await cli(['templates', 'list', '--name-prefix', 'lst-', '--json']));
    assert.deepEqual(prefixed.map((t: { name: string }) => t.name).sort(), [
      'lst-both',
      'lst-dev',
      'lst-env',
    ]);
    const none = await cli(['templates', 'list', '--label', 'env=staging']);
    expectExit(none, 0);
    assert.equal(none.stdout, '(none)\n');

    const bad = await cli(['templates', 'list', '--label', 'env']);
    expectExit(bad, 2);
    assert.match(bad.stderr, /--label must be KEY=VALUE, got "env"/);
  });

  test('get prints a summary with the schemas, --json, and --version pins a version', async () => {
    json(
      await cli(['templates', 'create', '--file', '-', '--json'], {
        input: JSON.stringify({
          name: 'cli-show',
          description: 'Shows itself',
          labels: { team: 'docs' },
          capabilities: ['llm:chat'],
          input_schema: INPUT_SCHEMA,
          default_timeout_ms: 60_000,
          strategy: 'round_robin',
        }),
      }),
    );
    const shown = await cli(['templates', 'get', 'cli-show']);
    expectExit(shown, 0);
    const out = shown.stdout;
    assert.match(out, /^Name:\s+cli-show$/m);
    assert.match(out, /^ID:\s+tpl_\w+$/m);
    assert.match(out, /^Version:\s+1 \(latest 1, highest 1\)$/m);
    assert.match(out, /^Description:\s+Shows itself$/m);
    assert.match(out, /^Capabilities:\s+llm:chat$/m);
    assert.match(out, /^Labels:\s+team=docs$/m);
    assert.match(out, /^Defaults:\s+timeout 60000 ms, max attempts 3, priority 0$/m);
    assert.match(out, /^Strategy:\s+round_robin$/m);
    assert.ok(
      out.includes(`Input schema:\n${JSON.stringify(INPUT_SCHEMA, null, 2)}\n`),
      `the input schema is not pretty-printed in\n${out}`,
    );
    assert.match(out, /^Output schema: \(none\)$/m);

    json(
      await cli(['templates', 'update', 'cli-show', '--file', '-', '--json'], {
        input: JSON.stringify({ description: 'Shows itself, again' }),
      }),
    );
    const latest = json(await cli(['templates', 'get', 'cli-show', '--json']));
    assert.deepEqual([latest.version, latest.description], [2, 'Shows itself, again']);

    const pinned = json(await cli(['templates', 'get', 'cli-show', '--version', '1', '--json']));
    assert.deepEqual(
      [pinned.version, pinned.latest_version, pinned.description],
      [1, 2, 'Shows itself'],
    );
    const pinnedText = await cli(['templates', 'get', 'cli-show', '--version', '1']);
    expectExit(pinnedText, 0);
    assert.match(pinnedText.stdout, /^Version:\s+1 \(latest 2, highest 2\)$/m);

    const missingVersion = await cli(['templates', 'get', 'cli-show', '--version', '5']);
    expectExit(missingVersion, 1);
    assert.match(missingVersion.stderr, /TEMPLATE_VERSION_NOT_FOUND, HTTP 404/);
    const badVersion = await cli(['templates', 'get', 'cli-show', '--version', 'two']);
    expectExit(badVersion, 2);
    assert.match(badVersion.stderr, /--version must be a version number/);
  });

  test('update --file replaces the definition; a stale --if-version exits 1 with PRECONDITION_FAILED', async () => {
    json(
      await cli(['templates', 'create', '--file', '-', '--json'], {
        input: JSON.stringify({ name: 'cli-update', description: 'v1', capabilities: ['x'] }),
      }),
    );
    const file = writeFile('update.json', { description: 'v2' });
    const updated = await cli(['templates', 'update', 'cli-update', '--file', file]);
    expectExit(updated, 0);
    assert.match(
      updated.stdout,
      /^Updated template cli-update \(tpl_\w+\): version 2 is the latest\.\n$/,
    );
    const v2 = json(await cli(['templates', 'get', 'cli-update', '--json']));
    assert.equal(v2.description, 'v2');
    assert.deepEqual(v2.capabilities, [], 'a field left out goes back to its default');

    const stale = await cli([
      'templates',
      'update',
      'cli-update',
      '--file',
      file,
      '--if-version',
      '1',
    ]);
    expectExit(stale, 1);
    assert.match(stale.stderr, /PRECONDITION_FAILED, HTTP 412/);
    assert.equal(stale.stdout, '');
    assert.equal(json(await cli(['templates', 'get', 'cli-update', '--json'])).highest_version, 2);

    const current = json(
      await cli([
        'templates',
        'update',
        'cli-update',
        '--file',
        file,
        '--if-version',
        '2',
        '--json',
      ]),
    );
    assert.equal(current.version, 3);
  });

  test('update takes the edited output of get --json', async () => {
    json(
      await cli(['templates', 'create', '--file', '-', '--json'], {
        input: JSON.stringify({ name: 'cli-roundtrip', description: 'before' }),
      }),
    );
    // The server-set fields and null schemas of the output are not part of a definition.
    const shown = json(await cli(['templates', 'get', 'cli-roundtrip', '--json']));
    const file = writeFile('roundtrip.json', { ...shown, description: 'after' });
    const updated = json(
      await cli(['templates', 'update', 'cli-roundtrip', '--file', file, '--json']),
    );
    assert.equal(updated.version, 2);
    assert.equal(updated.description, 'after');
    assert.equal(updated.input_schema, null);

    // By id too; a file of another template is refused before anything is sent.
    expectExit(await cli(['templates', 'update', shown.id, '--file', file]), 0);
    const other = await cli(['templates', 'update', 'cli-triage', '--file', file]);
    expectExit(other, 2);
    assert.match(other.stderr, /roundtrip\.json is for template "cli-roundtrip", not "cli-triage"/);
    assert.equal(
      json(await cli(['templates', 'get', 'cli-roundtrip', '--json'])).highest_version,
      3,
    );
  });

  test('versions prints a table, newest first, with * on the latest; rollback --to moves it', async () => {
    json(
      await cli(['templates', 'create', '--file', '-', '--json'], {
        input: JSON.stringify({ name: 'cli-history', description: 'one' }),
      }),
    );
    for (const description of ['two', 'three']) {
      json(
        await cli(['templates', 'update', 'cli-history', '--file', '-', '--json'], {
          input: JSON.stringify({ description }),
        }),
      );
    }
    const keyId = json(await cli(['whoami', '--json'])).credential.id;

    const table = await cli(['templates', 'versions', 'cli-history']);
    expectExit(table, 0);
    const lines = table.stdout.trim().split('\n');
    assert.match(String(lines[0]), /^VERSION\s+LATEST\s+CREATED\s+CREATED BY$/);
    assert.match(String(lines[1]), new RegExp(`^3\\s+\\*\\s+\\d{4}-\\S+\\s+${keyId}$`));
    assert.match(String(lines[2]), new RegExp(`^2\\s+\\d{4}-\\S+\\s+${keyId}$`));
    assert.match(String(lines[3]), new RegExp(`^1\\s+\\d{4}-\\S+\\s+${keyId}$`));
    assert.equal(lines.length, 4);

    const rolled = await cli(['templates', 'rollback', 'cli-history', '--to', '1']);
    expectExit(rolled, 0);
    assert.match(
      rolled.stdout,
      /^Rolled back template cli-history \(tpl_\w+\): version 1 is the latest \(highest 3\)\.\n$/,
    );
    const current = json(await cli(['templates', 'get', 'cli-history', '--json']));
    assert.deepEqual([current.version, current.description], [1, 'one']);
    const versions = json(await cli(['templates', 'versions', 'cli-history', '--json']));
    assert.deepEqual(
      versions.map((v: { version: number; latest: boolean }) => [v.version, v.latest]),
      [
        [3, false],
        [2, false],
        [1, true],
      ],
    );
    const afterRollback = await cli(['templates', 'versions', 'cli-history']);
    assert.match(row(afterRollback.stdout, '1'), /^1\s+\*\s/);

    const missing = await cli(['templates', 'rollback', 'cli-history', '--to', '9']);
    expectExit(missing, 1);
    assert.match(missing.stderr, /TEMPLATE_VERSION_NOT_FOUND, HTTP 404/);
    const noTo = await cli(['templates', 'rollback', 'cli-history']);
    expectExit(noTo, 2);
    assert.match(noTo.stderr, /templates rollback needs --to N/);
    const zero = await cli(['templates', 'rollback', 'cli-history', '--to', '0']);
    expectExit(zero, 2);
    assert.match(zero.stderr, /--to must be a version number/);
  });

  test('delete and rm remove the template; afterwards it is TEMPLATE_NOT_FOUND', async () => {
    for (const [name, command] of [
      ['cli-doomed', 'delete'],
      ['cli-removed', 'rm'],
    ]) {
      json(
        await cli(['templates', 'create', '--file', '-', '--json'], {
          input: JSON.stringify({ name }),
        }),
      );
      const deleted = await cli(['templates', String(command), String(name)]);
      expectExit(deleted, 0);
      assert.equal(deleted.stdout, `Deleted template ${name}.\n`);

      const gone = await cli(['templates', 'get', String(name)]);
      expectExit(gone, 1);
      assert.match(gone.stderr, /TEMPLATE_NOT_FOUND, HTTP 404/);
      assert.equal(gone.stdout, '');
    }
    const again = await cli(['templates', 'delete', 'cli-doomed']);
    expectExit(again, 1);
    assert.match(again.stderr, /TEMPLATE_NOT_FOUND/);
    const names = json(await cli(['templates', 'list', '--json'])).map(
      (t: { name: string }) => t.name,
    );
    assert.ok(!names.includes('cli-doomed') && !names.includes('cli-removed'), names.join(', '));
  });

  test('an invalid schema exits 1 and names the field', async () => {
    const result = await cli(['templates', 'create', '--file', '-'], {
      input: JSON.stringify({ name: 'cli-bad-schema', input_schema: { type: 'nope' } }),
    });
    expectExit(result, 1);
    assert.match(result.stderr, /body\.input_schema: is not a valid JSON Schema/);
    assert.match(result.stderr, /VALIDATION_FAILED, HTTP 400/);
    expectExit(await cli(['templates', 'get', 'cli-bad-schema']), 1);
  });

  describe('usage errors exit 2 and change nothing', { concurrency: 4 }, () => {
    const usageError = async (args: string[], message: RegExp, input?: string) => {
      const result = await cli(args, input === undefined ? {} : { input });
      expectExit(result, 2);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /Run "orchestra templates --help" for usage\./);
      assert.equal(result.stdout, '');
    };

    test('create without --file', async () => {
      await usageError(['templates', 'create'], /templates create needs --file FILE/);
    });

    test('a file that is not JSON names the file and the JSON error', async () => {
      const file = writeFile('broken.json', '{"name": "cli-broken",');
      await usageError(
        ['templates', 'create', '--file', file],
        /^error: broken\.json is not valid JSON: .*JSON/m,
      );
      await usageError(
        ['templates', 'update', 'cli-triage', '--file', file],
        /broken\.json is not valid JSON/,
      );
      await usageError(
        ['templates', 'create', '--file', '-'],
        /standard input is not valid JSON/,
        'not json',
      );
      const names = json(await cli(['templates', 'list', '--json'])).map(
        (t: { name: string }) => t.name,
      );
      assert.ok(!names.includes('cli-broken'), names.join(', '));
    });

    test('a file that cannot be read names the file', async () => {
      await usageError(
        ['templates', 'create', '--file', 'missing.json'],
        /cannot read missing\.json: ENOENT/,
      );
    });

    test('a file without a JSON object or a name', async () => {
      const array = writeFile('array.json', [{ name: 'cli-array' }]);
      await usageError(
        ['templates', 'create', '--file', array],
        /array\.json must hold a JSON object/,
      );
      const nameless = writeFile('nameless.json', { description: 'who am I' });
      await usageError(
        ['templates', 'create', '--file', nameless],
        /nameless\.json needs a "name" string/,
      );
    });

    test('missing template names and subcommands', async () => {
      await usageError(['templates', 'get'], /templates get needs a template name or id/);
      await usageError(['templates', 'update', '--file', 'x.json'], /templates update needs a/);
      await usageError(['templates', 'update', 'cli-triage'], /templates update needs --file/);
      await usageError(['templates', 'versions'], /templates versions needs a/);
      await usageError(['templates', 'delete'], /templates delete needs a/);
      await usageError(['templates', 'frobnicate'], /unknown templates subcommand "frobnicate"/);
    });

    test('templates without a subcommand prints the usage', async () => {
      // No flags either: the subcommand comes first, so `templates --url …` would be taken
      // for an unknown subcommand.
      const result = await runCli(['templates'], { cwd: fixture.workDir });
      expectExit(result, 2);
      assert.match(result.stdout, /^Usage: orchestra templates/);
      assert.match(result.stderr, /templates needs a subcommand/);
    });
  });
});
