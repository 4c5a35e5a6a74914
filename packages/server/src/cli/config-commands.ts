import type {
  ConfigDeleted,
  ConfigEnvironment,
  ConfigHistoryEntry,
  ConfigItem,
  ResolveStrategy,
  ServiceInstance,
} from '@orchestra/sdk';
import { STRATEGY_NAMES } from '../balancing/strategies.ts';
import {
  client,
  countFlag,
  parse,
  positiveInteger,
  print,
  readText,
  UsageError,
} from './common.ts';
import { formatTable } from './table.ts';

export const CONFIG_HELP = `Usage: orchestra config <get|put|rm|ls|envs|watch|history|diff|revert> [options]

  config get KEY
      Prints the value of KEY (JSON); its version, revision and last change go to
      standard error.
  config put KEY [VALUE] [--file F | --string] [--if-version N | --if-absent] [--reason R]
      Sets KEY to VALUE, a JSON text ('{"size":30}', 42, '"text"'); --file reads the JSON
      from a file (- for standard input); --string stores VALUE as a string as it is.
      --if-version writes only over that version, --if-absent only a new key: otherwise
      the write is refused (PRECONDITION_FAILED) and nothing changes.
  config rm KEY [--if-version N] [--reason R]   (alias: delete)
      Deletes KEY; its history stays.
  config ls [--prefix P] [--limit N] [--revision R]   (alias: list)
      Lists keys under a prefix (default 100, at most 10000), all at one revision;
      --revision lists them as they were then.
  config envs [--limit N]   (alias: environments)
      Lists the environments that hold at least one key, with how many keys each
      (default 100, at most 10000). An environment exists through its keys: it is made by
      the first put into it and gone with its last key.
  config watch [--prefix P] [--from-revision R] [--count N]
      Prints each change under a prefix as it happens (revision, type, key, value), after
      revision R when given; stops after N changes or on Ctrl-C. Reconnects by itself.
  config history KEY [--limit N]
      Lists the changes of KEY, newest first: version, revision, type, time, actor,
      reason, value.
  config diff KEY FROM [TO]
      Shows what changed between two versions of KEY (default TO: the newest).
  config revert KEY VERSION [--if-version N] [--reason R]
      Writes what VERSION held as a new change (a delete, if VERSION was one).

Every subcommand but envs takes --env E (default: the server's
ORCHESTRA_CONFIG_DEFAULT_ENV).
Keys are paths such as app/db/pool. Reading needs any role; writing needs admin or
operator. --json prints the API's JSON answer.

Common options: --url URL, --api-key KEY, --json`;

export const SERVICES_HELP = `Usage: orchestra services <ls|resolve> [options]

  services ls
      (alias: list) Lists the registered services: instances and passing instances.
  services ls NAME [--all]
      Lists the passing instances of service NAME (--all: every instance, with its
      health status and last check error).
  services resolve NAME [--strategy S] [--key K]
      Picks one passing instance as the registry's resolve does and prints its
      address:port. Strategies: ${STRATEGY_NAMES.join(', ')}; consistent_hash needs --key.

Instances register themselves through the API or the SDK's ServiceClient.
--json prints the API's JSON answer.

Common options: --url URL, --api-key KEY, --json`;

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

