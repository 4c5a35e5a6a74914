import { defineModule } from '../module.ts';
import { McpHub } from './hub.ts';
import { mcpMigrations } from './migrations.ts';
import { mcpRoutes } from './routes.ts';
import { McpServerRecords } from './server-records.ts';
import { MCP_SETTINGS } from './settings.ts';

declare module '../module.ts' {
  interface ModuleInterfaces {
    mcp: McpHub;
  }
}

/** The MCP hub: MCP servers, run or connected to by one node each; the catalog. */
export const mcpModule = defineModule({
  name: 'mcp',
  needs: ['tools', 'secrets'],
  // Each server runs on the node that holds its claim (through the registry's node lease).
  later: ['registry'],
  migrations: mcpMigrations,
  tables: ['mcp_servers', 'mcp_catalog_entries'],
  settings: MCP_SETTINGS,
  errors: [
    'MCP_SERVER_NOT_FOUND',
    'MCP_SERVER_ALREADY_EXISTS',
    'MCP_SERVER_NOT_RUNNING',
    'MCP_CATALOG_ENTRY_NOT_FOUND',
    'MCP_CATALOG_ENTRY_ALREADY_EXISTS',
  ],
  jobs: ['mcp-servers'],
  create({ store, secrets: box, jobs, bus, metrics, log, settings, need, later }) {
    const registry = later('registry');
    return new McpHub({
      store,
      records: new McpServerRecords({ store, box }),
      tools: need('tools'),
      secrets: need('secrets'),
      claim: () => (key) => registry().nodes.claim(key),
      jobs,
      bus,
      registry: metrics.registry,
      log: log.child({ module: 'mcp' }),
      settings: {
        dataDir: settings.dataDir,
        instanceId: settings.instanceId,
        reconcileMs: settings.mcpReconcileMs,
        sandbox: settings.mcpSandbox,
        healthIntervalMs: settings.mcpHealthIntervalMs,
      },
    });
  },
  start: (hub) => hub.start(),
  stop: (hub) => hub.stop(),
  routes: (hub) => async (app) => {
    await app.register(mcpRoutes, { hub });
  },
});
