import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { GROUPS, globalHelp, loadGroup } from '../src/cli/main.ts';
import { command, group, single, UsageError } from '../src/cli/spec.ts';
import { expectExit, runCli, tempDir } from './helpers.ts';

const workDir = tempDir('orchestra-cli-spec-');
after(() => workDir.remove());

// The CLI's command framework: parsing and help come from one spec per command.

/** Runs `fn` with process.stdout.write captured; resolves to what was written. */
async function captureStdout(fn: () => Promise<unknown>): Promise<string> {
  const write = process.stdout.write;
  let out = '';
  process.stdout.write = ((chunk: string) => {
    out += chunk;
    return true;
  }) as typeof process.stdout.write;
  try {
    await fn();
  } finally {
    process.stdout.write = write;
  }
  return out;
}

describe('spec', () => {
  const seen: unknown[] = [];
  const sample = group({
    name: 'things',
    summary: 'Manage things',
    notes: 'THING is a name.',
    subcommands: [
      command({
        name: 'make',
        args: 'THING',
        description: 'Makes a thing.',
        options: {
          size: { type: 'string', value: 'N', description: 'How big', required: 'a number' },
          tag: { type: 'string', value: 'T', multiple: true, description: 'A tag' },
          wait: {
            type: 'string',
            value: 'DURATION',
            description: 'Waits',
            optionalValue: (next: string) => /^\d/.test(next),
          },
          dry: { type: 'boolean', description: 'Changes nothing' },
        },
        common: { json: { type: 'boolean', default: false, description: 'Print JSON' } },
        run({ values, positionals }) {
          seen.push({ values: { ...values }, positionals });
          return 3;
        },
      }),
      command({
        name: 'list',
        aliases: ['ls'],
        description: 'Lists the things.',
        common: { json: { type: 'boolean', default: false, description: 'Print JSON' } },
        run: () => undefined,
      }),
    ],
  });

  test('parses the flags of the spec and resolves to the exit code', async () => {
    seen.length = 0;
    const code = await sample.run([
      'make',
      'box',
      '--size',
      '3',
      '--tag',
      'a',
      '--tag',
      'b',
      '--wait',
      '--json',
    ]);
    assert.equal(code, 3);
    assert.deepEqual(seen, [
      {
        values: { size: '3', tag: ['a', 'b'], wait: '', dry: false, json: true, help: false },
        positionals: ['box'],
      },
    ]);
    seen.length = 0;
    await sample.run(['make', 'box', '--size', '3', '--wait', '30s', 'more']);
    assert.deepEqual(seen, [
      {
        values: { size: '3', wait: '30s', dry: false, json: false, help: false },
        positionals: ['box', 'more'],
      },
    ]);
    assert.equal(await sample.run(['ls']), 0, 'an alias runs its command; undefined is 0');
  });

  test('a flag the subcommand does not declare is a usage error', async () => {
    await assert.rejects(sample.run(['list', '--size', '3']), (err) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /Unknown option '--size'/);
      return true;
    });
    await assert.rejects(sample.run(['make', 'box', '--size']), UsageError);
  });

  test('a missing required option is a usage error that names it', async () => {
    await assert.rejects(sample.run(['make', 'box']), {
      name: 'Error',
      message: 'things make needs --size N (a number)',
    });
  });

  test('a missing or unknown subcommand is a usage error that lists them', async () => {
    await assert.rejects(
      captureStdout(() => sample.run([])),
      new UsageError('things needs a subcommand: make or list'),
    );
    await assert.rejects(
      sample.run(['break']),
      new UsageError('unknown things subcommand "break"; use make or list'),
    );
  });

  test('the help shows every subcommand, its arguments, options and notes', async () => {
    const help = await captureStdout(() => sample.run(['--help']));
    assert.equal(help, `${sample.help()}\n`);
    assert.match(help, /^Usage: orchestra things <make\|list> \[options\]$/m);
    assert.match(help, /^ {2}things make THING --size N \[options\]$/m);
    assert.match(help, /^ {6}Makes a thing\.$/m);
    assert.match(help, /^ {8}--size N +How big \(required\)$/m);
    assert.match(help, /^ {8}--tag T +A tag \(repeatable\)$/m);
    assert.match(help, /^ {8}--wait \[DURATION\] +Waits$/m);
    assert.match(help, /^ {8}--dry +Changes nothing$/m);
    assert.match(help, /^ {6}\(alias: ls\) Lists the things\.$/m);
    assert.match(help, /^THING is a name\.$/m);
    assert.match(help, /^ {2}--json +Print JSON$/m);
    assert.match(help, /^ {2}-h, --help +Show this help$/m);
    // A subcommand's help is its own, and needs none of its required options.
    const make = await captureStdout(() => sample.run(['make', '--help']));
    assert.match(
      make,
      /^Usage: orchestra things make THING --size N \[options\]\n\nMakes a thing\./,
    );
    assert.doesNotMatch(make, /Lists the things/);
  });

  test('a command without subcommands has one usage', async () => {
    const hello = single({
      name: 'hello',
      summary: 'Say hello',
      command: command({
        name: 'hello',
        description: 'Says hello. '.repeat(20),
        options: { to: { type: 'string', value: 'NAME', description: 'Whom', default: 'you' } },
        run: ({ values }) => (values.to === 'you' ? 0 : 1),
      }),
    });
    assert.equal(await hello.run([]), 0);
    assert.equal(await hello.run(['--to', 'me']), 1);
    const help = hello.help();
    assert.match(help, /^Usage: orchestra hello \[options\]\n\n/);
    for (const line of help.split('\n')) assert.ok(line.length <= 90, `too long: ${line}`);
    assert.match(help, /^ {2}--to NAME +Whom$/m);
  });
});

