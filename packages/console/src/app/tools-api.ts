import type {
  CreateToolPolicy,
  Tool,
  ToolApproval,
  ToolApprovalStatus,
  ToolCall,
  ToolCallStatus,
  ToolInvocation,
  ToolPolicy,
  ToolResult,
  ToolState,
  UpdateToolPolicy,
} from '@orchestra/protocol';
import type { Orchestra, Page } from '@orchestra/sdk';

// The tools module's REST API as the console calls it: the SDK has no typed methods for it
// yet, so these go through its public `request` (same credentials and errors); the wire types
// are @orchestra/protocol's.

export { TOOL_CALL_STATUSES, TOOL_STATES } from '@orchestra/protocol/constants';
export type {
  Tool,
  ToolApproval,
  ToolCall,
  ToolCallStatus,
  ToolInvocation,
  ToolPolicy,
  ToolResult,
  ToolState,
};

/** The realtime topic that carries every call of the tenant as it waits, runs and ends. */
export const TOOL_CALLS_TOPIC = 'tool-calls';

/** What deciding an approval answers. */
export interface ToolApprovalDecision {
  approval: ToolApproval;
  call: ToolCall;
  result: ToolResult | null;
}

type PageQuery = { limit?: number; cursor?: string };

const tool = (ref: string) => `/v1/tools/${encodeURIComponent(ref)}`;
const policy = (ref: string) => `/v1/tool-policies/${encodeURIComponent(ref)}`;
const approval = (id: string) => `/v1/tool-approvals/${encodeURIComponent(id)}`;

export function toolsApi(client: Orchestra) {
  return {
    list: (query: PageQuery & { q?: string; source?: 'http' | 'mcp'; state?: ToolState } = {}) =>
      client.request<Page<Tool>>('GET', '/v1/tools', { query: { ...query } }),
    get: (ref: string) => client.request<Tool>('GET', tool(ref)),
    /** Approves the pending definition whose hash the admin reviewed (409 if it changed). */
    approveDefinition: (ref: string, hash: string) =>
      client.request<Tool>('POST', `${tool(ref)}/approve`, { body: { hash } }),
    /** 200 with the result, or 202 with the call `awaiting_approval` and a null result. */
    invoke: (ref: string, args: Record<string, unknown>) =>
      client.request<ToolInvocation>('POST', `${tool(ref)}/invoke`, {
        body: { arguments: args },
      }),
    calls: {
      list: (query: PageQuery & { tool?: string; status?: ToolCallStatus } = {}) =>
        client.request<Page<ToolCall>>('GET', '/v1/tool-calls', { query: { ...query } }),
      get: (id: string) =>
        client.request<ToolCall>('GET', `/v1/tool-calls/${encodeURIComponent(id)}`),
    },
    policies: {
      list: (query: PageQuery = {}) =>
        client.request<Page<ToolPolicy>>('GET', '/v1/tool-policies', { query: { ...query } }),
      get: (ref: string) => client.request<ToolPolicy>('GET', policy(ref)),
      create: (input: CreateToolPolicy) =>
        client.request<ToolPolicy>('POST', '/v1/tool-policies', { body: input }),
      update: (ref: string, input: UpdateToolPolicy) =>
        client.request<ToolPolicy>('PUT', policy(ref), { body: input }),
      delete: (ref: string) => client.request<void>('DELETE', policy(ref)),
    },
    approvals: {
      list: (query: PageQuery & { status?: ToolApprovalStatus } = {}) =>
        client.request<Page<ToolApproval>>('GET', '/v1/tool-approvals', { query: { ...query } }),
      approve: (id: string, argumentsHash: string) =>
        client.request<ToolApprovalDecision>('POST', `${approval(id)}/approve`, {
          body: { arguments_hash: argumentsHash },
        }),
      reject: (id: string, reason?: string) =>
        client.request<ToolApprovalDecision>('POST', `${approval(id)}/reject`, {
          body: reason ? { reason } : {},
        }),
    },
  };
}
