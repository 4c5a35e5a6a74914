import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ApproveToolCall,
  ApproveToolDefinition,
  CreateTool,
  CreateToolPolicy,
  errorResponses,
  InvokeTool,
  LabelSelectors,
  MAX_VERSION,
  PolicyRef,
  parseLabelSelectors,
  RejectToolCall,
  Tool,
  ToolApproval,
  ToolApprovalDecision,
  ToolApprovalRef,
  ToolApprovalStatus,
  ToolCall,
  ToolCallRef,
  ToolCallStatus,
  ToolInvocation,
  ToolPolicy,
  ToolRef,
  ToolState,
  ToolVersionSummary,
  UpdateTool,
  UpdateToolPolicy,
} from '@orchestra/protocol';
import Type from 'typebox';
import { ADMIN_ROLES, READ_ROLES, type Role, WRITE_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { ApprovalService } from './approval-service.ts';
import type { ToolCallLog } from './call-log.ts';
import type { ToolExecutor } from './executor.ts';
import type { PolicyService } from './policy-service.ts';
import type { ToolService } from './tool-service.ts';

/** Who may call tools (over the API and through /mcp): people who operate, and agents. */
export const TOOL_CALL_ROLES: readonly Role[] = ['admin', 'operator', 'agent'];

/** `/v1/tools`, `/v1/tool-policies` and `/v1/tool-calls`. */
export const toolRoutes: FastifyPluginAsyncTypebox<{
  tools: ToolService;
  policies: PolicyService;
  calls: ToolCallLog;
  approvals: ApprovalService;
  executor: ToolExecutor;
}> = async (app, { tools, policies, calls, approvals, executor }) => {
  app.addSchema(Tool);
  app.addSchema(ToolCall);
  app.addSchema(ToolPolicy);
  app.addSchema(ToolApproval);

  app.get(
    '/v1/tool-approvals',
    {
      schema: {
        tags: ['tools'],
        operationId: 'listToolApprovals',
        summary: 'List tool calls waiting for (or given) an approval, newest first',
        description: 'Live: the `tool-calls` topic carries each call as it awaits, runs and ends.',
        querystring: Type.Object(
          {
            ...PageQuery,
            status: Type.Optional(ToolApprovalStatus),
            tool: Type.Optional(Type.String({ maxLength: 128 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('ToolApproval')), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) =>
      approvals.list(principalOf(request).tenant.id, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/tool-approvals/:approval',
    {
      schema: {
        tags: ['tools'],
        operationId: 'getToolApproval',
        summary: 'Get a tool approval, with the exact arguments and their hash',
        params: ToolApprovalRef,
        response: { 200: Type.Ref('ToolApproval'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => approvals.get(principalOf(request).tenant.id, request.params.approval),
  );

  app.post(
    '/v1/tool-approvals/:approval/approve',
    {
      schema: {
        tags: ['tools'],
        operationId: 'approveToolCall',
        summary: 'Approve a waiting call; it runs now, with the arguments you reviewed',
        description:
          'Send the `arguments_hash` you reviewed. Answers once the call has run, with its record and result.',
        params: ToolApprovalRef,
        body: ApproveToolCall,
        response: { 200: ToolApprovalDecision, ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) =>
      executor.approve(
        principalOf(request),
        request.params.approval,
        request.body.arguments_hash,
        request.body.reason,
      ),
  );

  app.post(
    '/v1/tool-approvals/:approval/reject',
    {
      schema: {
        tags: ['tools'],
        operationId: 'rejectToolCall',
        summary: 'Reject a waiting call',
        params: ToolApprovalRef,
        body: RejectToolCall,
        response: { 200: ToolApprovalDecision, ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => ({
      ...(await approvals.reject(
        principalOf(request),
        request.params.approval,
        request.body.reason,
      )),
      result: null,
    }),
  );

  app.post(
    '/v1/tools',
    {
      schema: {
        tags: ['tools'],
        operationId: 'createTool',
        summary: 'Register an HTTP or agent tool (version 1)',
        description:
          'Tools of MCP servers are registered by their server (`/v1/mcp/servers`), not here.',
        body: CreateTool,
        response: { 201: Type.Ref('Tool'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return tools.create(principalOf(request), request.body);
    },
  );

  app.get(
    '/v1/tools',
    {
      schema: {
        tags: ['tools'],
        operationId: 'listTools',
        summary: 'List tools, at their latest version',
        querystring: Type.Object(
          {
            ...PageQuery,
            name_prefix: Type.Optional(Type.String({ maxLength: 128 })),
            q: Type.Optional(
              Type.String({
                maxLength: 200,
                description: 'Words that must all appear in the name, description or schema.',
              }),
            ),
            source: Type.Optional(Type.Enum(['http', 'mcp', 'agent', 'workspace'])),
            server: Type.Optional(
              Type.String({ maxLength: 100, description: 'Tools of this MCP server.' }),
            ),
            state: Type.Optional(ToolState),
            label: Type.Optional(LabelSelectors),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('Tool')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => {
      const { label, ...rest } = request.query;
      return tools.list(principalOf(request).tenant.id, {
        ...rest,
        labels: parseLabelSelectors(label),
        maxBytes: responseBudget(request),
      });
    },
  );

  app.get(
    '/v1/tools/:tool',
    {
      schema: {
        tags: ['tools'],
        operationId: 'getTool',
        summary: 'Get a tool: its schemas, annotations, source and state',
        params: ToolRef,
        response: { 200: Type.Ref('Tool'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => tools.get(principalOf(request), request.params.tool),
  );

  app.put(
    '/v1/tools/:tool',
    {
      schema: {
        tags: ['tools'],
        operationId: 'updateTool',
        summary: 'Replace an HTTP or agent tool’s definition: creates a new version',
        params: ToolRef,
        body: UpdateTool,
        response: { 200: Type.Ref('Tool'), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request) => tools.update(principalOf(request), request.params.tool, request.body),
  );

  app.delete(
    '/v1/tools/:tool',
    {
      schema: {
        tags: ['tools'],
        operationId: 'deleteTool',
        summary: 'Delete an HTTP or agent tool and its versions (the record of its calls stays)',
        params: ToolRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: WRITE_ROLES },
    },
    async (request, reply) => {
      await tools.delete(principalOf(request), request.params.tool);
      reply.status(204);
      return null;
    },
  );

  app.get(
    '/v1/tools/:tool/versions',
    {
      schema: {
        tags: ['tools'],
        operationId: 'listToolVersions',
        summary: 'List the versions of a tool, newest first',
        params: ToolRef,
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(ToolVersionSummary), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      tools.versions(principalOf(request), request.params.tool, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/tools/:tool/versions/:version',
    {
      schema: {
        tags: ['tools'],
        operationId: 'getToolVersion',
        summary: 'Get a tool at one version',
        params: Type.Object({
          ...ToolRef.properties,
          version: Type.Integer({ minimum: 1, maximum: MAX_VERSION }),
        }),
        response: { 200: Type.Ref('Tool'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => tools.get(principalOf(request), request.params.tool, request.params.version),
  );

  app.post(
    '/v1/tools/:tool/approve',
    {
      schema: {
        tags: ['tools'],
        operationId: 'approveToolDefinition',
        summary: 'Approve the definition an MCP server changed or added',
        description:
          'The definition in `pending` becomes a new version, is pinned, and is served. Send the `pending.hash` you reviewed; if the server changed the tool again since, the approval is refused (409 TOOL_DEFINITION_CHANGED).',
        params: ToolRef,
        body: ApproveToolDefinition,
        response: { 200: Type.Ref('Tool'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => tools.approve(principalOf(request), request.params.tool, request.body.hash),
  );

  app.post(
    '/v1/tools/:tool/invoke',
    {
      schema: {
        tags: ['tools'],
        operationId: 'invokeTool',
        summary: 'Call a tool',
        description:
          'Checks the arguments against the tool’s schema and the tenant’s policies, then calls the source. Answers 200 with the call’s record and its result in MCP’s content format, also when the source failed (the result is then a tool-level error, `is_error`, and `call.error` says why). A refused call answers 4xx and is recorded as `denied`. A call a policy makes wait for an approval answers 202 with the call `awaiting_approval` (after waiting up to `wait_ms` for the decision); `GET /v1/tool-calls/{call}` or the `tool-calls` topic tells how it ends.',
        params: ToolRef,
        body: InvokeTool,
        response: { 200: ToolInvocation, 202: ToolInvocation, ...errorResponses },
      },
      config: { auth: TOOL_CALL_ROLES },
    },
    async (request, reply) => {
      const abort = new AbortController();
      // A caller that goes away cancels the call at its source.
      const onClose = () => {
        if (!request.raw.complete || request.raw.socket?.destroyed) abort.abort();
      };
      request.raw.socket?.once('close', onClose);
      try {
        const invocation = await executor.invoke(
          { principal: principalOf(request), sessionId: request.body.session_id },
          request.params.tool,
          request.body.arguments ?? {},
          { signal: abort.signal, waitMs: request.body.wait_ms },
        );
        if (invocation.call.status === 'awaiting_approval') reply.status(202);
        return invocation;
      } finally {
        request.raw.socket?.off('close', onClose);
      }
    },
  );

  app.get(
    '/v1/tool-calls',
    {
      schema: {
        tags: ['tools'],
        operationId: 'listToolCalls',
        summary: 'List the record of tool calls, newest first',
        description: 'Live: subscribe to the realtime topic `tool-calls`.',
        querystring: Type.Object(
          {
            ...PageQuery,
            tool: Type.Optional(Type.String({ maxLength: 128 })),
            status: Type.Optional(ToolCallStatus),
            credential: Type.Optional(
              Type.String({
                maxLength: 200,
                description: 'API key id, or `jwt:<tenant>:<subject>`.',
              }),
            ),
            agent_id: Type.Optional(Type.String({ maxLength: 128 })),
            task_id: Type.Optional(Type.String({ maxLength: 64 })),
            session_id: Type.Optional(Type.String({ maxLength: 64 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Page(Type.Ref('ToolCall')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      calls.list(principalOf(request).tenant.id, {
        ...request.query,
        maxBytes: responseBudget(request),
      }),
  );

  app.get(
    '/v1/tool-calls/:call',
    {
      schema: {
        tags: ['tools'],
        operationId: 'getToolCall',
        summary: 'Get the record of one tool call',
        params: ToolCallRef,
        response: { 200: Type.Ref('ToolCall'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => calls.get(principalOf(request).tenant.id, request.params.call),
  );

  app.post(
    '/v1/tool-policies',
    {
      schema: {
        tags: ['tools'],
        operationId: 'createToolPolicy',
        summary: 'Create a tool policy',
        description:
          'Deny wins over allow. A tool no policy names may be called unless it is destructive (not read-only and not `destructiveHint: false`), which takes an allow. A change applies at once on the node that made it, and on other nodes as soon as the bus brings them the notice (within 5 s if it is lost).',
        body: CreateToolPolicy,
        response: { 201: Type.Ref('ToolPolicy'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return policies.create(principalOf(request), request.body);
    },
  );

  app.get(
    '/v1/tool-policies',
    {
      schema: {
        tags: ['tools'],
        operationId: 'listToolPolicies',
        summary: 'List tool policies',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('ToolPolicy')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      policies.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/tool-policies/:policy',
    {
      schema: {
        tags: ['tools'],
        operationId: 'getToolPolicy',
        summary: 'Get a tool policy',
        params: PolicyRef,
        response: { 200: Type.Ref('ToolPolicy'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => policies.get(principalOf(request), request.params.policy),
  );

  app.put(
    '/v1/tool-policies/:policy',
    {
      schema: {
        tags: ['tools'],
        operationId: 'updateToolPolicy',
        summary: 'Replace a tool policy',
        params: PolicyRef,
        body: UpdateToolPolicy,
        response: { 200: Type.Ref('ToolPolicy'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => policies.update(principalOf(request), request.params.policy, request.body),
  );

  app.delete(
    '/v1/tool-policies/:policy',
    {
      schema: {
        tags: ['tools'],
        operationId: 'deleteToolPolicy',
        summary: 'Delete a tool policy',
        params: PolicyRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      await policies.delete(principalOf(request), request.params.policy);
      reply.status(204);
      return null;
    },
  );
};
