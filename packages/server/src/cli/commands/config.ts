import type {
  ConfigDeleted,
  ConfigEnvironment,
  ConfigHistoryEntry,
  ConfigItem,
} from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  countFlag,
  noArguments,
  positiveInteger,
  print,
  readText,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const DEFAULT_LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 10_000;
/** The most the server returns per page. */
const PAGE = 200;

function revisionFlag(flag: string, text: string): number {
  if (!/^\d{1,15}$/.test(text) || Number(text) < 1) {
    throw new UsageError(`${flag} must be a revision (1 or more), got "${text}"`);
  }
  return Number(text);
}

function jsonText(source: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(
      `${source} is not JSON (${(err as Error).message}); quote a string as '"text"' or pass --string`,
    );
  }
}

/** A value for one line of a table: JSON, cut to `max` characters. */
function shortJson(value: unknown, max = 60): string {
  const text = JSON.stringify(value) ?? 'null';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

const by = (actor: { name: string; id: string }) => actor.name || actor.id;

/** The options every config subcommand but envs takes. */
const ENV = {
  env: {
    type: 'string',
    value: 'E',
    description: "The environment (default: the server's ORCHESTRA_CONFIG_DEFAULT_ENV)",
  },
} as const;
const REASON = {
  reason: { type: 'string', value: 'R', description: 'Why, recorded with the change' },
} as const;
const IF_VERSION = {
  'if-version': {
    type: 'string',
    value: 'N',
    description:
      'Change only if the key is at version N; otherwise refused (PRECONDITION_FAILED) and nothing changes',
  },
} as const;

/** The positional arguments from `min` to `max` of a command, or a usage error naming them. */
function positionalsOf(
  { positionals, path }: { positionals: string[]; path: string },
  min: number,
  max: number,
  names: string,
): string[] {
  if (positionals.length < min) throw new UsageError(`${path} needs ${names}`);
  if (positionals.length > max) {
    throw new UsageError(
      `${path} takes ${max === 0 ? 'no arguments' : `${max} argument(s)`}, got "${positionals.join(' ')}"`,
    );
  }
  return positionals;
}

/** --limit of ls and envs: how many to list, in pages of PAGE. */
const listLimit = (values: { limit?: string | undefined }) =>
  values.limit === undefined
    ? DEFAULT_LIST_LIMIT
    : countFlag('--limit', values.limit, MAX_LIST_LIMIT);
const envOf = (values: { env?: string | undefined }) =>
  values.env !== undefined ? { env: values.env } : {};
const reasonOf = (values: { reason?: string | undefined }) =>
  values.reason !== undefined ? { reason: values.reason } : {};
const ifVersionOf = (values: { 'if-version'?: string | undefined }) =>
  values['if-version'] !== undefined
    ? { ifVersion: positiveInteger('--if-version', values['if-version']) }
    : {};

const get = command({
  name: 'get',
  args: 'KEY',
  description:
    'Prints the value of KEY (JSON); its version, revision and last change go to standard error.',
  options: ENV,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = ''] = positionalsOf(invocation, 1, 1, 'a key');
    const item = await client(values).config.get(key, envOf(values));
    if (values.json) {
      process.stdout.write(`${JSON.stringify(item, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`${JSON.stringify(item.value, null, 2)}\n`);
    process.stderr.write(
      `${item.key} in ${item.env}: version ${item.version}, revision ${item.revision}, ${item.updated_at} by ${by(item.updated_by)}\n`,
    );
    return 0;
  },
});

const put = command({
  name: 'put',
  args: 'KEY [VALUE]',
  description:
    'Sets KEY to VALUE, a JSON text (\'{"size":30}\', 42, \'"text"\'), or to what --file holds.',
  options: {
    ...ENV,
    file: {
      type: 'string',
      value: 'F',
      description: 'Read the JSON value from file F (- for standard input) instead of VALUE',
    },
    string: {
      type: 'boolean',
      description: 'Store VALUE (or the file) as a string, as it is, instead of as JSON',
    },
    ...IF_VERSION,
    'if-absent': {
      type: 'boolean',
      description: 'Write only a new key; an existing one is refused (PRECONDITION_FAILED)',
    },
    ...REASON,
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = '', given] = positionalsOf(invocation, 1, 2, 'a key');
    if ((given === undefined) === (values.file === undefined)) {
      throw new UsageError('config put needs a VALUE or --file F (one of them)');
    }
    if (values['if-absent'] && values['if-version'] !== undefined) {
      throw new UsageError('give --if-version or --if-absent, not both');
    }
    let value: unknown;
    if (given !== undefined) {
      value = values.string ? given : jsonText('VALUE', given);
    } else {
      const { source, text } = readText(values.file ?? '-');
      value = values.string ? text : jsonText(source, text);
    }
    const item = await client(values).config.set(key, value, {
      ...envOf(values),
      ...reasonOf(values),
      ...ifVersionOf(values),
      ...(values['if-absent'] ? { ifAbsent: true } : {}),
    });
    print(
      values.json,
      item,
      () => `Set ${item.key} in ${item.env}: version ${item.version}, revision ${item.revision}.`,
    );
    return 0;
  },
});

const rm = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'KEY',
  description: 'Deletes KEY; its history stays.',
  options: { ...ENV, ...IF_VERSION, ...REASON },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = ''] = positionalsOf(invocation, 1, 1, 'a key');
    const deleted = await client(values).config.delete(key, {
      ...envOf(values),
      ...reasonOf(values),
      ...ifVersionOf(values),
    });
    print(
      values.json,
      deleted,
      () =>
        `Deleted ${deleted.key} in ${deleted.env}: version ${deleted.version}, revision ${deleted.revision}.`,
    );
    return 0;
  },
});

const LIMIT = {
  limit: {
    type: 'string',
    value: 'N',
    description: `How many at most (default ${DEFAULT_LIST_LIMIT}, at most ${MAX_LIST_LIMIT})`,
  },
} as const;
const PREFIX = {
  prefix: { type: 'string', value: 'P', description: 'Only the keys under this prefix' },
} as const;

const ls = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists keys under a prefix, all at one revision.',
  options: {
    ...ENV,
    ...PREFIX,
    ...LIMIT,
    revision: {
      type: 'string',
      value: 'R',
      description: 'List the keys as they were at revision R',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const limit = listLimit(values);
    const items: ConfigItem[] = [];
    let cursor: string | undefined;
    let revision: number | undefined =
      values.revision !== undefined ? revisionFlag('--revision', values.revision) : undefined;
    let more = false;
    do {
      const page = await client(values).config.list({
        ...envOf(values),
        limit: Math.min(PAGE, limit - items.length),
        ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
        ...(cursor === undefined && revision !== undefined ? { revision } : {}),
      });
      items.push(...page.items);
      revision = page.revision;
      cursor = page.next_cursor ?? undefined;
      more = cursor !== undefined;
    } while (more && items.length < limit);
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ items, revision, more }, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(
      `${formatTable(
        ['KEY', 'VERSION', 'REVISION', 'UPDATED', 'VALUE'],
        items.map((i) => [
          i.key,
          String(i.version),
          String(i.revision),
          i.updated_at,
          shortJson(i.value),
        ]),
      )}\n`,
    );
    process.stderr.write(
      `revision ${revision}${more ? '; more keys follow: raise --limit or narrow --prefix' : ''}\n`,
    );
    return 0;
  },
});

const envs = command({
  name: 'envs',
  aliases: ['environments'],
  description:
    'Lists the environments that hold at least one key, with how many keys each. An environment exists through its keys: it is made by the first put into it and gone with its last key.',
  options: LIMIT,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const limit = listLimit(values);
    const items: ConfigEnvironment[] = [];
    let cursor: string | undefined;
    do {
      const page = await client(values).config.environments({
        limit: Math.min(PAGE, limit - items.length),
        ...(cursor !== undefined ? { cursor } : {}),
      });
      items.push(...page.items);
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined && items.length < limit);
    const more = cursor !== undefined;
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ items, more }, null, 2)}\n`);
      return 0;
    }
    if (items.length === 0) {
      process.stderr.write(
        'No environment holds keys yet: config put KEY VALUE --env E makes one.\n',
      );
      return 0;
    }
    process.stdout.write(
      `${formatTable(
        ['ENV', 'KEYS'],
        items.map((e) => [e.env, String(e.keys)]),
      )}\n`,
    );
    if (more) process.stderr.write('more environments follow: raise --limit\n');
    return 0;
  },
});

