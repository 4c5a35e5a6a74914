import type {
  CreateTool,
  CreateToolPolicy,
  Tool,
  ToolApproval,
  ToolApprovalDecision,
  ToolApprovalStatus,
  ToolCall,
  ToolCallStatus,
  ToolInvocation,
  ToolPolicy,
  ToolState,
  ToolVersionSummary,
  UpdateTool,
  UpdateToolPolicy,
} from '@orchestra/protocol';
import type { Orchestra } from './client.ts';
import { labelQuery, paginate } from './listing.ts';
import type { Page, PageOptions } from './types.ts';

// Tools, their policies, the record of their calls and the approvals calls wait for. The
// wire types are @orchestra/protocol's (decision 0014).

export type {
  ContentItem,
  HttpToolSource,
  McpToolSource,
  PendingDefinition,
  PolicyMatch,
  RetryPolicy,
  Tool,
  ToolAnnotations,
  ToolApproval,
  ToolApprovalDecision,
  ToolApprovalStatus,
  ToolCall,
  ToolCaller,
  ToolCallStatus,
  ToolInvocation,
  ToolPolicy,
  ToolResult,
  ToolSource,
  ToolState,
  ToolVersionSummary,
} from '@orchestra/protocol';

/** What `tools.create` takes: a name, an HTTP source and what version 1 defines. */
export type CreateToolInput = CreateTool;

/** What a version of an HTTP tool defines; an update replaces all of it. */
export type ToolDefinition = UpdateTool;

/** What `toolPolicies.create` takes. */
export type CreateToolPolicyInput = CreateToolPolicy;

/** What a policy says; an update replaces all of it (fields left out take their defaults). */
export type ToolPolicyDefinition = UpdateToolPolicy;

export interface ListToolsOptions extends PageOptions {
  /** Words that must all appear in the name, description or schema. */
  q?: string;
  /** Only HTTP tools, tools of MCP servers, agent tools or the built-in workspace tools. */
  source?: 'http' | 'mcp' | 'agent' | 'workspace';
  /** Only the tools of this MCP server. */
  server?: string;
  state?: ToolState;
  /** Only tools carrying every one of these labels. */
  labels?: Record<string, string>;
  name_prefix?: string;
}

export interface ListToolCallsOptions extends PageOptions {
  /** Only calls of this tool (its name). */
  tool?: string;
  status?: ToolCallStatus;
  /** Only calls made with this API key id, or `jwt:<tenant>:<subject>`. */
  credential?: string;
  agent_id?: string;
  task_id?: string;
  session_id?: string;
}

export interface ListToolApprovalsOptions extends PageOptions {
  status?: ToolApprovalStatus;
  /** Only approvals of calls to this tool (its name). */
  tool?: string;
}

export interface InvokeToolOptions {
  /** The session the call is made for. */
  sessionId?: string;
  /**
   * For a call a policy makes wait for an approval: how long the server waits for the
   * decision (0 to 300000 ms) before it answers with the call still `awaiting_approval`.
   * Default 0.
   */
  waitMs?: number;
  /**
   * How long to wait for the answer; default the client's timeout plus `waitMs`. A tool's
   * own timeout (and retries) may be longer than the client's 30 s.
   */
  timeoutMs?: number;
  /** Aborting it cancels the call: the server stops it at its source. */
  signal?: AbortSignal;
}

const toolPath = (ref: string) => `/v1/tools/${encodeURIComponent(ref)}`;
const policyPath = (ref: string) => `/v1/tool-policies/${encodeURIComponent(ref)}`;
const callPath = (id: string) => `/v1/tool-calls/${encodeURIComponent(id)}`;
const approvalPath = (id: string) => `/v1/tool-approvals/${encodeURIComponent(id)}`;

/**
 * `Orchestra.tools`: the tenant's tools (reading: any role; creating, changing and calling:
 * admin or operator, calling also agent; approving a definition: admin). Wherever a method
 * takes `ref`, it is the tool's name or id (`tool_…`); one that does not exist rejects with
 * `TOOL_NOT_FOUND` (404).
 */
