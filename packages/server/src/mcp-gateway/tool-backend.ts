import type { CallToolResult } from '@modelcontextprotocol/server';
import type { McpView, Tool } from '@orchestra/protocol';
import type { McpHub } from '../mcp/index.ts';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { TOOL_CALL_ROLES, type ToolsInterface } from '../tools/index.ts';
import {
  type GatewayTool,
  type GatewayView,
  type McpGatewayBackend,
  type ToolCallOptions,
  UnknownToolError,
} from './backend.ts';
import type { ViewService } from './view-service.ts';

/** A tool as one view offers it. */
interface Exposed {
  tool: Tool;
  description: string;
  hidden: Record<string, unknown>;
}

/** How long an MCP call that needs an approval may wait for it (the client may cancel sooner). */
const APPROVAL_WAIT_MS = 7 * 24 * 3_600_000;

/** The input schema without the arguments a view sets itself. */
function withoutHidden(
  schema: Record<string, unknown>,
  hidden: Record<string, unknown>,
): Record<string, unknown> {
  const names = Object.keys(hidden);
  if (names.length === 0) return schema;
  const properties = { ...((schema.properties ?? {}) as Record<string, unknown>) };
  for (const name of names) delete properties[name];
  const required = Array.isArray(schema.required)
    ? (schema.required as string[]).filter((r) => !names.includes(r))
    : undefined;
  return { ...schema, properties, ...(required !== undefined ? { required } : {}) };
}

/**
 * What `/mcp` and `/mcp/{view}` serve: the tools of the registry the caller may call (the
 * policy decides), renamed and trimmed by the view; calls go through the executor, so the
 * policy, approvals, audit and limits of `/invoke` apply. Resources and prompts of the MCP
 * servers connected on this node pass through.
 */
export class ToolGatewayBackend implements McpGatewayBackend {
  readonly #tools: ToolsInterface;
  readonly #hub: McpHub;
  readonly #views: ViewService;

  constructor(deps: { tools: ToolsInterface; hub: McpHub; views: ViewService }) {
    this.#tools = deps.tools;
    this.#hub = deps.hub;
    this.#views = deps.views;
  }

