import { defineModule } from '../module.ts';
import { VERSION } from '../version.ts';
import { AgentService } from './agent-service.ts';
import { agentsMigrations } from './migrations.ts';
import { AgentPool } from './pool.ts';
import { agentRoutes } from './routes.ts';
import { AGENTS_SETTINGS, checkAgentsSettings } from './settings.ts';

export interface AgentsInterface {
  agents: AgentService;
  /** This node's agent connections. */
  pool: AgentPool;
  sweepIntervalMs: number;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    agents: AgentsInterface;
  }
}

/** Agents: their records, leases and WebSocket connections (the agent protocol). */
export const agentsModule = defineModule({
  name: 'agents',
  // Tools and sessions: for agents' tool calls (the caller's task, session and its labels).
  needs: ['events', 'tasks', 'gateway', 'tools', 'sessions'],
  migrations: agentsMigrations,
  tables: ['agents', 'agent_lease_clock'],
  settings: AGENTS_SETTINGS,
  checkSettings: checkAgentsSettings,
  errors: [
    'AGENT_NOT_FOUND',
    'AGENT_CONNECTED',
    'AGENT_NOT_CONNECTED',
    'AGENT_NOT_REGISTERED',
    'AGENT_ALREADY_REGISTERED',
    'TASK_NOT_ASSIGNED',
    'TASK_ALREADY_ACCEPTED',
    'AGENT_TOOL_CALLS_LIMITED',
  ],
  topics: [
    {
      name: 'agents',
      description: 'agents: status changes of the tenant’s agents',
      tenantWide: true,
    },
  ],
  jobs: ['agent-lease-sweep'],
  async create({ store, bus, log, metrics, jobs, settings, need }) {
    const { events } = need('events');
    const { runtime, dispatcher, sweepIntervalMs, tasks } = need('tasks');
    const { limits } = need('gateway');
    const { tools, executor, calls, policies } = need('tools');
    const sessions = need('sessions');
    const agents = new AgentService({ store, events, runtime });
    const pool = new AgentPool({
      agents,
      runtime,
      bus,
      log,
      metrics,
      jobs,
      limits,
      tools: {
        list: (tenantId, options) => tools.list(tenantId, options),
        invoke: (caller, ref, args, options) => executor.invoke(caller, ref, args, options),
        mayCall: async (caller) => {
          const decide = await policies.forCaller(caller);
          return (tool) => decide(tool).allowed;
        },
        call: (tenantId, id) => calls.get(tenantId, id),
        task: (principal, id) => tasks.get(principal, id),
        sessionLabels: (tenantId, id) => sessions.labels(tenantId, id),
      },
      settings: {
        heartbeatIntervalMs: settings.agentHeartbeatIntervalMs,
        maxFrameBytes: settings.agentMaxFrameBytes,
        maxToolCalls: settings.agentMaxToolCalls,
        heartbeatTimeoutMs: settings.agentHeartbeatTimeoutMs,
        retentionMs: settings.agentRetentionMs,
        instanceId: settings.instanceId,
        version: VERSION,
      },
    });
    pool.dispatcher = dispatcher;
    // Before any agent can connect or any lease is judged: time in which no node ran (this
    // restart) does not count against the leases agents held.
    await pool.tickLeaseClock(new Date(), 2 * sweepIntervalMs);
    return { agents, pool, sweepIntervalMs };
  },
  start: ({ pool, sweepIntervalMs }) => pool.start(sweepIntervalMs),
  // Agents keep their leases and reconnect to another node (or this one after a restart),
  // their tasks staying theirs.
  stop: ({ pool }) => pool.close(),
  routes:
    ({ agents, pool }, { bus }) =>
    async (app) => {
      await app.register(agentRoutes, { agents, pool, bus });
    },
});
