import { defineModule } from '../module.ts';
import { mcpGatewayRoutes } from './gateway-routes.ts';
import { mcpGatewayMigrations } from './migrations.ts';
import { MCP_GATEWAY_SETTINGS } from './settings.ts';
import { ToolGatewayBackend } from './tool-backend.ts';
import { viewRoutes } from './view-routes.ts';
import { ViewService } from './view-service.ts';

export interface McpGatewayInterface {
  views: ViewService;
  backend: ToolGatewayBackend;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    'mcp-gateway': McpGatewayInterface;
  }
}

/** Orchestra as an MCP server: `/mcp`, `/mcp/{view}`, and the views at `/v1/mcp/views`. */
export const mcpGatewayModule = defineModule({
  name: 'mcp-gateway',
  needs: ['tools', 'mcp'],
  migrations: mcpGatewayMigrations,
  tables: ['mcp_views'],
  settings: MCP_GATEWAY_SETTINGS,
  errors: ['MCP_VIEW_NOT_FOUND', 'MCP_VIEW_ALREADY_EXISTS'],
  create({ store, need }) {
    const tools = need('tools');
    const views = new ViewService({ store, changes: tools.changes });
    return {
      views,
      backend: new ToolGatewayBackend({ tools, hub: need('mcp'), views }),
    };
  },
  routes:
    ({ views, backend }, { log, version, settings }) =>
    async (app) => {
      await app.register(viewRoutes, { views });
      await app.register(
        mcpGatewayRoutes({
          backend,
          log,
          version,
          maxSessions: settings.mcpMaxSessions,
          maxSessionsPerTenant: settings.mcpMaxSessionsPerTenant,
          sessionIdleMs: settings.mcpSessionIdleMs,
        }),
      );
    },
});
