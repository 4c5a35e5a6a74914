import type { Tool } from '@orchestra/protocol';
import { defineModule } from '../module.ts';
import type { Principal } from '../platform/auth.ts';
import type { Job } from '../platform/jobs.ts';
import { taskStream } from '../tasks/index.ts';
import type { ToolCallerContext } from '../tools/index.ts';
import { workspaceTools } from '../tools/index.ts';
import { nanoUsd } from '../usage/index.ts';
import { type AgentLoopDeps, type JournalEntry, runHostedAgent } from './agent-loop.ts';
import { ApprovalWaits } from './approval-waits.ts';
import { HostedRunner } from './hosted-runner.ts';
import { RUNNERS_SETTINGS } from './settings.ts';

/** How often an approved call that still runs is looked at by the run that waits for it. */
const APPROVED_CALL_POLL_MS = 250;
/**
 * How often each node looks for tasks whose approvals were all decided but that were not
 * resumed (the deciding node stopped first): the decision itself resumes them at once.
 */
const APPROVAL_SWEEP_MS = 5_000;
/** Most events of a task's stream read to rebuild a run (a run is bounded by its limits). */
const JOURNAL_READ_LIMIT = 1000;

export interface RunnersInterface {
  /** This node's hosted runner; undefined when ORCHESTRA_HOSTED_RUNNER is false. */
  runner: HostedRunner | undefined;
  /** Resumes tasks awaiting approval once decided (on every node, runner or not). */
  approvalWaits: ApprovalWaits;
  approvalSweep: Job;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    runners: RunnersInterface;
  }
}

