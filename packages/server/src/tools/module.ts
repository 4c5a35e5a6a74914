import { defineModule } from '../module.ts';
import { ApiError } from '../platform/errors.ts';
import type { Job } from '../platform/jobs.ts';
import { ApprovalService } from './approval-service.ts';
import { ToolCallLog } from './call-log.ts';
import { ToolChanges } from './changes.ts';
import { type McpToolCaller, ToolExecutor } from './executor.ts';
import { toolsMigrations } from './migrations.ts';
import { PolicyService } from './policy-service.ts';
import { toolRoutes } from './routes.ts';
import { TOOLS_SETTINGS } from './settings.ts';
import { ToolService } from './tool-service.ts';

/** How often each node expires approvals past their deadline. */
const APPROVAL_SWEEP_MS = 2000;

export interface ToolsInterface {
  tools: ToolService;
  policies: PolicyService;
  /** Tells every node when what a tenant's callers may list changed. */
  changes: ToolChanges;
  calls: ToolCallLog;
  approvals: ApprovalService;
  executor: ToolExecutor;
  /** Expires approvals past their deadline. */
  expiry: Job;
  /** Set by the MCP hub: how calls reach the tools of MCP servers. */
  connectMcp(caller: McpToolCaller): void;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    tools: ToolsInterface;
  }
}

/** The tool registry, tool policies, the executor and the record of every call. */
export const toolsModule = defineModule({
  name: 'tools',
  needs: ['events', 'gateway', 'secrets', 'tasks'],
  // The workspace tools' calls run in instances, which the workspace-tools module reaches.
  later: ['workspace-tools'],
  migrations: toolsMigrations,
  tables: [
    'tools',
    'tool_versions',
    'tool_labels',
    'tool_calls',
    'tool_policies',
    'tool_approvals',
  ],
  settings: TOOLS_SETTINGS,
  errors: [
    'TOOL_NOT_FOUND',
    'TOOL_VERSION_NOT_FOUND',
    'TOOL_CALL_NOT_FOUND',
    'TOOL_POLICY_NOT_FOUND',
    'TOOL_APPROVAL_NOT_FOUND',
    'TOOL_APPROVAL_NOT_PENDING',
    'TOOL_APPROVAL_ARGUMENTS_MISMATCH',
    'TOOL_CALL_REJECTED',
    'TOOL_APPROVAL_EXPIRED',
    'TOOL_ALREADY_EXISTS',
    'TOOL_POLICY_ALREADY_EXISTS',
    'TOOL_NOT_EDITABLE',
    'TOOL_NOT_HELD',
    'TOOL_DEFINITION_CHANGED',
    'TOOL_NOT_AVAILABLE',
    'TOOL_INVALID_ARGUMENTS',
    'TOOL_CALL_DENIED',
    'TOOL_RATE_LIMITED',
    'TOOL_CONCURRENCY_LIMITED',
    'TOOL_TIMEOUT',
    'TOOL_UPSTREAM_UNAVAILABLE',
    'TOOL_UPSTREAM_ERROR',
    'TOOL_RESULT_TOO_LARGE',
    'TOOL_CIRCUIT_OPEN',
    'TOOL_UPSTREAM_BUSY',
  ],
  topics: [
    {
      name: 'tool-calls',
      description: 'tool-calls: the record of every tool call of the tenant, as it ends',
      tenantWide: true,
    },
  ],
  jobs: ['tool-approval-expiry'],
  create({ store, bus, log, metrics, settings, jobs, secrets: box, need, later }) {
    const workspaces = later('workspace-tools');
    const { events } = need('events');
    const secrets = need('secrets');
    const { tasks } = need('tasks');
    const changes = new ToolChanges(bus);
    const tools = new ToolService({ store, changes });
    tools
      .shadowedByBuiltIns()
      .then((shadowed) => {
        for (const tool of shadowed) {
          log.warn(
            { tenant_id: tool.tenant_id, tool: tool.name, tool_id: tool.id },
            'a stored tool has the name of a built-in workspace tool, which is served instead: delete it by its id and create it again under another name',
          );
        }
      })
      .catch((err: unknown) =>
        log.warn({ err }, 'could not look for tools named like built-in ones'),
      );
    const policies = new PolicyService({ store, changes });
    const calls = new ToolCallLog({ store, events });
    const approvals = new ApprovalService({ store, box, calls });
    // Every node sweeps: an expiry is one guarded update, so two nodes never expire one twice.
    const expiry = jobs.job({
      name: 'tool-approval-expiry',
      intervalMs: APPROVAL_SWEEP_MS,
      run: () => approvals.expire(),
    });
    let mcp: McpToolCaller | undefined;
    const executor = new ToolExecutor({
      tools,
      policies,
      log: calls,
      approvals,
      logger: log.child({ module: 'tools' }),
      registry: metrics.registry,
      settings: {
        maxResultBytes: settings.toolResultMaxBytes,
        bulkheadLimit: settings.toolBulkheadLimit,
        bulkheadQueue: settings.toolBulkheadQueue,
        breakerFailures: settings.toolBreakerFailures,
        breakerHalfOpenAfterMs: settings.toolBreakerHalfOpenMs,
      },
      expandSecrets: () => (tenantId, text) => secrets.expand(tenantId, text),
      tasks: () => tasks,
      workspace: () => workspaces().call,
      mcp: () => {
        if (mcp === undefined) {
          return async () => {
            throw new ApiError(
              'TOOL_UPSTREAM_UNAVAILABLE',
              'The MCP hub is not running on this node',
            );
          };
        }
        return mcp;
      },
    });
    return {
      tools,
      policies,
      changes,
      calls,
      approvals,
      executor,
      expiry,
      connectMcp: (caller: McpToolCaller) => {
        mcp = caller;
      },
    };
  },
  start: ({ expiry }) => expiry.start(),
  stop: async ({ expiry, changes }) => {
    changes.close();
    await expiry.stop();
  },
  routes: (self) => async (app) => {
    await app.register(toolRoutes, self);
  },
});
