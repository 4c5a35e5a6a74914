import {
  CLIENT_OPTIONS,
  client,
  countFlag,
  offsetFlag,
  oneArgument,
  print,
  readText,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists user topics by name: epoch, newest offset, created.',
  options: {
    prefix: { type: 'string', value: 'P', description: 'Only topics whose name starts with P' },
    limit: {
      type: 'string',
      value: 'N',
      description: 'At most N topics (default 50, at most 200)',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    if (positionals.length > 0) throw new UsageError('topics ls takes no arguments');
    const limit = values.limit === undefined ? 50 : countFlag('--limit', values.limit, 200);
    const page = await client(values).topics.list({
      limit,
      ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
    });
    print(
      values.json,
      page.items,
      () =>
        formatTable(
          ['TOPIC', 'EPOCH', 'OFFSET', 'CREATED'],
          page.items.map((t) => [t.name, t.epoch, String(t.last_offset), t.created_at]),
        ) + (page.next_cursor === null ? '' : `\n(more: raise --limit or use --prefix)`),
    );
    return 0;
  },
});

const publish = command({
  name: 'publish',
  args: 'TOPIC',
  description: 'Publishes a message and prints its offset once it is stored.',
  options: {
    data: {
      type: 'string',
      value: 'JSON',
      required: true,
      description: 'The message (- reads it from standard input)',
    },
    event: { type: 'string', value: 'NAME', description: 'The event name of the message' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const topic = oneArgument(invocation, 'topic');
    const { source, text } =
      values.data === '-' ? readText('-') : { source: '--data', text: values.data };
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`${source} is not JSON: ${(err as Error).message}`);
    }
    const published = await client(values).topics.publish(
      topic,
      data,
      values.event !== undefined ? { event: values.event } : {},
    );
    print(values.json, published, () => `Published to ${topic} at offset ${published.offset}.`);
    return 0;
  },
});

const history = command({
  name: 'history',
  args: 'TOPIC',
  description:
    'Prints retained messages, one a line (offset, time, event, data): by default the first 100 retained.',
  options: {
    after: { type: 'string', value: 'N', description: 'Messages after offset N' },
    last: { type: 'string', value: 'N', description: 'The last N messages; not with --after' },
    limit: { type: 'string', value: 'N', description: 'At most N messages (at most 1000)' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const topic = oneArgument(invocation, 'topic');
    if (values.after !== undefined && values.last !== undefined) {
      throw new UsageError('give --after or --last, not both');
    }
    const history = await client(values).topics.history(topic, {
      ...(values.after !== undefined ? { after: offsetFlag('--after', values.after) } : {}),
      ...(values.last !== undefined ? { last: countFlag('--last', values.last, 1000) } : {}),
      ...(values.limit !== undefined ? { limit: countFlag('--limit', values.limit, 1000) } : {}),
    });
    if (values.json) {
      process.stdout.write(`${JSON.stringify(history)}\n`);
      return 0;
    }
    for (const m of history.messages) {
      process.stdout.write(`${m.offset}\t${m.time}\t${m.event}\t${JSON.stringify(m.data)}\n`);
    }
    process.stderr.write(
      `epoch ${history.epoch}; offsets ${history.first_offset}..${history.last_offset} retained\n`,
    );
    return 0;
  },
});

const presence = command({
  name: 'presence',
  args: 'TOPIC',
  description: 'Lists who is subscribed with presence: connection, client, info, since when.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const members = await client(values).topics.presence(oneArgument(invocation, 'topic'));
    print(values.json, members, () =>
      formatTable(
        ['CONNECTION', 'CLIENT', 'INFO', 'SINCE'],
        members.map((m) => [m.connection_id, m.client_id, JSON.stringify(m.info), m.joined_at]),
      ),
    );
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'TOPIC',
  description: 'Deletes a user topic with its history; subscribers are told (topic_deleted).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const topic = oneArgument(invocation, 'topic');
    await client(values).topics.delete(topic);
    print(values.json, { deleted: topic }, () => `Deleted topic ${topic}.`);
    return 0;
  },
});

const token = command({
  name: 'token',
  args: 'TOPIC...',
  description:
    'Issues a realtime token (ort_…) that grants only these topics or patterns, for a browser or another client; prints the token.',
  options: {
    publish: { type: 'boolean', description: 'The token may publish too' },
    'client-id': { type: 'string', value: 'ID', description: 'The client id the token carries' },
    ttl: {
      type: 'string',
      value: 'SECONDS',
      description: 'Lifetime of the token (default 3600, at most 86400)',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    if (positionals.length === 0) throw new UsageError('topics token needs at least one topic');
    const token = await client(values).topics.createToken({
      topics: positionals,
      publish: values.publish,
      ...(values['client-id'] !== undefined ? { client_id: values['client-id'] } : {}),
      ...(values.ttl !== undefined ? { ttl_seconds: countFlag('--ttl', values.ttl, 86_400) } : {}),
    });
    print(values.json, token, () =>
      [token.token, `Valid until ${token.expires_at} for ${token.topics.join(', ')}.`].join('\n'),
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'topics',
  summary: 'Realtime topics: publish, read history, see who is present',
  notes:
    "To subscribe live, use the SDK's RealtimeClient or GET /v1/topics/TOPIC/events (SSE). Publishing needs an admin, operator or agent credential; rm and token need admin or operator. --json prints the API's JSON answer.",
  subcommands: [list, publish, history, presence, remove, token],
});
