import { TOOL_CALL_STATUSES } from '@orchestra/protocol/constants';
import { type ListToolCallsOptions, RealtimeClient, type ToolCall } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  connection,
  countFlag,
  noArguments,
  oneArgument,
  print,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup, oneOf } from '../spec.ts';
import { formatTable } from '../table.ts';
import { CALL_HEADER, callRow, describeCall } from '../tool-format.ts';

/** The realtime topic that carries every call of the tenant as it is recorded and moves on. */
const TOOL_CALLS_TOPIC = 'tool-calls';

/** Whether a call matches the filters of `tool-calls ls` (for the calls --follow receives). */
function matches(call: ToolCall, filter: ListToolCallsOptions): boolean {
  return (
    (filter.tool === undefined || call.tool === filter.tool) &&
    (filter.status === undefined || call.status === filter.status) &&
    (filter.credential === undefined || call.caller.credential === filter.credential) &&
    (filter.agent_id === undefined || call.caller.agent_id === filter.agent_id) &&
    (filter.task_id === undefined || call.caller.task_id === filter.task_id) &&
    (filter.session_id === undefined || call.caller.session_id === filter.session_id)
  );
}

/**
 * Prints every call of the `tool-calls` topic that matches, one a line, from now on until
 * the process is interrupted. The realtime client reconnects and recovers by itself.
 */
async function follow(
  values: { url?: string | undefined; 'api-key'?: string | undefined; json: boolean },
  filter: ListToolCallsOptions,
): Promise<number> {
  const realtime = new RealtimeClient({
    ...connection(values),
    onStatus: ({ state, retryInMs }) => {
      if (state === 'reconnecting' && retryInMs !== undefined) {
        process.stderr.write(`(reconnecting in ${Math.round(retryInMs)} ms)\n`);
      }
    },
  });
  const subscription = await realtime.subscribe<ToolCall>(TOOL_CALLS_TOPIC, {
    onRecoveryFailed: () => process.stderr.write('(some calls were missed while reconnecting)\n'),
  });
  if (!values.json) {
    process.stderr.write(`Following ${TOOL_CALLS_TOPIC}; Ctrl-C stops.\n`);
    process.stdout.write(`${CALL_HEADER.join('\t')}\n`);
  }
  for await (const message of subscription) {
    const call = message.data;
    if (!matches(call, filter)) continue;
    process.stdout.write(`${values.json ? JSON.stringify(call) : callRow(call).join('\t')}\n`);
  }
  return 0;
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description:
    'Lists recorded tool calls, newest first. With --follow, prints instead each call as it is recorded and as it moves on (awaiting approval, running, ended), one a line (tab-separated; --json: one JSON call a line), until interrupted.',
  options: {
    tool: { type: 'string', value: 'NAME', description: 'Only the calls of this tool' },
    status: {
      type: 'string',
      value: 'STATUS',
      description: `Only calls in this status: ${oneOf(TOOL_CALL_STATUSES)}`,
    },
    credential: {
      type: 'string',
      value: 'ID',
      description: 'Only calls made with this API key id (or jwt:TENANT:SUBJECT)',
    },
    agent: { type: 'string', value: 'ID', description: 'Only calls made by this agent' },
    task: { type: 'string', value: 'ID', description: 'Only calls made for this task' },
    session: { type: 'string', value: 'ID', description: 'Only calls made in this session' },
    limit: {
      type: 'string',
      value: 'N',
      description: 'At most N calls (default 50, at most 200)',
    },
    follow: {
      type: 'boolean',
      short: 'f',
      description: 'Prints calls live, from now on, until interrupted; not with --limit',
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const filter: ListToolCallsOptions = {
      ...(values.tool !== undefined ? { tool: values.tool } : {}),
      ...(values.status !== undefined
        ? { status: choice('--status', values.status, TOOL_CALL_STATUSES) }
        : {}),
      ...(values.credential !== undefined ? { credential: values.credential } : {}),
      ...(values.agent !== undefined ? { agent_id: values.agent } : {}),
      ...(values.task !== undefined ? { task_id: values.task } : {}),
      ...(values.session !== undefined ? { session_id: values.session } : {}),
    };
    if (values.follow) {
      if (values.limit !== undefined)
        throw new UsageError('use either --follow or --limit, not both');
      return follow(values, filter);
    }
    const limit = values.limit === undefined ? 50 : countFlag('--limit', values.limit, 200);
    const page = await client(values).toolCalls.list({ ...filter, limit });
    print(
      values.json,
      page.items,
      () =>
        formatTable(CALL_HEADER, page.items.map(callRow)) +
        (page.next_cursor === null ? '' : '\n(more: raise --limit or narrow with the filters)'),
    );
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description:
    'Shows the record of one call: status, error, caller, approval, arguments (secrets redacted).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const call = await client(values).toolCalls.get(oneArgument(invocation, 'call id'));
    print(values.json, call, () => describeCall(call));
    return 0;
  },
});

export const group = defineGroup({
  name: 'tool-calls',
  summary: 'The audited record of every tool call; follow it live',
  notes:
    'Any credential of the tenant may read the record. --follow subscribes to the realtime topic tool-calls.',
  subcommands: [list, get],
});
