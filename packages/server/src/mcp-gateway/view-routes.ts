import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CreateMcpView,
  errorResponses,
  McpView,
  McpViewRef,
  UpdateMcpView,
} from '@orchestra/protocol';
import Type from 'typebox';
import { ADMIN_ROLES, READ_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { ViewService } from './view-service.ts';

/** `/v1/mcp/views`: the virtual servers `/mcp/{view}` serves. */
export const viewRoutes: FastifyPluginAsyncTypebox<{ views: ViewService }> = async (
  app,
  { views },
) => {
  app.addSchema(McpView);

  app.post(
    '/v1/mcp/views',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'createMcpView',
        summary: 'Create a view: a virtual MCP server at /mcp/{view} with a chosen set of tools',
        description:
          'Its tools can be renamed, have their description replaced, or have arguments set by the view (hidden from clients). The policy still decides what each caller may see and call.',
        body: CreateMcpView,
        response: { 201: Type.Ref('McpView'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return views.create(principalOf(request), request.body);
    },
  );

  app.get(
    '/v1/mcp/views',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'listMcpViews',
        summary: 'List views',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('McpView')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      views.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/mcp/views/:view',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'getMcpView',
        summary: 'Get a view',
        params: McpViewRef,
        response: { 200: Type.Ref('McpView'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => views.get(principalOf(request).tenant.id, request.params.view),
  );

  app.put(
    '/v1/mcp/views/:view',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'updateMcpView',
        summary: 'Replace a view',
        params: McpViewRef,
        body: UpdateMcpView,
        response: { 200: Type.Ref('McpView'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => views.update(principalOf(request), request.params.view, request.body),
  );

  app.delete(
    '/v1/mcp/views/:view',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'deleteMcpView',
        summary: 'Delete a view',
        params: McpViewRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      await views.delete(principalOf(request), request.params.view);
      reply.status(204);
      return null;
    },
  );
};
