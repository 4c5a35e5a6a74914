import type {
  CallToolResult,
  CompleteRequestParams,
  CompleteResult,
  CreateMessageRequest,
  CreateMessageResult,
  ElicitRequest,
  ElicitResult,
  GetPromptResult,
  ListResourceTemplatesResult,
  LoggingLevel,
  Prompt,
  ReadResourceResult,
  Resource,
  Tool,
} from '@modelcontextprotocol/server';
import type { Principal } from '../platform/auth.ts';

/** A resource template as MCP lists it (`uriTemplate`, name, description…). */
export type GatewayResourceTemplate = ListResourceTemplatesResult['resourceTemplates'][number];

/** A tool as the gateway lists it: the MCP `Tool` shape (name, description, schemas…). */
export type GatewayTool = Tool;

/** How a view exposes its tools (see docs/mcp.md, "Tool search"). */
export type ToolExposure = 'all' | 'search';

/** What the gateway needs to know of a view before it serves it. */
export interface GatewayView {
  /** `'all'` (default): tools/list lists every tool; `'search'`: only the meta-tools. */
  toolExposure?: ToolExposure;
  /** Sent to clients as the server's `instructions` at initialization. */
  instructions?: string;
  /**
   * The backend's own reading of the view, handed back with the calls of the same request
   * (`ToolCallOptions.described`), so that serving a request reads its view once.
   */
  state?: unknown;
}

/** What a tool call may report to the caller while it runs. */
export interface ToolCallOptions {
  /** Aborts when the client cancels the request, disconnects or its session closes. */
  signal: AbortSignal;
  /** Sends a progress notification, when the client asked for them (a progress token). */
  progress?: (p: { progress: number; total?: number; message?: string }) => void;
  /** Sends a log message notification, filtered by the level the client set. */
  log?: (level: LoggingLevel, data: unknown, logger?: string) => void;
  /**
   * Asks the client's user for input (`elicitation/create`), for an upstream server that
   * elicits. Present only when the client declared the `elicitation` capability and speaks
   * the stateful generation (2026-07-28 replaces push requests by input-required results,
   * which the gateway does not relay yet).
   */
  elicit?: (params: ElicitRequest['params']) => Promise<ElicitResult>;
  /** Asks the client's model for a message (`sampling/createMessage`); present as `elicit` is. */
  createMessage?: (params: CreateMessageRequest['params']) => Promise<CreateMessageResult>;
  /** The stateful session the call belongs to (2025-11-25 generation); absent when stateless. */
  mcpSessionId?: string;
  /** What `describeView` answered for the request that carries the call. */
  described?: GatewayView;
}

/**
 * Thrown by `callTool` (or `getPrompt`, `readResource`) for a name the caller cannot see:
 * the gateway answers a JSON-RPC error (-32602, as the MCP spec says for unknown tools)
 * instead of a tool result. Anything else that goes wrong in a call belongs in the result
 * (`isError: true`) so that the model can read it; an `ApiError` thrown by `callTool`
 * becomes such a result too (policy denials, validation failures).
 */
export class UnknownToolError extends Error {
  constructor(kind: 'tool' | 'prompt' | 'resource', name: string) {
    super(`Unknown ${kind}: ${name}`);
    this.name = 'UnknownToolError';
  }
}

/**
 * What the MCP gateway (`/mcp`) serves, for one principal and one view. The gateway speaks
 * the protocol (both generations, sessions, meta-tools, limits); the backend decides what
 * exists and who may use it: it applies the policy, audits calls and reaches upstream MCP
 * servers. It deliberately knows nothing of MCP sessions or transports: each method is
 * called once per MCP request, with the principal that sent it.
 *
 * `view` is the name in `/mcp/{view}`, `undefined` for `/mcp` (everything the principal
 * may use). Every method throws `ApiError('MCP_VIEW_NOT_FOUND')` for an unknown view.
 */
export interface McpGatewayBackend {
  /** Checks that the view exists for the principal and says how to serve it. */
  describeView(principal: Principal, view: string | undefined): Promise<GatewayView>;
  /** Every tool the principal may call through the view. */
  listTools(principal: Principal, view: string | undefined): Promise<GatewayTool[]>;
  /**
   * Calls `listener` when what `listTools` answers the principal's tenant may have changed
   * (a stateful session then tells its client `notifications/tools/list_changed`), until
   * the returned function is called.
   */
  onToolsChanged?(principal: Principal, listener: () => void): () => void;
  /**
   * Calls a tool. Resolves to the MCP result (`isError: true` for a failure the model
   * should see); throws `UnknownToolError` for a tool that does not exist or is hidden.
   */
  callTool(
    principal: Principal,
    view: string | undefined,
    name: string,
    args: Record<string, unknown>,
    options: ToolCallOptions,
  ): Promise<CallToolResult>;
  listResources(principal: Principal, view: string | undefined): Promise<Resource[]>;
  listResourceTemplates?(
    principal: Principal,
    view: string | undefined,
  ): Promise<GatewayResourceTemplate[]>;
  /** Throws `UnknownToolError('resource', uri)` for a resource that does not exist. */
  readResource(
    principal: Principal,
    view: string | undefined,
    uri: string,
    options: { signal: AbortSignal },
  ): Promise<ReadResourceResult>;
  /**
   * Subscribes to changes of a resource (`resources/subscribe`, stateful generation):
   * `onUpdated` is called on each change until the returned function is called (on
   * `resources/unsubscribe`, or when the session closes). Without this method the gateway
   * does not offer subscriptions.
   */
  subscribeResource?(
    principal: Principal,
    view: string | undefined,
    uri: string,
    onUpdated: () => void,
  ): Promise<() => void>;
  listPrompts(principal: Principal, view: string | undefined): Promise<Prompt[]>;
  /** Throws `UnknownToolError('prompt', name)` for a prompt that does not exist. */
  getPrompt(
    principal: Principal,
    view: string | undefined,
    name: string,
    args: Record<string, string>,
    options: { signal: AbortSignal },
  ): Promise<GetPromptResult>;
  /** Argument completion for prompts and resource templates; without it: no suggestions. */
  complete?(
    principal: Principal,
    view: string | undefined,
    params: CompleteRequestParams,
  ): Promise<CompleteResult>;
}