const watch = command({
  name: 'watch',
  description:
    'Prints each change under a prefix as it happens (revision, type, key, value); stops after --count changes or on Ctrl-C. Reconnects by itself.',
  options: {
    ...ENV,
    ...PREFIX,
    'from-revision': {
      type: 'string',
      value: 'R',
      description: 'Start after revision R (the changes since then first)',
    },
    count: { type: 'string', value: 'N', description: 'Stop after N changes' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const count =
      values.count !== undefined ? countFlag('--count', values.count, 1_000_000_000) : Infinity;
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let seen = 0;
    try {
      for await (const change of client(values).config.watch({
        ...envOf(values),
        ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
        ...(values['from-revision'] !== undefined
          ? { afterRevision: revisionFlag('--from-revision', values['from-revision']) }
          : {}),
        signal: abort.signal,
        maxReconnects: Infinity,
      })) {
        if (values.json) {
          process.stdout.write(`${JSON.stringify(change)}\n`);
        } else if (change.type === 'resync') {
          for (const item of change.items) {
            process.stdout.write(
              `${change.revision}\tresync\t${item.key}\t${JSON.stringify(item.value)}\n`,
            );
          }
        } else {
          const value = change.type === 'put' ? JSON.stringify(change.value) : '';
          process.stdout.write(`${change.revision}\t${change.type}\t${change.key}\t${value}\n`);
        }
        if (change.type !== 'resync' || !change.more) seen += 1;
        if (seen >= count) break;
      }
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    return 0;
  },
});

const history = command({
  name: 'history',
  args: 'KEY',
  description:
    'Lists the changes of KEY, newest first: version, revision, type, time, actor, reason, value.',
  options: {
    ...ENV,
    limit: {
      type: 'string',
      value: 'N',
      description: 'How many at most (default 50, at most 200)',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = ''] = positionalsOf(invocation, 1, 1, 'a key');
    const limit = values.limit === undefined ? 50 : countFlag('--limit', values.limit, 200);
    const page = await client(values).config.history(key, { ...envOf(values), limit });
    print(values.json, page, () => historyTable(page.items, page.next_before !== null));
    return 0;
  },
});

const diff = command({
  name: 'diff',
  args: 'KEY FROM [TO]',
  description: 'Shows what changed between two versions of KEY (default TO: the newest).',
  options: ENV,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = '', from = '', to] = positionalsOf(
      invocation,
      2,
      3,
      'a key and a version to compare from',
    );
    const result = await client(values).config.diff(
      key,
      positiveInteger('FROM', from),
      to === undefined ? undefined : positiveInteger('TO', to),
      envOf(values),
    );
    print(values.json, result, () => {
      const head = `${result.key} in ${result.env}: version ${result.from.version} → ${result.to.version}`;
      if (result.changes.length === 0) return `${head}\n(no changes)`;
      const lines = result.changes.map((c) => {
        const path = c.path === '' ? '(whole value)' : c.path;
        if (c.op === 'add') return `+ ${path}: ${JSON.stringify(c.value)}`;
        if (c.op === 'remove') return `- ${path}: ${JSON.stringify(c.old_value)}`;
        return `~ ${path}: ${JSON.stringify(c.old_value)} → ${JSON.stringify(c.value)}`;
      });
      return [head, ...lines].join('\n');
    });
    return 0;
  },
});

