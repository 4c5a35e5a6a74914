import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CatalogEntry,
  CatalogEntryRef,
  CreateCatalogEntry,
  CreateMcpServer,
  errorResponses,
  InstallCatalogEntry,
  McpPrompt,
  McpResource,
  McpServer,
  McpServerLog,
  McpServerRef,
  UpdateMcpServer,
} from '@orchestra/protocol';
import Type from 'typebox';
import { ADMIN_ROLES, READ_ROLES } from '../platform/auth.ts';
import { principalOf } from '../platform/http.ts';
import { Page, PageQuery, responseBudget } from '../platform/pagination.ts';
import type { McpHub } from './hub.ts';

/** `/v1/mcp/servers` and `/v1/mcp/catalog`: the MCP hub. */
export const mcpRoutes: FastifyPluginAsyncTypebox<{ hub: McpHub }> = async (app, { hub }) => {
  app.addSchema(McpServer);
  app.addSchema(CatalogEntry);
  const server = { params: McpServerRef };

  app.post(
    '/v1/mcp/servers',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'createMcpServer',
        summary: 'Register an MCP server',
        description:
          'A node of the cluster starts (stdio) or connects to (HTTP) it at once; its tools join the registry as `<server>__<tool>`. `GET /v1/mcp/servers/{server}` shows how that went.',
        body: CreateMcpServer,
        response: { 201: Type.Ref('McpServer'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return hub.create(principalOf(request), request.body);
    },
  );

  app.get(
    '/v1/mcp/servers',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'listMcpServers',
        summary: 'List MCP servers with their status',
        querystring: Type.Object(PageQuery, { additionalProperties: false }),
        response: { 200: Page(Type.Ref('McpServer')), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) =>
      hub.list(principalOf(request), { ...request.query, maxBytes: responseBudget(request) }),
  );

  app.get(
    '/v1/mcp/servers/:server',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'getMcpServer',
        summary: 'Get an MCP server: its settings (no env or header values) and status',
        ...server,
        response: { 200: Type.Ref('McpServer'), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => hub.get(principalOf(request), request.params.server),
  );

  app.put(
    '/v1/mcp/servers/:server',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'updateMcpServer',
        summary: 'Replace an MCP server’s settings; it restarts with them',
        ...server,
        body: UpdateMcpServer,
        response: { 200: Type.Ref('McpServer'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => hub.update(principalOf(request), request.params.server, request.body),
  );

  app.delete(
    '/v1/mcp/servers/:server',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'deleteMcpServer',
        summary: 'Remove an MCP server and its tools',
        ...server,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      await hub.delete(principalOf(request), request.params.server);
      reply.status(204);
      return null;
    },
  );

  for (const [action, enabled] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    app.post(
      `/v1/mcp/servers/:server/${action}`,
      {
        schema: {
          tags: ['mcp'],
          operationId: enabled ? 'enableMcpServer' : 'disableMcpServer',
          summary: enabled
            ? 'Enable an MCP server: it starts, and its tools are served again'
            : 'Disable an MCP server: it stops, and its tools are not served',
          ...server,
          response: { 200: Type.Ref('McpServer'), ...errorResponses },
        },
        config: { auth: ADMIN_ROLES },
      },
      async (request) => hub.setEnabled(principalOf(request), request.params.server, enabled),
    );
  }

  app.post(
    '/v1/mcp/servers/:server/restart',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'restartMcpServer',
        summary: 'Restart an MCP server (reconnect, for HTTP) with a fresh backoff',
        ...server,
        response: { 200: Type.Ref('McpServer'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request) => hub.restart(principalOf(request), request.params.server),
  );

  app.get(
    '/v1/mcp/servers/:server/logs',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'getMcpServerLogs',
        summary: 'The last lines of a server’s stderr and of what happened to it',
        ...server,
        response: { 200: McpServerLog, ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => hub.logs(principalOf(request), request.params.server),
  );

  app.get(
    '/v1/mcp/servers/:server/resources',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'listMcpServerResources',
        summary: 'The resources an MCP server lists',
        ...server,
        response: { 200: Type.Object({ items: Type.Array(McpResource) }), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => ({
      items: await hub.resources(principalOf(request), request.params.server),
    }),
  );

  app.get(
    '/v1/mcp/servers/:server/prompts',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'listMcpServerPrompts',
        summary: 'The prompts an MCP server lists',
        ...server,
        response: { 200: Type.Object({ items: Type.Array(McpPrompt) }), ...errorResponses },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => ({ items: await hub.prompts(principalOf(request), request.params.server) }),
  );

  app.get(
    '/v1/mcp/catalog',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'listMcpCatalog',
        summary: 'The catalog of installable MCP servers: built-in entries, then the tenant’s own',
        response: {
          200: Type.Object({ items: Type.Array(Type.Ref('McpCatalogEntry')) }),
          ...errorResponses,
        },
      },
      config: { auth: READ_ROLES },
    },
    async (request) => ({ items: await hub.catalog(principalOf(request)) }),
  );

  app.post(
    '/v1/mcp/catalog',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'createMcpCatalogEntry',
        summary: 'Add an entry to the tenant’s catalog',
        body: CreateCatalogEntry,
        response: { 201: Type.Ref('McpCatalogEntry'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return hub.addCatalogEntry(principalOf(request), request.body);
    },
  );

  app.delete(
    '/v1/mcp/catalog/:entry',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'deleteMcpCatalogEntry',
        summary: 'Remove an entry from the tenant’s catalog (servers installed from it stay)',
        params: CatalogEntryRef,
        response: { 204: Type.Null(), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      await hub.deleteCatalogEntry(principalOf(request), request.params.entry);
      reply.status(204);
      return null;
    },
  );

  app.post(
    '/v1/mcp/catalog/:entry/install',
    {
      schema: {
        tags: ['mcp'],
        operationId: 'installMcpCatalogEntry',
        summary: 'Register an MCP server from a catalog entry',
        description:
          'The config is checked against the entry’s `config_schema` (defaults applied). The server is named after the entry unless `name` is given.',
        params: CatalogEntryRef,
        body: InstallCatalogEntry,
        response: { 201: Type.Ref('McpServer'), ...errorResponses },
      },
      config: { auth: ADMIN_ROLES },
    },
    async (request, reply) => {
      reply.status(201);
      return hub.install(principalOf(request), request.params.entry, request.body);
    },
  );
};