export async function configCommand(args: string[]): Promise<void> {
  // Flags may come before the subcommand too (`config --env prod get k`).
  const { values, positionals: words } = parse(args, {
    env: { type: 'string' },
    prefix: { type: 'string' },
    limit: { type: 'string' },
    revision: { type: 'string' },
    file: { type: 'string' },
    string: { type: 'boolean', default: false },
    'if-version': { type: 'string' },
    'if-absent': { type: 'boolean', default: false },
    reason: { type: 'string' },
    'from-revision': { type: 'string' },
    count: { type: 'string' },
  });
  const [sub, ...positionals] = words;
  if (values.help || sub === undefined) {
    process.stdout.write(`${CONFIG_HELP}\n`);
    if (!values.help) {
      throw new UsageError(
        'config needs a subcommand: get, put, rm, ls, envs, watch, history, diff or revert',
      );
    }
    return;
  }
  const env = values.env !== undefined ? { env: values.env } : {};
  const reason = values.reason !== undefined ? { reason: values.reason } : {};
  const ifVersion =
    values['if-version'] !== undefined
      ? { ifVersion: positiveInteger('--if-version', values['if-version']) }
      : {};
  const args0 = (count: number, names: string) => {
    if (positionals.length < count) throw new UsageError(`config ${sub} needs ${names}`);
    return positionals;
  };
  const noMore = (count: number) => {
    if (positionals.length > count) {
      throw new UsageError(
        `config ${sub} takes ${count === 0 ? 'no arguments' : `${count} argument(s)`}, got "${positionals.join(' ')}"`,
      );
    }
  };
  const api = () => client(values).config;
  switch (sub) {
    case 'get': {
      const [key = ''] = args0(1, 'a key');
      noMore(1);
      const item = await api().get(key, env);
      if (values.json) {
        process.stdout.write(`${JSON.stringify(item, null, 2)}\n`);
        return;
      }
      process.stdout.write(`${JSON.stringify(item.value, null, 2)}\n`);
      process.stderr.write(
        `${item.key} in ${item.env}: version ${item.version}, revision ${item.revision}, ${item.updated_at} by ${by(item.updated_by)}\n`,
      );
      return;
    }
    case 'put': {
      const [key = ''] = args0(1, 'a key');
      noMore(2);
      const given = positionals[1];
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
      const item = await api().set(key, value, {
        ...env,
        ...reason,
        ...ifVersion,
        ...(values['if-absent'] ? { ifAbsent: true } : {}),
      });
      print(
        values.json,
        item,
        () => `Set ${item.key} in ${item.env}: version ${item.version}, revision ${item.revision}.`,
      );
      return;
    }
    case 'rm':
    case 'delete': {
      const [key = ''] = args0(1, 'a key');
      noMore(1);
      const deleted = await api().delete(key, { ...env, ...reason, ...ifVersion });
      print(
        values.json,
        deleted,
        () =>
          `Deleted ${deleted.key} in ${deleted.env}: version ${deleted.version}, revision ${deleted.revision}.`,
      );
      return;
    }
    case 'ls':
    case 'list': {
      noMore(0);
      const limit =
        values.limit === undefined
          ? DEFAULT_LIST_LIMIT
          : countFlag('--limit', values.limit, MAX_LIST_LIMIT);
      const items: ConfigItem[] = [];
      let cursor: string | undefined;
      let revision: number | undefined =
        values.revision !== undefined ? revisionFlag('--revision', values.revision) : undefined;
      let more = false;
      do {
        const page = await api().list({
          ...env,
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
        return;
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
      return;
    }
    case 'envs':
    case 'environments': {
      noMore(0);
      if (values.env !== undefined || values.prefix !== undefined) {
        throw new UsageError('config envs lists every environment: it takes no --env or --prefix');
      }
      const limit =
        values.limit === undefined
          ? DEFAULT_LIST_LIMIT
          : countFlag('--limit', values.limit, MAX_LIST_LIMIT);
      const items: ConfigEnvironment[] = [];
      let cursor: string | undefined;
      do {
        const page = await api().environments({
          limit: Math.min(PAGE, limit - items.length),
          ...(cursor !== undefined ? { cursor } : {}),
        });
        items.push(...page.items);
        cursor = page.next_cursor ?? undefined;
      } while (cursor !== undefined && items.length < limit);
      const more = cursor !== undefined;
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ items, more }, null, 2)}\n`);
        return;
      }
      if (items.length === 0) {
        process.stderr.write(
          'No environment holds keys yet: config put KEY VALUE --env E makes one.\n',
        );
        return;
      }
      process.stdout.write(
        `${formatTable(
          ['ENV', 'KEYS'],
          items.map((e) => [e.env, String(e.keys)]),
        )}\n`,
      );
      if (more) process.stderr.write('more environments follow: raise --limit\n');
      return;
    }
    case 'watch': {
      noMore(0);
      const count =
        values.count !== undefined ? countFlag('--count', values.count, 1_000_000_000) : Infinity;
      const abort = new AbortController();
      const stop = () => abort.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      let seen = 0;
      try {
        for await (const change of api().watch({
          ...env,
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
      return;
    }
    case 'history': {
      const [key = ''] = args0(1, 'a key');
      noMore(1);
      const limit = values.limit === undefined ? 50 : countFlag('--limit', values.limit, 200);
      const page = await api().history(key, { ...env, limit });
      print(values.json, page, () => historyTable(page.items, page.next_before !== null));
      return;
    }
    case 'diff': {
      const [key = '', from = ''] = args0(2, 'a key and a version to compare from');
      noMore(3);
      const to = positionals[2];
      const diff = await api().diff(
        key,
        positiveInteger('FROM', from),
        to === undefined ? undefined : positiveInteger('TO', to),
        env,
      );
      print(values.json, diff, () => {
        const head = `${diff.key} in ${diff.env}: version ${diff.from.version} → ${diff.to.version}`;
        if (diff.changes.length === 0) return `${head}\n(no changes)`;
        const lines = diff.changes.map((c) => {
          const path = c.path === '' ? '(whole value)' : c.path;
          if (c.op === 'add') return `+ ${path}: ${JSON.stringify(c.value)}`;
          if (c.op === 'remove') return `- ${path}: ${JSON.stringify(c.old_value)}`;
          return `~ ${path}: ${JSON.stringify(c.old_value)} → ${JSON.stringify(c.value)}`;
        });
        return [head, ...lines].join('\n');
      });
      return;
    }
    case 'revert': {
      const [key = '', version = ''] = args0(2, 'a key and the version to go back to');
      noMore(2);
      const result: ConfigItem | ConfigDeleted = await api().revert(
        key,
        positiveInteger('VERSION', version),
        { ...env, ...reason, ...ifVersion },
      );
      print(values.json, result, () =>
        'deleted' in result
          ? `Reverted ${result.key} in ${result.env} to a delete: version ${result.version}, revision ${result.revision}.`
          : `Reverted ${result.key} in ${result.env} to version ${version}'s value: now version ${result.version}, revision ${result.revision}.`,
      );
      return;
    }
    default:
      throw new UsageError(
        `unknown config subcommand "${sub}"; use get, put, rm, ls, envs, watch, history, diff or revert`,
      );
  }
}

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