const revert = command({
  name: 'revert',
  args: 'KEY VERSION',
  description: 'Writes what VERSION held as a new change (a delete, if VERSION was one).',
  options: { ...ENV, ...IF_VERSION, ...REASON },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const [key = '', version = ''] = positionalsOf(
      invocation,
      2,
      2,
      'a key and the version to go back to',
    );
    const result: ConfigItem | ConfigDeleted = await client(values).config.revert(
      key,
      positiveInteger('VERSION', version),
      { ...envOf(values), ...reasonOf(values), ...ifVersionOf(values) },
    );
    print(values.json, result, () =>
      'deleted' in result
        ? `Reverted ${result.key} in ${result.env} to a delete: version ${result.version}, revision ${result.revision}.`
        : `Reverted ${result.key} in ${result.env} to version ${version}'s value: now version ${result.version}, revision ${result.revision}.`,
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'config',
  summary: 'Configuration: versioned keys per environment, live changes',
  notes:
    "Keys are paths such as app/db/pool. Reading needs any role; writing needs admin or operator. --json prints the API's JSON answer.",
  subcommands: [get, put, rm, ls, envs, watch, history, diff, revert],
});

function historyTable(items: ConfigHistoryEntry[], more: boolean): string {
  return (
    formatTable(
      ['VERSION', 'REVISION', 'TYPE', 'AT', 'BY', 'REASON', 'VALUE'],
      items.map((h) => [
        String(h.version),
        String(h.revision),
        h.type,
        h.at,
        by(h.by),
        h.reason ?? '-',
        h.type === 'put' ? shortJson(h.value) : '-',
      ]),
    ) + (more ? '\n(older changes: raise --limit)' : '')
  );
}
