import { AGENT_STATUSES } from '@orchestra/protocol/constants';
import type { Agent, AgentStatus } from '@orchestra/sdk';
import { agentRow, describeAgent } from '../agent-format.ts';
import {
  CLIENT_OPTIONS,
  client,
  countFlag,
  noArguments,
  oneArgument,
  print,
  UsageError,
} from '../common.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

const DEFAULT_AGENT_LIST_LIMIT = 50;
const MAX_AGENT_LIST_LIMIT = 10_000;

const list = command({
  name: 'ls',
  aliases: ['list'],
  description:
    'Lists the agents of your tenant in id order: status, capabilities, tasks held of the most it runs at once, the load and time of its last heartbeat, and the node it is connected to.',
  options: {
    status: {
      type: 'string',
      value: 'STATUS',
      multiple: true,
      description: `Only agents in STATUS: ${AGENT_STATUSES.join(', ')}`,
    },
    capability: { type: 'string', value: 'C', description: 'Only the agents that offer C' },
    limit: {
      type: 'string',
      value: 'N',
      description: `At most N agents (default ${DEFAULT_AGENT_LIST_LIMIT}, at most ${MAX_AGENT_LIST_LIMIT})`,
    },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const statuses = values.status ?? [];
    for (const status of statuses) {
      if (!(AGENT_STATUSES as readonly string[]).includes(status)) {
        throw new UsageError(
          `--status must be one of ${AGENT_STATUSES.join(', ')}; got "${status}"`,
        );
      }
    }
    const limit =
      values.limit === undefined
        ? DEFAULT_AGENT_LIST_LIMIT
        : countFlag('--limit', values.limit, MAX_AGENT_LIST_LIMIT);
    const agents: Agent[] = [];
    let more = false;
    // One past the limit tells whether some were left out.
    for await (const agent of client(values).agents.listAll({
      limit: Math.min(limit + 1, 200),
      status: [...new Set(statuses)] as AgentStatus[],
      ...(values.capability !== undefined ? { capability: values.capability } : {}),
    })) {
      if (agents.length === limit) {
        more = true;
        break;
      }
      agents.push(agent);
    }
    print(values.json, agents, () =>
      formatTable(
        ['ID', 'STATUS', 'CAPABILITIES', 'IN FLIGHT', 'LOAD', 'LAST HEARTBEAT', 'NODE'],
        agents.map(agentRow),
      ),
    );
    if (more && !values.json) {
      process.stderr.write(`Showing the first ${limit} agents; use --limit N for more.\n`);
    }
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'ID',
  description:
    'Shows an agent: status, capabilities, labels, load, connection, lease, and the tasks it holds.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const agent = await client(values).agents.get(oneArgument(invocation, 'agent id'));
    print(values.json, agent, () => describeAgent(agent));
    return 0;
  },
});

const drain = command({
  name: 'drain',
  args: 'ID',
  description:
    'Asks a connected agent to finish the tasks it holds and take no new ones; it stays connected until it disconnects itself.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const agent = await client(values).agents.drain(oneArgument(invocation, 'agent id'));
    const held = agent.in_flight.length;
    print(
      values.json,
      agent,
      () =>
        `Draining agent ${agent.id}: it ${held > 0 ? `finishes the ${held} task${held === 1 ? '' : 's'} it holds and ` : ''}gets no new tasks.`,
    );
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'ID',
  description: 'Forgets an agent that is not connected and holds no tasks.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const id = oneArgument(invocation, 'agent id');
    await client(values).agents.delete(id);
    print(values.json, { deleted: id }, () => `Deleted agent ${id}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'agents',
  summary: 'Inspect the agents of your tenant, drain and remove them',
  notes:
    "Agents appear once they connect (the SDK's AgentWorker, with an agent key). Draining and removing need an admin or operator credential. --json prints the agent (a JSON array for ls).",
  subcommands: [list, get, drain, remove],
});
