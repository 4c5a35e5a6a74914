import type { Secret } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  noArguments,
  oneArgument,
  print,
  readText,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

function describeSecret(s: Secret): string {
  return [
    `Name:        ${s.name}`,
    `Version:     ${s.version}`,
    `Description: ${s.description || '-'}`,
    `Created:     ${s.created_at}`,
    `Updated:     ${s.updated_at}`,
  ].join('\n');
}

/**
 * The value to store: from --from-env, --value-file (`-`: standard input) or, with neither,
 * standard input. One trailing newline of a file or standard input is dropped (what `echo`
 * and editors add); --from-env is taken as it is.
 */
function secretValue(values: { 'value-file'?: string; 'from-env'?: string }): string {
  const fromEnv = values['from-env'];
  const file = values['value-file'];
  if (fromEnv !== undefined && file !== undefined) {
    throw new UsageError('use either --value-file or --from-env, not both');
  }
  let value: string;
  let source: string;
  if (fromEnv !== undefined) {
    const found = process.env[fromEnv];
    if (found === undefined) {
      throw new UsageError(`the environment variable ${fromEnv} is not set`);
    }
    value = found;
    source = `the environment variable ${fromEnv}`;
  } else {
    if (file === undefined && process.stdin.isTTY) {
      // Typed at a terminal, the value would be echoed on the screen.
      throw new UsageError('secrets set reads the value from --value-file, --from-env or a pipe');
    }
    const read = readText(file ?? '-');
    value = read.text.replace(/\r?\n$/, '');
    source = read.source;
  }
  if (value === '') throw new UsageError(`the value from ${source} is empty`);
  return value;
}

const set = command({
  name: 'set',
  args: 'NAME',
  description: [
    'Creates the secret NAME (version 1) or replaces its value (the next version). The value is read from --value-file, from --from-env, or from standard input, never from the command line, and is never printed. One trailing newline of a file or standard input is dropped. Examples:',
    '  orchestra secrets set GITHUB_TOKEN --from-env GITHUB_TOKEN',
    '  orchestra secrets set DB_PASSWORD --value-file ./db-password',
    '  printf %s "$TOKEN" | orchestra secrets set API_TOKEN',
  ].join('\n'),
  options: {
    'value-file': {
      type: 'string',
      value: 'FILE',
      description: 'Read the value from FILE (- for standard input)',
    },
    'from-env': {
      type: 'string',
      value: 'VAR',
      description: 'Take the value from the environment variable VAR',
    },
    description: { type: 'string', value: 'TEXT', description: 'What the secret is for' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = oneArgument(invocation, 'secret name');
    const value = secretValue(values);
    const secret = await client(values).secrets.put(name, value, {
      ...(values.description !== undefined ? { description: values.description } : {}),
    });
    print(
      values.json,
      secret,
      () =>
        `${secret.version === 1 ? 'Created' : 'Replaced'} secret ${name}, version ${secret.version}.`,
    );
    return 0;
  },
});

const list = command({
  name: 'list',
  aliases: ['ls'],
  description: 'Lists the secrets of your tenant: names, versions and times, never values.',
  options: {
    prefix: { type: 'string', value: 'PREFIX', description: 'Only names that start with PREFIX' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const secrets: Secret[] = [];
    for await (const s of client(values).secrets.listAll({
      limit: 200,
      ...(values.prefix !== undefined ? { name_prefix: values.prefix } : {}),
    })) {
      secrets.push(s);
    }
    print(values.json, secrets, () =>
      formatTable(
        ['NAME', 'VERSION', 'UPDATED', 'DESCRIPTION'],
        secrets.map((s) => [s.name, String(s.version), s.updated_at, s.description || '-']),
      ),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME',
  description: 'Shows a secret’s metadata (its value is never shown).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const secret = await client(values).secrets.get(oneArgument(invocation, 'secret name'));
    print(values.json, secret, () => describeSecret(secret));
    return 0;
  },
});

const remove = command({
  name: 'delete',
  aliases: ['rm'],
  args: 'NAME',
  description: 'Deletes the secret.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const name = oneArgument(invocation, 'secret name');
    await client(values).secrets.delete(name);
    print(values.json, { deleted: name }, () => `Deleted secret ${name}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'secrets',
  summary: 'Manage named secrets (write-only: values are never shown)',
  notes: 'Setting and deleting need an admin or operator credential.',
  subcommands: [list, get, set, remove],
});