/** Whether a tool name matches a pattern of an `llm` template (`*`: any run of characters). */
export function matchesToolPattern(pattern: string, name: string): boolean {
  if (!pattern.includes('*')) return pattern === name;
  const parts = pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('.*')}$`).test(name);
}

/**
 * Hosted runners: the agents Orchestra runs itself for `llm` templates, on every node (unless
 * ORCHESTRA_HOSTED_RUNNER is false), taking tasks through the agent pool's dispatch.
 */
export const runnersModule = defineModule({
  name: 'runners',
  needs: [
    'agents',
    'tasks',
    'templates',
    'providers',
    'tools',
    'events',
    'gateway',
    'sessions',
    'usage',
    'workspace-tools',
  ],
  settings: RUNNERS_SETTINGS,
  jobs: ['hosted-runners', 'hosted-approval-waits'],
  create({ settings, bus, jobs, log, need }) {
    const { runtime, tasks } = need('tasks');
    const { tools, policies, executor, approvals } = need('tools');
    const approvalWaits = new ApprovalWaits({
      runtime,
      outcome: (tenantId, approvalId) => approvals.outcome(tenantId, approvalId),
      log: log.child({ module: 'runners' }),
    });
    // Decisions are taken on any node (the approvals API, the expiry sweep): the node that
    // took one resumes the tasks it held, and the sweep catches any it did not.
    approvals.onSettled((tenantId, approvalId) => {
      approvalWaits.settled(tenantId, approvalId).catch((err: unknown) => {
        log.warn(
          { err, tenant_id: tenantId, approval_id: approvalId },
          'resume after approval failed',
        );
      });
    });
    const approvalSweep = jobs.job({
      name: 'hosted-approval-waits',
      intervalMs: APPROVAL_SWEEP_MS,
      runAtStart: true,
      run: () => approvalWaits.sweep(),
    });
    if (!settings.hostedRunner) return { runner: undefined, approvalWaits, approvalSweep };
    const { pool, agents } = need('agents');
    const usage = need('usage');
    /** Who submitted each running task: usage is counted per key. */
    const submitters = new Map<string, string>();
    const templates = need('templates');
    const { models } = need('providers');
    const { events } = need('events');
    const { systemTenantId, limits } = need('gateway');
    const sessions = need('sessions');
    const workspaces = need('workspace-tools');

    const principal = (tenantId: string): Principal => ({
      type: 'jwt',
      tenant: {
        id: tenantId,
        name: tenantId,
        kind: tenantId === systemTenantId ? 'system' : 'standard',
      },
      role: 'agent',
      subject: 'hosted-runner',
      issuer: null,
      expiresAt: null,
    });
    const callerOf = async (
      tenantId: string,
      agentId: string,
      task: Parameters<AgentLoopDeps['tools']>[2],
    ): Promise<ToolCallerContext> => {
      const caller: ToolCallerContext = {
        principal: principal(tenantId),
        agentId,
        taskId: task.id,
        template: task.template?.name,
      };
      if (task.instance_id !== null) caller.instanceId = task.instance_id;
      if (task.session_id !== null) {
        caller.sessionId = task.session_id;
        caller.sessionLabels = await sessions.labels(tenantId, task.session_id);
      }
      return caller;
    };

    const deps: AgentLoopDeps = {
      models,
      async template(tenantId, task) {
        if (task.template === null) return undefined;
        const spec = await templates.versionSpec(tenantId, task.template.id, task.template.version);
        if (spec === undefined || spec.kind !== 'llm' || spec.llm == null) return undefined;
        const check = await templates.outputCheck(
          tenantId,
          task.template.id,
          task.template.version,
        );
        return { llm: spec.llm, outputSchema: spec.output_schema, checkOutput: check };
      },
      async tools(tenantId, agentId, task, patterns) {
        const caller = await callerOf(tenantId, agentId, task);
        const decide = await policies.forCaller(caller);
        const active = await tools.active(tenantId);
        // The workspace tools, for a task that works in an instance.
        if (task.instance_id !== null) active.push(...workspaceTools(tenantId));
        return active.filter(
          (tool: Tool) =>
            patterns.some((p) => matchesToolPattern(p, tool.name)) && decide(tool).allowed,
        );
      },
      async invoke(tenantId, agentId, task, name, args, options) {
        return executor.invoke(await callerOf(tenantId, agentId, task), name, args, options);
      },
      async approvalOutcome(tenantId, approvalId, signal) {
        for (;;) {
          const outcome = await approvals.outcome(tenantId, approvalId);
          if (outcome === 'pending') return undefined;
          if (outcome !== 'running') return outcome;
          // Approved and running on the node that approved it: its result comes soon.
          await new Promise((resolve) => setTimeout(resolve, APPROVED_CALL_POLL_MS));
          signal.throwIfAborted();
        }
      },
      async recordUsage(tenantId, task, call) {
        let submitter = submitters.get(task.id);
        if (submitter === undefined) {
          submitter = (await tasks.get(principal(tenantId), task.id)).created_by;
          if (submitters.size >= 10_000) submitters.clear();
          submitters.set(task.id, submitter);
        }
        await usage.record({
          id: `${task.id}:${call.turn}`,
          tenant_id: tenantId,
          task_id: task.id,
          session_id: task.session_id,
          template: task.template?.name ?? null,
          api_key: submitter,
          provider: call.provider,
          model: call.model,
          input_tokens: call.usage.input_tokens,
          output_tokens: call.usage.output_tokens,
          cached_input_tokens: call.usage.cached_input_tokens,
          cost_nano_usd: nanoUsd(call.cost_usd),
          tool_calls: call.tool_calls.length,
          duration_ms: Math.round(call.duration_ms),
          created_at: new Date().toISOString(),
        });
      },
      async quota(tenantId, tokens) {
        const [monthlyTokens, monthlyCents] = await Promise.all([
          limits.get(tenantId, 'monthly_tokens'),
          limits.get(tenantId, 'monthly_cost_cents'),
        ]);
        if (monthlyTokens.value === 0 && monthlyCents.value === 0) return undefined;
        const now = new Date();
        const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
        const used = await usage.since(tenantId, month.toISOString());
        if (monthlyTokens.value > 0 && used.tokens + tokens > monthlyTokens.value) {
          return {
            limit: 'monthly_tokens',
            value: monthlyTokens.value,
            used: used.tokens + tokens,
          };
        }
        const cents = Math.round(used.costUsd * 100 * 1e6) / 1e6;
        if (monthlyCents.value > 0 && cents >= monthlyCents.value) {
          return { limit: 'monthly_cost_cents', value: monthlyCents.value, used: cents };
        }
        return undefined;
      },
      async checkpoint(tenantId, task, turn, signal) {
        if (task.instance_id === null) return undefined;
        const checkpoint = await workspaces.checkpoint(
          tenantId,
          task.instance_id,
          task.id,
          `after turn ${turn} of task ${task.id}`,
          signal,
        );
        return checkpoint?.id;
      },
      sessionHistory: (tenantId, sessionId, beforeId, limit) =>
        tasks.sessionHistory(tenantId, sessionId, beforeId, limit),
      async journal(tenantId, taskId) {
        const entries: JournalEntry[] = [];
        let after = 0;
        for (;;) {
          const page = await events.read(tenantId, taskStream(taskId), after, JOURNAL_READ_LIMIT);
          if (page === undefined || page.events.length === 0) break;
          for (const e of page.events) {
            after = e.offset;
            if (e.type !== 'task.custom') continue;
            const data = e.data as { name?: unknown; data?: unknown };
            if (typeof data.name !== 'string' || !data.name.startsWith('llm.')) continue;
            entries.push({
              name: data.name,
              data: (data.data ?? {}) as Record<string, unknown>,
              time: e.time,
            });
          }
          if (after >= page.lastOffset) break;
        }
        return entries;
      },
    };

    const runner = new HostedRunner({
      pool,
      agents,
      runtime,
      bus,
      jobs,
      log: log.child({ module: 'runners' }),
      hostedTenants: (of) => templates.hostedTenants(of),
      run: (task, handle) => runHostedAgent(deps, task, handle),
      settings: {
        instanceId: settings.instanceId,
        heartbeatIntervalMs: settings.agentHeartbeatIntervalMs,
        heartbeatTimeoutMs: settings.agentHeartbeatTimeoutMs,
        maxRuns: settings.hostedRunsPerTenant,
      },
    });
    return { runner, approvalWaits, approvalSweep };
  },
  start: ({ runner, approvalSweep }) => {
    approvalSweep.start();
    runner?.start();
  },
  stop: async ({ runner, approvalSweep }) => {
    await approvalSweep.stop();
    await runner?.stop();
  },
});
