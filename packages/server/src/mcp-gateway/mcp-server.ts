import {
  type CallToolResult,
  type CreateMessageResult,
  ProtocolError,
  ProtocolErrorCode,
  Server,
  type ServerContext,
} from '@modelcontextprotocol/server';
import type { Logger } from 'pino';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import {
  type GatewayTool,
  type GatewayView,
  type McpGatewayBackend,
  type ToolExposure,
  UnknownToolError,
} from './backend.ts';
import { searchTools } from './search.ts';

/** The meta-tool that finds tools by what they do. */
export const SEARCH_TOOL = 'search_tools';
/** The meta-tool that calls a tool by name, for clients that list only the meta-tools. */
export const CALL_TOOL = 'call_tool';
export const SEARCH_DEFAULT_LIMIT = 10;
export const SEARCH_MAX_LIMIT = 50;

const SEARCH_TOOL_DEFINITION: GatewayTool = {
  name: SEARCH_TOOL,
  title: 'Search tools',
  description:
    'Finds the tools that fit a task, ranked by how well their name and description match the query. Returns each match with its name, description and input schema; call it by name (or through call_tool).',
  inputSchema: {
    type: 'object',
    properties: {
      query: { type: 'string', minLength: 1, description: 'What the tool should do, in words' },
      limit: {
        type: 'integer',
        minimum: 1,
        maximum: SEARCH_MAX_LIMIT,
        description: `How many tools to return (default ${SEARCH_DEFAULT_LIMIT})`,
      },
    },
    required: ['query'],
  },
  annotations: { readOnlyHint: true, openWorldHint: false },
};

const CALL_TOOL_DEFINITION: GatewayTool = {
  name: CALL_TOOL,
  title: 'Call a tool',
  description: `Calls any tool by name, such as one that ${SEARCH_TOOL} found, with its arguments.`,
  inputSchema: {
    type: 'object',
    properties: {
      name: { type: 'string', minLength: 1, description: 'The tool name' },
      arguments: { type: 'object', description: "The tool's arguments, per its input schema" },
    },
    required: ['name'],
  },
};

/** What one MCP server instance serves: a principal's view of the backend. */
export interface GatewayServerContext {
  backend: McpGatewayBackend;
  view: string | undefined;
  exposure: ToolExposure;
  instructions: string | undefined;
  /** The principal of the request being served (a session's is refreshed on each request). */
  principal: () => Principal;
  /** What the backend said of the view for the request being served. */
  described: () => GatewayView | undefined;
  version: string;
  log: Logger;
  /** `stateful` (2025-11-25, a session): the server may send requests to the client. */
  generation: 'stateful' | 'stateless';
}

