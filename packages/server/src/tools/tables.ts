/** Tables owned by the tools module. */
export interface ToolsTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant; immutable. */
  name: string;
  /** `http` or `mcp`. */
  source_type: string;
  /** The MCP server's name, or the HTTP host: what the breaker and bulkhead are keyed by. */
  upstream: string;
  latest_version: number;
  highest_version: number;
  /** `ToolState`. */
  state: string;
  /** Hash of the approved definition; null until one is approved. */
  pinned_hash: string | null;
  /** A changed definition held back until approved (`PendingDefinition` as JSON). */
  pending: string | null;
  created_at: string;
  updated_at: string;
}

export interface ToolVersionsTable {
  tool_id: string;
  version: number;
  /** `ToolSpec` as JSON. */
  spec: string;
  /** Hash of the name, description and schemas (what pinning compares). */
  hash: string;
  created_at: string;
  created_by: string;
}

/** The labels of the version `latest` points to, for filtering lists. */
export interface ToolLabelsTable {
  tool_id: string;
  key: string;
  value: string;
}

/** The audit record of every call (`ToolCall`). */
export interface ToolCallsTable {
  id: string;
  tenant_id: string;
  tool: string;
  tool_id: string;
  tool_version: number;
  source: string;
  upstream: string;
  /** The caller's fields, one column each, to filter by. */
  credential: string;
  role: string;
  agent_id: string | null;
  task_id: string | null;
  session_id: string | null;
  /** The arguments as JSON, redacted and truncated. */
  arguments: string;
  status: string;
  is_error: number;
  /** `{ code, message }` as JSON, or null. */
  error: string | null;
  attempts: number;
  duration_ms: number | null;
  result_bytes: number | null;
  approval_id: string | null;
  created_at: string;
  finished_at: string | null;
}

/** Calls waiting for (or given) an operator's decision. */
export interface ToolApprovalsTable {
  id: string;
  tenant_id: string;
  call_id: string;
  tool: string;
  tool_version: number;
  policy: string;
  /** `ToolCaller` as JSON. */
  caller: string;
  /** The exact arguments, sealed under the node key: they are what runs once approved. */
  arguments: string;
  arguments_hash: string;
  status: string;
  deadline: string;
  decided_by: string | null;
  decided_at: string | null;
  reason: string | null;
  /** The call's `ToolResult` as JSON once it ran, for whoever waits for it. */
  result: string | null;
  created_at: string;
}

export interface ToolPoliciesTable {
  id: string;
  tenant_id: string;
  name: string;
  /** The policy's fields as JSON (`ToolPolicySpec`). */
  spec: string;
  created_at: string;
  updated_at: string;
}

export interface ToolsTables {
  tools: ToolsTable;
  tool_versions: ToolVersionsTable;
  tool_labels: ToolLabelsTable;
  tool_calls: ToolCallsTable;
  tool_policies: ToolPoliciesTable;
  tool_approvals: ToolApprovalsTable;
}

declare module '../store/database.ts' {
  interface Database extends ToolsTables {}
}
