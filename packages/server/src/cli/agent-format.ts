import type { Agent } from '@orchestra/sdk';

const percent = (fraction: number) => `${Math.round(fraction * 100)}%`;

/** `cpu 12% mem 40%` from the agent's last heartbeat; `-` when it reported neither. */
export function loadText(agent: Agent): string {
  const parts: string[] = [];
  if (agent.load?.cpu !== undefined) parts.push(`cpu ${percent(agent.load.cpu)}`);
  if (agent.load?.memory !== undefined) parts.push(`mem ${percent(agent.load.memory)}`);
  return parts.length > 0 ? parts.join(' ') : '-';
}

/** Tasks the agent holds of the most it runs at once: `1/4`. */
export function inFlightText(agent: Agent): string {
  return `${agent.in_flight.length}/${agent.max_concurrency}`;
}

/**
 * A row of `agents ls`: ID, STATUS, CAPABILITIES, IN FLIGHT, LOAD, LAST HEARTBEAT, NODE.
 */
export function agentRow(agent: Agent): string[] {
  return [
    agent.id,
    agent.status,
    agent.capabilities.length > 0 ? agent.capabilities.join(',') : '-',
    inFlightText(agent),
    loadText(agent),
    agent.last_heartbeat_at ?? '-',
    agent.node_id ?? '-',
  ];
}

/** What `agents get` prints: one field a line, then the tasks it holds. */
export function describeAgent(agent: Agent): string {
  const labels = Object.entries(agent.labels).map(([key, value]) => `${key}=${value}`);
  const rows: [string, string][] = [
    ['ID', agent.id],
    ['Name', agent.name],
    ['Status', agent.status_reason ? `${agent.status} (${agent.status_reason})` : agent.status],
    ['Capabilities', agent.capabilities.length > 0 ? agent.capabilities.join(', ') : '-'],
    ['In flight', `${inFlightText(agent)} (tasks held / max concurrency)`],
    ['Load', loadText(agent)],
    ['Weight', String(agent.weight)],
    ['Labels', labels.length > 0 ? labels.join(',') : '-'],
    ['SDK', agent.sdk === null ? '-' : `${agent.sdk.name} ${agent.sdk.version}`],
    ['Node', agent.node_id ?? '- (not connected)'],
    ['Connected', agent.connected_at ?? '-'],
    ['Last heartbeat', agent.last_heartbeat_at ?? '-'],
    ['Lease expires', agent.lease_expires_at ?? '-'],
    ['Created', agent.created_at],
    ['Updated', agent.updated_at],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return [
    ...rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`),
    '',
    `Tasks held:${agent.in_flight.length > 0 ? agent.in_flight.map((id) => `\n  ${id}`).join('') : ' (none)'}`,
  ].join('\n');
}