function errorResult(text: string): CallToolResult {
  return { content: [{ type: 'text', text }], isError: true };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Builds an MCP server (SDK 2.x, which serves both protocol generations) whose every
 * handler asks the backend, adding the meta-tools and mapping errors per the spec.
 */
export function createGatewayServer(context: GatewayServerContext): Server {
  const { backend, view } = context;
  // Updates reach a client on its session's event stream: the stateless generation has none.
  const subscribable = context.generation === 'stateful' && backend.subscribeResource !== undefined;
  const listChanged = context.generation === 'stateful' && backend.onToolsChanged !== undefined;
  const server = new Server(
    { name: view === undefined ? 'orchestra' : `orchestra/${view}`, version: context.version },
    {
      capabilities: {
        tools: { listChanged },
        resources: { subscribe: subscribable },
        prompts: {},
        logging: {},
        completions: {},
      },
      ...(context.instructions !== undefined ? { instructions: context.instructions } : {}),
    },
  );

  /** The requests to the client that this exchange can carry (see `ToolCallOptions`). */
  const clientRequests = (ctx: ServerContext) => {
    if (context.generation !== 'stateful') return {};
    const capabilities = server.getClientCapabilities() ?? {};
    // On the call's own event stream: the standalone GET stream may not be open (yet), and
    // a request sent on none is lost.
    const related = { relatedRequestId: ctx.mcpReq.id };
    return {
      ...(capabilities.elicitation !== undefined
        ? {
            elicit: (params: Parameters<typeof ctx.mcpReq.elicitInput>[0]) =>
              server.elicitInput(params, related),
          }
        : {}),
      ...(capabilities.sampling !== undefined
        ? {
            createMessage: async (params: Parameters<typeof ctx.mcpReq.requestSampling>[0]) =>
              (await server.createMessage(params, related)) as CreateMessageResult,
          }
        : {}),
    };
  };

  const callBackendTool = async (
    name: string,
    args: Record<string, unknown>,
    ctx: ServerContext,
    progressToken: string | number | undefined,
  ): Promise<CallToolResult> => {
    const described = context.described();
    try {
      return await backend.callTool(context.principal(), view, name, args, {
        signal: ctx.mcpReq.signal,
        ...(progressToken !== undefined
          ? {
              progress: (p) => {
                ctx.mcpReq
                  .notify({ method: 'notifications/progress', params: { progressToken, ...p } })
                  .catch(() => {});
              },
            }
          : {}),
        log: (level, data, logger) => {
          ctx.mcpReq.log(level, data, logger).catch(() => {});
        },
        ...clientRequests(ctx),
        ...(ctx.sessionId !== undefined ? { mcpSessionId: ctx.sessionId } : {}),
        ...(described !== undefined ? { described } : {}),
      });
    } catch (err) {
      // A refusal (policy, validation) is the call's outcome, which the model should see;
      // an unknown tool or view is a protocol error.
      if (err instanceof ApiError && err.status < 500 && err.code !== 'MCP_VIEW_NOT_FOUND') {
        return errorResult(`${err.code}: ${err.message}`);
      }
      throw toProtocolError(err, context.log);
    }
  };

  const search = async (args: Record<string, unknown>): Promise<CallToolResult> => {
    const { query, limit = SEARCH_DEFAULT_LIMIT } = args;
    if (typeof query !== 'string' || query.trim() === '') {
      return errorResult('query: must be a non-empty string');
    }
    if (
      typeof limit !== 'number' ||
      !Number.isInteger(limit) ||
      limit < 1 ||
      limit > SEARCH_MAX_LIMIT
    ) {
      return errorResult(`limit: must be an integer from 1 to ${SEARCH_MAX_LIMIT}`);
    }
    const tools = await backend.listTools(context.principal(), view);
    const found = searchTools(tools, query, limit).map((tool) => ({
      name: tool.name,
      ...(tool.title !== undefined ? { title: tool.title } : {}),
      description: tool.description ?? '',
      inputSchema: tool.inputSchema,
    }));
    const structured = { tools: found };
    return {
      content: [{ type: 'text', text: JSON.stringify(structured) }],
      structuredContent: structured,
    };
  };

  server.setRequestHandler('tools/list', async () => {
    if (context.exposure === 'search')
      return { tools: [SEARCH_TOOL_DEFINITION, CALL_TOOL_DEFINITION] };
    const tools = await withErrors(() => backend.listTools(context.principal(), view), context.log);
    // The meta-tool's name is reserved: an upstream tool of that name is hidden.
    return {
      tools: [
        ...tools.filter((t) => t.name !== SEARCH_TOOL && t.name !== CALL_TOOL),
        SEARCH_TOOL_DEFINITION,
      ],
    };
  });

  server.setRequestHandler('tools/call', async (request, ctx) => {
    const { name } = request.params;
    const args = request.params.arguments ?? {};
    const progressToken = request.params._meta?.progressToken;
    if (name === SEARCH_TOOL) return withErrors(() => search(args), context.log);
    if (name === CALL_TOOL) {
      const target = args.name;
      const targetArgs = args.arguments ?? {};
      if (typeof target !== 'string' || target === '')
        return errorResult('name: must be a tool name');
      if (!isRecord(targetArgs)) return errorResult('arguments: must be an object');
      if (target === SEARCH_TOOL) return withErrors(() => search(targetArgs), context.log);
      if (target === CALL_TOOL) return errorResult(`${CALL_TOOL} cannot call itself`);
      return callBackendTool(target, targetArgs, ctx, progressToken);
    }
    return callBackendTool(name, args, ctx, progressToken);
  });

  server.setRequestHandler('resources/list', async () => ({
    resources: await withErrors(
      () => backend.listResources(context.principal(), view),
      context.log,
    ),
  }));
  server.setRequestHandler('resources/templates/list', async () => ({
    resourceTemplates:
      (await withErrors(
        async () => backend.listResourceTemplates?.(context.principal(), view),
        context.log,
      )) ?? [],
  }));
  server.setRequestHandler('resources/read', async (request, ctx) =>
    withErrors(
      () =>
        backend.readResource(context.principal(), view, request.params.uri, {
          signal: ctx.mcpReq.signal,
        }),
      context.log,
    ),
  );
  const closers: (() => void)[] = [];
  if (subscribable) {
    const subscriptions = new Map<string, () => void>();
    server.setRequestHandler('resources/subscribe', async (request) => {
      const { uri } = request.params;
      if (subscriptions.has(uri)) return {};
      const unsubscribe = await withErrors(
        async () =>
          (await backend.subscribeResource?.(context.principal(), view, uri, () => {
            server.sendResourceUpdated({ uri }).catch(() => {});
          })) ?? (() => {}),
        context.log,
      );
      subscriptions.set(uri, unsubscribe);
      return {};
    });
    server.setRequestHandler('resources/unsubscribe', async (request) => {
      subscriptions.get(request.params.uri)?.();
      subscriptions.delete(request.params.uri);
      return {};
    });
    closers.push(() => {
      for (const unsubscribe of subscriptions.values()) unsubscribe();
      subscriptions.clear();
    });
  }
  if (listChanged) {
    closers.push(
      backend.onToolsChanged?.(context.principal(), () => {
        // Before `initialize` completes, or after the client left, there is nobody to tell.
        server.sendToolListChanged().catch(() => {});
      }) ?? (() => {}),
    );
  }
  server.onclose = () => {
    for (const close of closers.splice(0)) close();
  };
  server.setRequestHandler('prompts/list', async () => ({
    prompts: await withErrors(() => backend.listPrompts(context.principal(), view), context.log),
  }));
  server.setRequestHandler('prompts/get', async (request, ctx) =>
    withErrors(
      () =>
        backend.getPrompt(
          context.principal(),
          view,
          request.params.name,
          request.params.arguments ?? {},
          {
            signal: ctx.mcpReq.signal,
          },
        ),
      context.log,
    ),
  );
  server.setRequestHandler('completion/complete', async (request) => {
    const complete = backend.complete;
    if (complete === undefined) return { completion: { values: [], total: 0, hasMore: false } };
    return withErrors(
      () => complete.call(backend, context.principal(), view, request.params),
      context.log,
    );
  });
  return server;
}

async function withErrors<T>(run: () => Promise<T>, log: Logger): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw toProtocolError(err, log);
  }
}

/**
 * Maps what the backend threw to the JSON-RPC error the client gets: an unknown name is
 * Invalid Params (-32602); a catalogued error keeps its code and message in `data`;
 * anything else is logged and becomes an Internal Error without details.
 */
function toProtocolError(err: unknown, log: Logger): ProtocolError {
  if (err instanceof ProtocolError) return err;
  if (err instanceof UnknownToolError)
    return new ProtocolError(ProtocolErrorCode.InvalidParams, err.message);
  if (err instanceof ApiError) {
    const code =
      err.status < 500 ? ProtocolErrorCode.InvalidParams : ProtocolErrorCode.InternalError;
    return new ProtocolError(code, err.message, {
      code: err.code,
      ...(err.details ? { details: err.details } : {}),
    });
  }
  log.error({ err }, 'MCP gateway backend failed');
  return new ProtocolError(ProtocolErrorCode.InternalError, 'Internal error');
}