export class ToolsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** One page of tools at their latest version, in name order. */
  list({ labels, ...options }: ListToolsOptions = {}): Promise<Page<Tool>> {
    return this.#client.request('GET', '/v1/tools', {
      query: { ...options, label: labelQuery(labels) },
    });
  }

  /** Every tool that matches, page after page. */
  listAll(options: Omit<ListToolsOptions, 'cursor'> = {}): AsyncIterable<Tool> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }

  /** The tool at its latest version: schemas, annotations, source, state, pending definition. */
  get(ref: string): Promise<Tool> {
    return this.#client.request('GET', toolPath(ref));
  }

  /** The tool at one version; `TOOL_VERSION_NOT_FOUND` (404) when it has no such version. */
  getVersion(ref: string, version: number): Promise<Tool> {
    return this.#client.request('GET', `${toolPath(ref)}/versions/${encodeURIComponent(version)}`);
  }

  /**
   * Registers an HTTP tool at version 1. `TOOL_ALREADY_EXISTS` (409) when the name is
   * taken; `VALIDATION_FAILED` (400) naming the field when one is invalid. Tools of MCP
   * servers are registered by their server, not here.
   */
  create(input: CreateToolInput): Promise<Tool> {
    return this.#client.request('POST', '/v1/tools', { body: input });
  }

  /**
   * Replaces an HTTP tool's definition with a new version. A tool of an MCP server rejects
   * with `TOOL_NOT_EDITABLE` (409).
   */
  update(ref: string, definition: ToolDefinition): Promise<Tool> {
    return this.#client.request('PUT', toolPath(ref), { body: definition });
  }

  /** Deletes an HTTP tool and its versions (the record of its calls stays). */
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', toolPath(ref));
  }

  /** One page of the tool's versions, newest first. */
  versions(ref: string, page: PageOptions = {}): Promise<Page<ToolVersionSummary>> {
    return this.#client.request('GET', `${toolPath(ref)}/versions`, { query: { ...page } });
  }

  /** Every version of the tool, newest first. */
  versionsAll(
    ref: string,
    options: Omit<PageOptions, 'cursor'> = {},
  ): AsyncIterable<ToolVersionSummary> {
    return paginate((cursor) => this.versions(ref, { ...options, ...cursor }));
  }

  /**
   * Approves the definition an MCP server changed or added (the tool's `pending`), by the
   * `pending.hash` you reviewed: it becomes a new version, pinned and served. Rejects with
   * `TOOL_DEFINITION_CHANGED` (409) when the server changed it again since, and with
   * `TOOL_NOT_HELD` (409) when nothing waits.
   */
  approveDefinition(ref: string, hash: string): Promise<Tool> {
    return this.#client.request('POST', `${toolPath(ref)}/approve`, { body: { hash } });
  }

  /**
   * Calls the tool. Resolves to the call's record and its result (MCP's content format),
   * also when the tool reports a failure (`result.is_error`) or its source failed
   * (`call.status` `failed`, `call.error` says why). A call a policy makes wait for an
   * approval resolves with `call.status` `awaiting_approval` and a null result, once
   * `waitMs` has passed without a decision: follow it with `toolCalls.get`. A call that is
   * refused rejects: `TOOL_CALL_DENIED`, `TOOL_INVALID_ARGUMENTS`, `TOOL_RATE_LIMITED`…
   */
  invoke(
    ref: string,
    args: Record<string, unknown> = {},
    options: InvokeToolOptions = {},
  ): Promise<ToolInvocation> {
    const { sessionId, waitMs, timeoutMs, signal } = options;
    return this.#client.request('POST', `${toolPath(ref)}/invoke`, {
      body: {
        arguments: args,
        ...(sessionId !== undefined ? { session_id: sessionId } : {}),
        ...(waitMs !== undefined ? { wait_ms: waitMs } : {}),
      },
      timeoutMs: timeoutMs ?? this.#client.timeoutMs + (waitMs ?? 0),
      signal,
    });
  }
}

