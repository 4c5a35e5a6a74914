import type { MultitaskStrategy, Session } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  countFlag,
  labelFlags,
  noArguments,
  oneArgument,
  print,
  UsageError,
} from '../common.ts';
import { describeSession, sessionEventLine, sessionRow } from '../session-format.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const DEFAULT_SESSION_LIST_LIMIT = 50;
const MAX_SESSION_LIST_LIMIT = 10_000;
const MULTITASK_STRATEGIES: readonly MultitaskStrategy[] = ['reject', 'enqueue', 'interrupt'];

const create = command({
  name: 'create',
  description:
    'Creates a session and prints its id. Tasks submitted in it ("task submit --session ID") run one at a time, in order, and share one history.',
  options: {
    name: { type: 'string', value: 'NAME', description: 'A name for the session' },
    label: {
      type: 'string',
      value: 'KEY=VALUE',
      multiple: true,
      description: 'A label',
    },
    strategy: {
      type: 'string',
      value: 'STRATEGY',
      description:
        'What a task submitted while another is unfinished does: enqueue (default: it runs after the earlier ones), reject (refused, SESSION_BUSY) or interrupt (the unfinished ones are cancelled, then it runs)',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const strategy = values.strategy;
    if (strategy !== undefined && !(MULTITASK_STRATEGIES as string[]).includes(strategy)) {
      throw new UsageError(
        `--strategy must be one of ${MULTITASK_STRATEGIES.join(', ')}; got "${strategy}"`,
      );
    }
    const labels = labelFlags(values.label);
    const session = await client(values).sessions.create({
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...(strategy !== undefined ? { multitask_strategy: strategy as MultitaskStrategy } : {}),
    });
    print(values.json, session, () =>
      [
        session.id,
        `Created session ${session.id}${session.name === null ? '' : ` (${session.name})`}, strategy ${session.multitask_strategy}.`,
        `Submit tasks in it with "orchestra task submit ... --session ${session.id}".`,
      ].join('\n'),
    );
    return 0;
  },
});

const list = command({
  name: 'ls',
  aliases: ['list'],
  description:
    'Lists the N newest sessions that match: name, strategy, how many tasks it has and how many of them are unfinished.',
  options: {
    label: {
      type: 'string',
      value: 'KEY=VALUE',
      multiple: true,
      description: 'Only sessions with this label; with several, all must match',
    },
    limit: {
      type: 'string',
      value: 'N',
      description: `At most N sessions (default ${DEFAULT_SESSION_LIST_LIMIT}, at most ${MAX_SESSION_LIST_LIMIT})`,
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const limit =
      values.limit === undefined
        ? DEFAULT_SESSION_LIST_LIMIT
        : countFlag('--limit', values.limit, MAX_SESSION_LIST_LIMIT);
    const labels = labelFlags(values.label);
    const sessions: Session[] = [];
    let more = false;
    // One past the limit tells whether some were left out.
    for await (const session of client(values).sessions.listAll({
      limit: Math.min(limit + 1, 200),
      labels,
    })) {
      if (sessions.length === limit) {
        more = true;
        break;
      }
      sessions.push(session);
    }
    print(values.json, sessions, () =>
      formatTable(
        ['ID', 'NAME', 'STRATEGY', 'TASKS', 'UNFINISHED', 'CREATED'],
        sessions.map(sessionRow),
      ),
    );
    if (more && !values.json) {
      process.stderr.write(`Showing the newest ${limit} sessions; use --limit N for more.\n`);
    }
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description: 'Shows a session, with the ids of its unfinished tasks.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const session = await client(values).sessions.get(oneArgument(invocation, 'session id'));
    print(values.json, session, () => describeSession(session));
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'ID',
  description:
    'Deletes a session AND every task submitted in it, with their events and results; there is no undo. Refused (SESSION_BUSY) while one of its tasks is unfinished.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'session id');
    const api = client(values);
    // Counted first: what the delete took with it is said, not left to be found out.
    const { total } = (await api.sessions.get(id)).tasks;
    await api.sessions.delete(id);
    print(
      values.json,
      { deleted: id, deleted_tasks: total },
      () =>
        `Deleted session ${id}${total === 0 ? '' : ` with its ${total === 1 ? 'task' : `${total} tasks`} and their events`}.`,
    );
    return 0;
  },
});

const events = command({
  name: 'events',
  args: 'ID',
  description:
    "Prints the session's history, one event a line (offset, time, type, task id, summary): session.created, then every event of every task in it. Without --follow, prints the events there are and exits.",
  options: {
    after: {
      type: 'string',
      value: 'N',
      description: 'Events after offset N (default: from the first one still retained)',
    },
    follow: { type: 'boolean', description: 'Goes on with new events until interrupted' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'session id');
    if (values.after !== undefined && !/^\d{1,15}$/.test(values.after)) {
      throw new UsageError(`--after must be an event offset (0 or more), got "${values.after}"`);
    }
    const after = values.after === undefined ? 0 : Number(values.after);
    for await (const item of client(values).sessions.events(id, {
      after,
      follow: values.follow,
    })) {
      process.stdout.write(`${values.json ? JSON.stringify(item) : sessionEventLine(item)}\n`);
    }
    return 0;
  },
});

export const group = defineGroup({
  name: 'sessions',
  summary: 'Manage sessions: tasks that run in order and share a history',
  notes:
    'Creating and deleting need an admin or operator credential. --json prints the session (a JSON array for ls; one JSON event a line for events).',
  subcommands: [create, list, get, remove, events],
});