describe('the orchestra commands', () => {
  test('every group loads, and its help lists every option of every subcommand', async () => {
    for (const name of Object.keys(GROUPS)) {
      const loaded = await loadGroup(name);
      assert.ok(loaded !== undefined, name);
      const help = loaded.help();
      assert.match(help, new RegExp(`^Usage: orchestra ${name}\\b`), name);
      for (const c of loaded.commands ?? []) {
        const own = loaded.help([c.name]);
        assert.match(own, new RegExp(`^Usage: orchestra ${name}\\b`), `${name} ${c.name}`);
        for (const [flag, option] of Object.entries({ ...c.options, ...c.common })) {
          const shown = new RegExp(
            `^ +(-\\w, )?--${flag}${option.value !== undefined ? ` \\[?${literal(option.value)}` : ''}(\\]|\\s|$)`,
            'm',
          );
          assert.match(help, shown, `${name} --help shows --${flag} of ${c.name}`);
          assert.match(own, shown, `${name} ${c.name} --help shows --${flag}`);
        }
        for (const word of [c.name, ...c.aliases]) {
          assert.ok(help.includes(word), `${name} --help names ${word}`);
        }
      }
    }
  });

  test('the global help lists every group with its summary', async () => {
    const help = await globalHelp();
    assert.match(help, /^Usage: orchestra <command> \[options\]$/m);
    for (const name of Object.keys(GROUPS)) {
      const loaded = await loadGroup(name);
      assert.ok(loaded !== undefined);
      assert.ok(help.includes(loaded.summary), `${name}: ${loaded.summary}`);
      const line = [name, loaded.subcommandNames].filter(Boolean).join(' ');
      assert.match(help, new RegExp(`^ {2}${literal(line)}( |$)`, 'm'), name);
    }
  });

  // The way a user meets it: exit code 2 and the group's help named.
  test('a flag of another subcommand exits 2 and points to the group help', async () => {
    for (const args of [
      ['keys', 'list', '--name', 'x'],
      ['keys', 'revoke', 'key_x', '--bogus'],
      ['task', 'get', 'tsk_x', '--capability', 'x'],
      ['whoami', '--bogus'],
    ]) {
      const result = await runCli([...args, '--api-key', 'ork_x'], { cwd: workDir.path });
      expectExit(result, 2);
      assert.match(result.stderr, /^error: Unknown option '--\w+'/, args.join(' '));
      assert.match(result.stderr, new RegExp(`Run "orchestra ${args[0]} --help" for usage\\.`));
      assert.equal(result.stdout, '');
    }
  });
});

function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