/**
 * `Orchestra.toolPolicies`: who may call which tools (reading: any role; changing: admin).
 * `ref` is the policy's name or id (`tpol_…`); one that does not exist rejects with
 * `TOOL_POLICY_NOT_FOUND` (404). Deny wins over allow; a destructive tool takes an allow.
 */
export class ToolPoliciesApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  list(options: PageOptions = {}): Promise<Page<ToolPolicy>> {
    return this.#client.request('GET', '/v1/tool-policies', { query: { ...options } });
  }
  listAll(options: Omit<PageOptions, 'cursor'> = {}): AsyncIterable<ToolPolicy> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }
  get(ref: string): Promise<ToolPolicy> {
    return this.#client.request('GET', policyPath(ref));
  }
  /** `TOOL_POLICY_ALREADY_EXISTS` (409) when the name is taken. */
  create(input: CreateToolPolicyInput): Promise<ToolPolicy> {
    return this.#client.request('POST', '/v1/tool-policies', { body: input });
  }
  /** Replaces the whole policy; it applies to the next call. */
  update(ref: string, definition: ToolPolicyDefinition): Promise<ToolPolicy> {
    return this.#client.request('PUT', policyPath(ref), { body: definition });
  }
  async delete(ref: string): Promise<void> {
    await this.#client.request('DELETE', policyPath(ref));
  }
}

/**
 * `Orchestra.toolCalls`: the audited record of every tool call, newest first (any role).
 * Live, the tenant's `tool-calls` topic carries each call as it waits, runs and ends.
 */
export class ToolCallsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  list(options: ListToolCallsOptions = {}): Promise<Page<ToolCall>> {
    return this.#client.request('GET', '/v1/tool-calls', { query: { ...options } });
  }
  listAll(options: Omit<ListToolCallsOptions, 'cursor'> = {}): AsyncIterable<ToolCall> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }
  /** `TOOL_CALL_NOT_FOUND` (404) when there is no such call in the tenant. */
  get(id: string): Promise<ToolCall> {
    return this.#client.request('GET', callPath(id));
  }
}

/**
 * `Orchestra.approvals`: tool calls that a policy makes wait for an operator's decision
 * (admin or operator). An approval that does not exist rejects with
 * `TOOL_APPROVAL_NOT_FOUND` (404); one decided already or expired, with
 * `TOOL_APPROVAL_NOT_PENDING` (409).
 */
export class ToolApprovalsApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }
  /** One page of approvals, newest first. */
  list(options: ListToolApprovalsOptions = {}): Promise<Page<ToolApproval>> {
    return this.#client.request('GET', '/v1/tool-approvals', { query: { ...options } });
  }
  listAll(options: Omit<ListToolApprovalsOptions, 'cursor'> = {}): AsyncIterable<ToolApproval> {
    return paginate((cursor) => this.list({ ...options, ...cursor }));
  }
  /** The approval, with the exact arguments the call will run with and their hash. */
  get(id: string): Promise<ToolApproval> {
    return this.#client.request('GET', approvalPath(id));
  }
  /**
   * Approves the call for the arguments you reviewed, named by their `arguments_hash`
   * (`TOOL_APPROVAL_ARGUMENTS_MISMATCH`, 409, when they differ). The call runs now;
   * resolves once it has run, with its record and result.
   */
  approve(id: string, argumentsHash: string, reason?: string): Promise<ToolApprovalDecision> {
    return this.#client.request('POST', `${approvalPath(id)}/approve`, {
      body: { arguments_hash: argumentsHash, ...(reason !== undefined ? { reason } : {}) },
      // The call runs before the answer: give it the longest a tool may take.
      timeoutMs: Math.max(this.#client.timeoutMs, APPROVE_TIMEOUT_MS),
    });
  }
  /** Rejects the call: it ends `rejected` without running. */
  reject(id: string, reason?: string): Promise<ToolApprovalDecision> {
    return this.#client.request('POST', `${approvalPath(id)}/reject`, {
      body: reason !== undefined ? { reason } : {},
    });
  }
}

/** How long `approvals.approve` waits for the call it starts: a tool's longest timeout. */
const APPROVE_TIMEOUT_MS = 600_000;