  async #view(
    principal: Principal,
    name: string | undefined,
    described?: GatewayView,
  ): Promise<McpView | undefined> {
    if (name === undefined) return undefined;
    // Read by describeView for the same request: not read again.
    const known = described?.state as McpView | undefined;
    if (known !== undefined && known.tenant_id === principal.tenant.id) return known;
    return this.#views.serving(principal.tenant.id, name);
  }

  /** The tools the view offers the principal, by the name it offers them under. */
  async #exposed(
    principal: Principal,
    viewName: string | undefined,
  ): Promise<Map<string, Exposed>> {
    const view = await this.#view(principal, viewName);
    const active = await this.#tools.tools.active(principal.tenant.id);
    const decide = await this.#tools.policies.forCaller({ principal });
    const visible = new Map(active.filter((t) => decide(t).allowed).map((t) => [t.name, t]));
    const exposed = new Map<string, Exposed>();
    if (view === undefined) {
      for (const tool of visible.values())
        exposed.set(tool.name, { tool, description: tool.description, hidden: {} });
      return exposed;
    }
    for (const tool of visible.values()) {
      if (tool.source.type === 'mcp' && view.servers.includes(tool.source.server)) {
        exposed.set(tool.source.tool, { tool, description: tool.description, hidden: {} });
      }
    }
    for (const entry of view.tools) {
      const tool = visible.get(entry.tool);
      if (tool === undefined) continue;
      exposed.set(entry.name ?? entry.tool, {
        tool,
        description: entry.description ?? tool.description,
        hidden: entry.hidden_arguments ?? {},
      });
    }
    return exposed;
  }

  onToolsChanged(principal: Principal, listener: () => void): () => void {
    return this.#tools.changes.listen(principal.tenant.id, listener);
  }

  async describeView(principal: Principal, viewName: string | undefined): Promise<GatewayView> {
    const view = await this.#view(principal, viewName);
    if (view === undefined) return { toolExposure: 'all' };
    return {
      state: view,
      toolExposure: view.tool_exposure,
      ...(view.instructions !== null ? { instructions: view.instructions } : {}),
    };
  }

  async listTools(principal: Principal, view: string | undefined): Promise<GatewayTool[]> {
    const exposed = await this.#exposed(principal, view);
    return [...exposed].map(([name, { tool, description, hidden }]) => ({
      name,
      ...(tool.annotations.title !== undefined ? { title: tool.annotations.title } : {}),
      description,
      inputSchema: withoutHidden(tool.input_schema, hidden) as GatewayTool['inputSchema'],
      ...(tool.output_schema !== null
        ? { outputSchema: tool.output_schema as GatewayTool['outputSchema'] }
        : {}),
      annotations: tool.annotations,
    }));
  }

  /**
   * The registry tool a view offers under `name`, and what the view adds to its calls;
   * undefined when it offers none. Reads only what this one name needs, not the whole list:
   * the executor then checks the tool's state and the policy, as for `/invoke`.
   */
  async #resolve(
    principal: Principal,
    viewName: string | undefined,
    name: string,
    described: GatewayView | undefined,
  ): Promise<{ tool: string; hidden: Record<string, unknown> } | undefined> {
    const view = await this.#view(principal, viewName, described);
    if (view === undefined) return { tool: name, hidden: {} };
    const entry = view.tools.find((t) => (t.name ?? t.tool) === name);
    if (entry !== undefined) return { tool: entry.tool, hidden: entry.hidden_arguments ?? {} };
    // A whole server's tools keep their own names: the first server that has it wins.
    for (const server of view.servers) {
      const tool = `${server}__${name}`;
      if (await this.#tools.tools.exists(principal.tenant.id, tool)) return { tool, hidden: {} };
    }
    return undefined;
  }

  async callTool(
    principal: Principal,
    view: string | undefined,
    name: string,
    args: Record<string, unknown>,
    options: ToolCallOptions,
  ): Promise<CallToolResult> {
    const entry = await this.#resolve(principal, view, name, options.described);
    if (entry === undefined) throw new UnknownToolError('tool', name);
    if (!TOOL_CALL_ROLES.includes(principal.role)) {
      throw new ApiError(
        'PERMISSION_DENIED',
        `A ${principal.role} key may list tools but not call them`,
      );
    }
    let invocation: Awaited<ReturnType<ToolsInterface['executor']['invoke']>>;
    try {
      invocation = await this.#tools.executor.invoke(
        { principal },
        entry.tool,
        { ...args, ...entry.hidden },
        {
          signal: options.signal,
          waitMs: APPROVAL_WAIT_MS,
          ...(options.progress !== undefined ? { onProgress: options.progress } : {}),
        },
      );
    } catch (err) {
      // A tool that does not exist is an unknown name to MCP, not a failed call.
      if (err instanceof ApiError && err.code === 'TOOL_NOT_FOUND') {
        throw new UnknownToolError('tool', name);
      }
      throw err;
    }
    const { call, result } = invocation;
    if (result === null) {
      return {
        content: [
          {
            type: 'text' as const,
            text: `The call ${call.id} is ${call.status.replace('_', ' ')}${call.approval_id ? ` (approval ${call.approval_id})` : ''}.`,
          },
        ],
        isError: true,
      };
    }
    return {
      // Our content items are MCP's; an embedded resource is kept as the upstream sent it.
      content: result.content as CallToolResult['content'],
      ...(result.structured_content !== undefined
        ? { structuredContent: result.structured_content as Record<string, unknown> }
        : {}),
      isError: result.is_error,
    };
  }

  /** The connected servers a view passes resources and prompts through from. */
  async #servers(principal: Principal, viewName: string | undefined) {
    const view = await this.#view(principal, viewName);
    const connected = this.#hub.connected(principal.tenant.id);
    if (view === undefined) return { servers: connected, prefixed: true };
    return {
      servers: new Map([...connected].filter(([name]) => view.servers.includes(name))),
      prefixed: false,
    };
  }

  async listResources(principal: Principal, view: string | undefined) {
    const { servers } = await this.#servers(principal, view);
    const seen = new Set<string>();
    return [...servers.values()].flatMap((upstream) =>
      upstream.resources().filter((r) => !seen.has(r.uri) && seen.add(r.uri)),
    );
  }

  async readResource(
    principal: Principal,
    view: string | undefined,
    uri: string,
    options: { signal: AbortSignal },
  ) {
    const { servers } = await this.#servers(principal, view);
    for (const upstream of servers.values()) {
      if (upstream.resources().some((r) => r.uri === uri)) {
        return upstream.readResource(uri, { signal: options.signal });
      }
    }
    throw new UnknownToolError('resource', uri);
  }

  async listPrompts(principal: Principal, view: string | undefined) {
    const { servers, prefixed } = await this.#servers(principal, view);
    return [...servers].flatMap(([server, upstream]) =>
      upstream.prompts().map((p) => (prefixed ? { ...p, name: `${server}__${p.name}` } : p)),
    );
  }

  async getPrompt(
    principal: Principal,
    view: string | undefined,
    name: string,
    args: Record<string, string>,
    options: { signal: AbortSignal },
  ) {
    const { servers, prefixed } = await this.#servers(principal, view);
    for (const [server, upstream] of servers) {
      const own = prefixed
        ? name.startsWith(`${server}__`)
          ? name.slice(server.length + 2)
          : undefined
        : name;
      if (own !== undefined && upstream.prompts().some((p) => p.name === own)) {
        return upstream.getPrompt(own, args, { signal: options.signal });
      }
    }
    throw new UnknownToolError('prompt', name);
  }
}
