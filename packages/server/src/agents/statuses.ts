/** What `GET /v1/agents` says an agent is doing (docs/protocol.md, "Agent status"). */
export const AGENT_STATUSES = ['online', 'busy', 'draining', 'offline', 'error'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];