export async function servicesCommand(args: string[]): Promise<void> {
  const { values, positionals: words } = parse(args, {
    all: { type: 'boolean', default: false },
    strategy: { type: 'string' },
    key: { type: 'string' },
  });
  const [sub, ...positionals] = words;
  if (values.help || sub === undefined) {
    process.stdout.write(`${SERVICES_HELP}\n`);
    if (!values.help) throw new UsageError('services needs a subcommand: ls or resolve');
    return;
  }
  const api = () => client(values).services;
  switch (sub) {
    case 'ls':
    case 'list': {
      if (positionals.length > 1) {
        throw new UsageError(
          `services ls takes at most one service name, got "${positionals.join(' ')}"`,
        );
      }
      const [name] = positionals;
      if (name === undefined) {
        if (values.all) throw new UsageError('--all needs a service name');
        const services = await api().list();
        print(values.json, services, () =>
          formatTable(
            ['SERVICE', 'INSTANCES', 'PASSING'],
            services.map((s) => [s.name, String(s.instances), String(s.passing)]),
          ),
        );
        return;
      }
      const listed = await api().instances(name, { all: values.all });
      print(values.json, listed, () => instanceTable(listed.instances));
      return;
    }
    case 'resolve': {
      const [name] = positionals;
      if (name === undefined) throw new UsageError('services resolve needs a service name');
      if (positionals.length > 1) {
        throw new UsageError(
          `services resolve takes one service name, got "${positionals.join(' ')}"`,
        );
      }
      const strategy = values.strategy;
      if (strategy !== undefined && !(STRATEGY_NAMES as readonly string[]).includes(strategy)) {
        throw new UsageError(
          `--strategy must be one of ${STRATEGY_NAMES.join(', ')}, got "${strategy}"`,
        );
      }
      if (strategy === 'consistent_hash' && values.key === undefined) {
        throw new UsageError('--strategy consistent_hash needs --key');
      }
      const instance = await api().resolve(name, {
        ...(strategy !== undefined ? { strategy: strategy as ResolveStrategy } : {}),
        ...(values.key !== undefined ? { key: values.key } : {}),
      });
      print(values.json, instance, () => hostPort(instance));
      return;
    }
    default:
      throw new UsageError(`unknown services subcommand "${sub}"; use ls or resolve`);
  }
}

function hostPort(i: ServiceInstance): string {
  return `${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}`;
}

function instanceTable(instances: ServiceInstance[]): string {
  return formatTable(
    ['ID', 'ADDRESS', 'STATUS', 'VERSION', 'ZONE', 'REGISTERED', 'LAST ERROR'],
    instances.map((i) => [
      i.id,
      hostPort(i),
      i.status,
      i.metadata.version ?? '-',
      i.metadata.zone ?? '-',
      i.registered_at,
      i.last_error ?? '-',
    ]),
  );
}
