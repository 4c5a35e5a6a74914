/** Status an agent record is stored with; `busy` is derived when it is shown. */
export type StoredAgentStatus = 'online' | 'draining' | 'offline' | 'error';

/** Tables owned by the agents module. JSON columns hold text in both stores. */
export interface AgentsTable {
  tenant_id: string;
  /** Chosen by the agent, stable across its reconnects; unique per tenant. */
  id: string;
  name: string;
  /** JSON array of capability names. */
  capabilities: string;
  max_concurrency: number;
  weight: number;
  /** JSON object. */
  labels: string;
  /** JSON `{name, version}` of the SDK, or null. */
  sdk: string | null;
  status: StoredAgentStatus;
  /** Why the agent is in `error` or went offline; null otherwise. */
  status_reason: string | null;
  /** Instance id of the node holding its connection; null while disconnected. */
  node_id: string | null;
  /** Identifies the current connection, so that a stale one cannot write over a newer one. */
  connection_id: string | null;
  connected_at: string | null;
  last_heartbeat_at: string | null;
  /** The agent's tasks stay its own until then; renewed by every heartbeat. */
  lease_expires_at: string | null;
  /** JSON `{in_flight, cpu?, memory?}` from the last heartbeat, or null. */
  load: string | null;
  created_at: string;
  updated_at: string;
}

/**
 * The lease clock's single row (id 1): when a node last ticked it. A gap between ticks is a
 * time in which no node could hear heartbeats.
 */
export interface AgentLeaseClockTable {
  id: number;
  alive_at: string;
}

export interface AgentsTables {
  agents: AgentsTable;
  agent_lease_clock: AgentLeaseClockTable;
}

declare module '../store/database.ts' {
  interface Database extends AgentsTables {}
}
