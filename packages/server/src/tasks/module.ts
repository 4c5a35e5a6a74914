import { defineModule } from '../module.ts';
import { Dispatcher } from './dispatcher.ts';
import { tasksMigrations } from './migrations.ts';
import { taskRoutes } from './routes.ts';
import { TaskRuntime } from './runtime.ts';
import { checkTasksSettings, TASKS_SETTINGS } from './settings.ts';
import { TaskService } from './task-service.ts';

export interface TasksInterface {
  /** What agents' connections call to move their tasks on (accept, complete, fail…). */
  runtime: TaskRuntime;
  dispatcher: Dispatcher;
  tasks: TaskService;
  /** How often leases are checked: several times per agent heartbeat timeout. */
  sweepIntervalMs: number;
}

declare module '../module.ts' {
  interface ModuleInterfaces {
    tasks: TasksInterface;
  }
}

/** Tasks: submit, dispatch to agents, retries, cancellation, leases. */
export const tasksModule = defineModule({
  name: 'tasks',
  needs: ['events', 'templates', 'gateway'],
  // The agents module is built on the runtime; the dispatcher and the task service ask it
  // about connected agents only once everything is built. Sessions likewise.
  // Workspace tools check the instance a task names, and checkpoint it before each attempt.
  later: ['agents', 'sessions', 'workspace-tools'],
  migrations: tasksMigrations,
  tables: ['tasks', 'task_labels'],
  settings: TASKS_SETTINGS,
  checkSettings: checkTasksSettings,
  errors: ['TASK_NOT_FOUND', 'TASK_ALREADY_FINISHED', 'TASK_NOT_RETRYABLE', 'TASK_STATE_CHANGED'],
  topics: [{ name: 'tasks', description: 'tasks.<id>: the events of one task' }],
  jobs: ['dispatch-tick', 'task-sweep'],
  create({ store, bus, log, jobs, settings, need, later }) {
    const { events } = need('events');
    const templates = need('templates');
    const { limits } = need('gateway');
    const agents = later('agents');
    const sessions = later('sessions');
    const workspaces = later('workspace-tools');
    const runtime = new TaskRuntime({
      store,
      events,
      bus,
      templates,
      retryBaseMs: settings.taskRetryBaseMs,
      retryMaxMs: settings.taskRetryMaxMs,
    });
    runtime.leaseClock = (now) => agents().pool.tickLeaseClock(now);
    runtime.expiredLeases = (holders, at) => agents().agents.expiredAmong(holders, at);
    // Leases are checked several times per timeout, so that a dead agent's tasks move on
    // soon after its lease ends.
    const sweepIntervalMs = Math.max(50, Math.min(1_000, settings.agentHeartbeatTimeoutMs / 4));
    const dispatcher = new Dispatcher({
      store,
      events,
      bus,
      templates,
      runtime,
      directory: {
        tenants: () => agents().pool.tenants(),
        targets: (tenantId) => agents().pool.targets(tenantId),
      },
      log,
      limits,
      jobs,
      concurrencyKeyLimit: settings.concurrencyKeyLimit,
      sweepIntervalMs,
      beforeAttempt: (task, tenantId) => workspaces().beforeAttempt(tenantId, task),
    });
    const tasks = new TaskService({
      store,
      events,
      limits,
      templates,
      bus,
      cancelGraceMs: settings.taskCancelGraceMs,
      sessions: {
        strategyFor: (tenantId, sessionId, field) =>
          sessions().strategyFor(tenantId, sessionId, field),
        lock: (trx, tenantId, sessionId) => sessions().lock(trx, tenantId, sessionId),
      },
      agents: { offeredCapabilities: (tenantId) => agents().agents.offeredCapabilities(tenantId) },
      workspaces: {
        checkInstance: (principal, id, field) => workspaces().checkInstance(principal, id, field),
      },
    });
    return { runtime, dispatcher, tasks, sweepIntervalMs };
  },
  start: ({ dispatcher }) => dispatcher.start(),
  stop: ({ dispatcher }) => dispatcher.stop(),
  routes:
    ({ tasks }, { shutdown }) =>
    async (app) => {
      await app.register(taskRoutes, { tasks, shutdown });
    },
});
