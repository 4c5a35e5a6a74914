import { randomUUID } from 'node:crypto';
import { HOSTED_CAPABILITY, type TaskWaitingForApproval } from '@orchestra/protocol';
import type { Logger } from 'pino';
import type { AgentService, LocalAgent } from '../agents/index.ts';
import type { Bus } from '../bus/bus.ts';
import { CLOSE_CODES } from '../platform/errors.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { CloseCode } from '../platform/ws-connection.ts';
import {
  type AgentNotice,
  type AgentRef,
  type AssignedTask,
  agentSubject,
  DISPATCH_SUBJECT,
  type DispatchNotice,
  type TaskFailure,
  type TaskRuntime,
} from '../tasks/index.ts';

/** How often the runner looks for tenants with hosted templates, besides dispatch notices. */
const DISCOVERY_INTERVAL_MS = 10_000;
/** A tenant found without hosted templates is not asked about again for this long. */
const NEGATIVE_TTL_MS = 5_000;

/** What one run of a hosted agent can do besides thinking: journal, and notice its end. */
export interface RunHandle {
  tenantId: string;
  agentId: string;
  /** Aborted when the task is cancelled, times out, is lost, or the runner stops. */
  signal: AbortSignal;
  /**
   * Appends events to the task's stream and resolves once they are stored durably: what is
   * journaled survives a crash of this process. Rejects with `TaskLostError` when the task
   * is no longer this runner's.
   */
  journal(events: ({ type: string } & Record<string, unknown>)[]): Promise<void>;
}

/** How a run ended: the task's output, why it failed, or the approvals it waits for. */
export type RunOutcome =
  | { output: unknown }
  | { failure: TaskFailure }
  | { suspend: TaskWaitingForApproval };

/** The task went to another runner, or ended, while this one worked on it. */
export class TaskLostError extends Error {}

export interface HostedRunnerSettings {
  instanceId: string;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** Runs at once per tenant on this node. */
  maxRuns: number;
}

export interface HostedRunnerDeps {
  pool: { bind(agent: LocalAgent): void; unbind(agent: LocalAgent): void; kick(t: string): void };
  agents: Pick<AgentService, 'register' | 'heartbeat' | 'setStatus'>;
  runtime: Pick<
    TaskRuntime,
    'accept' | 'appendEvents' | 'complete' | 'fail' | 'suspend' | 'confirmCancelled' | 'reconcile'
  >;
  bus: Bus;
  jobs: Jobs;
  log: Logger;
  /** The tenants with `llm` templates (among `of`, when given). */
  hostedTenants(of?: readonly string[]): Promise<string[]>;
  /** Runs one attempt of a hosted task to its end. */
  run(task: AssignedTask, handle: RunHandle): Promise<RunOutcome>;
  settings: HostedRunnerSettings;
}

/** The agent id of this node's hosted runner: the same in every tenant, stable per node. */
export function hostedAgentId(instanceId: string): string {
  const safe = instanceId.replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 100);
  return `hosted-runner.${safe}`;
}

/**
 * Orchestra's hosted runners on this node: in each tenant with hosted (`llm`) templates, one
 * in-process agent that offers `orchestra:llm` and takes those tasks through the same
 * dispatch, leases, cancellation, retries and timeouts as remote agents. It registers and
 * heartbeats like a connected agent, so `GET /v1/agents` lists it and another node's
 * runner takes its tasks over when this node dies.
 */
export class HostedRunner {
  readonly #deps: HostedRunnerDeps;
  readonly #tenants = new Map<string, TenantRunner>();
  readonly #checkedAt = new Map<string, number>();
  readonly #checking = new Set<string>();
  #discovery: Job | undefined;
  #unsubscribe: (() => void) | undefined;
  #stopped = false;

  constructor(deps: HostedRunnerDeps) {
    this.#deps = deps;
  }

  /** The tenants this node runs hosted agents for. */
  get tenants(): string[] {
    return [...this.#tenants.keys()];
  }

  start(): void {
    // A task submitted in a tenant this node does not serve yet: look at once, not at the
    // next discovery.
    this.#unsubscribe = this.#deps.bus.subscribe(DISPATCH_SUBJECT, (message) => {
      const notice = message as DispatchNotice;
      if (!notice.submitted || this.#tenants.has(notice.tenant_id)) return;
      const checked = this.#checkedAt.get(notice.tenant_id);
      if (checked !== undefined && performance.now() - checked < NEGATIVE_TTL_MS) return;
      void this.#discover([notice.tenant_id]);
    });
    this.#discovery = this.#deps.jobs.job({
      name: 'hosted-runners',
      intervalMs: DISCOVERY_INTERVAL_MS,
      runAtStart: true,
      logFailure: (err) => this.#deps.log.warn({ err }, 'hosted runner discovery failed'),
      run: async () => {
        await this.#discover();
      },
    });
    this.#discovery.start();
  }

  /** Stops every run: each goes back to the queue, for another runner to resume. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    await this.#discovery?.stop();
    await Promise.all([...this.#tenants.values()].map((t) => t.stop()));
    this.#tenants.clear();
  }

  async #discover(of?: string[]): Promise<void> {
    const key = of?.join(',') ?? '*';
    if (this.#checking.has(key)) return;
    this.#checking.add(key);
    try {
      const found = await this.#deps.hostedTenants(of);
      for (const tenantId of of ?? []) this.#checkedAt.set(tenantId, performance.now());
      for (const tenantId of found) {
        if (this.#stopped || this.#tenants.has(tenantId)) continue;
        const runner = new TenantRunner(this.#deps, tenantId);
        this.#tenants.set(tenantId, runner);
        try {
          await runner.start();
        } catch (err) {
          this.#tenants.delete(tenantId);
          throw err;
        }
      }
    } finally {
      this.#checking.delete(key);
    }
  }
}

interface Run {
  attempt: number;
  controller: AbortController;
  /** The last event sequence number of this attempt. */
  seq: number;
  /** Why it was aborted: a cancellation asked for, or the task is no longer this runner's. */
  stop?: 'cancelled' | 'lost' | 'stopping';
  /** Journal writes in order, one after another. */
  writes: Promise<void>;
}

/** The hosted runner of one tenant on this node: an agent of that tenant, in process. */
class TenantRunner implements LocalAgent {
  readonly agentId: string;
  readonly capabilities: ReadonlySet<string> = new Set([HOSTED_CAPABILITY]);
  readonly maxConcurrency: number;
  readonly weight = 1;
  readonly inFlight = new Map<string, number>();
  readonly latencyEwmaMs = undefined;
  readonly load = undefined;
  readonly #deps: HostedRunnerDeps;
  readonly #tenantId: string;
  readonly #runs = new Map<string, Run>();
  #connectionId = randomUUID();
  #registered = false;
  #closed = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(deps: HostedRunnerDeps, tenantId: string) {
    this.#deps = deps;
    this.#tenantId = tenantId;
    this.agentId = hostedAgentId(deps.settings.instanceId);
    this.maxConcurrency = deps.settings.maxRuns;
  }

  ref(): AgentRef {
    return { tenantId: this.#tenantId, agentId: this.agentId };
  }

  accepting(): boolean {
    return this.#registered && !this.#closed;
  }

  async start(): Promise<void> {
    this.#unsubscribe = this.#deps.bus.subscribe(
      agentSubject(this.#tenantId, this.agentId),
      (message) => this.#onNotice(message as AgentNotice),
    );
    await this.#register();
    const { heartbeatIntervalMs } = this.#deps.settings;
    this.#heartbeat = setInterval(() => {
      this.#beat().catch((err: unknown) =>
        this.#deps.log.warn({ err, tenant_id: this.#tenantId }, 'hosted runner heartbeat failed'),
      );
    }, heartbeatIntervalMs);
    this.#heartbeat.unref();
  }

  async #register(): Promise<void> {
    const { agents, runtime, pool, settings, log } = this.#deps;
    this.#connectionId = randomUUID();
    await agents.register(
      this.#tenantId,
      {
        agent_id: this.agentId,
        name: `Hosted runner on ${settings.instanceId}`,
        capabilities: [HOSTED_CAPABILITY],
        max_concurrency: this.maxConcurrency,
        labels: { hosted: 'true' },
      },
      { id: this.#connectionId, nodeId: settings.instanceId, leaseMs: settings.heartbeatTimeoutMs },
    );
    // Tasks the store still gives this runner but that it does not run (a restart of the
    // node) go back to the queue at once, to be resumed from their journal.
    const held = [...this.inFlight].map(([task_id, attempt]) => ({ task_id, attempt }));
    await runtime.reconcile(this.ref(), held);
    if (this.#closed) return;
    this.#registered = true;
    pool.bind(this);
    log.info({ tenant_id: this.#tenantId, agent_id: this.agentId }, 'hosted runner registered');
    pool.kick(this.#tenantId);
  }

  async #beat(): Promise<void> {
    if (this.#closed) return;
    const { agents, settings } = this.#deps;
    const held = await agents.heartbeat(
      this.#tenantId,
      this.agentId,
      this.#connectionId,
      { in_flight: this.inFlight.size },
      settings.heartbeatTimeoutMs,
    );
    // The lease ran out (the node stalled) and the agent was marked offline: register again.
    if (!held && !this.#closed) {
      this.#registered = false;
      this.#deps.pool.unbind(this);
      await this.#register();
    }
  }

  assign(task: AssignedTask): void {
    this.inFlight.set(task.id, task.attempt);
    const run: Run = {
      attempt: task.attempt,
      controller: new AbortController(),
      seq: 0,
      writes: Promise.resolve(),
    };
    this.#runs.set(task.id, run);
    this.#execute(task, run).catch((err: unknown) => {
      this.#deps.log.error({ err, task_id: task.id }, 'hosted run failed unexpectedly');
    });
  }

  async #execute(task: AssignedTask, run: Run): Promise<void> {
    const { runtime, log } = this.#deps;
    const ref = this.ref();
    try {
      if (!(await runtime.accept(ref, task.id, task.attempt))) return;
      let outcome: RunOutcome;
      try {
        outcome = await this.#deps.run(task, {
          tenantId: this.#tenantId,
          agentId: this.agentId,
          signal: run.controller.signal,
          journal: (events) => this.#journal(task.id, run, events),
        });
      } catch (err) {
        if (err instanceof TaskLostError || run.stop === 'lost') return;
        if (run.stop === undefined) throw err;
        outcome = { failure: { message: 'stopped', retryable: true } };
      }
      await run.writes;
      if (run.stop === 'lost') return;
      if (run.stop === 'cancelled') {
        await runtime.confirmCancelled(ref, task.id, task.attempt);
      } else if (run.stop === 'stopping') {
        await runtime.fail(ref, task.id, task.attempt, {
          code: 'RUNNER_STOPPED',
          message: 'the hosted runner’s node stopped; another runner resumes the task',
          retryable: true,
        });
      } else if ('output' in outcome) {
        await runtime.complete(ref, task.id, task.attempt, outcome.output);
      } else if ('suspend' in outcome) {
        await runtime.suspend(ref, task.id, task.attempt, outcome.suspend);
      } else {
        await runtime.fail(ref, task.id, task.attempt, outcome.failure);
      }
    } catch (err) {
      log.error({ err, task_id: task.id }, 'hosted run could not report its end');
    } finally {
      if (this.#runs.get(task.id) === run) this.#runs.delete(task.id);
      if (this.inFlight.get(task.id) === task.attempt) this.inFlight.delete(task.id);
      this.#deps.pool.kick(this.#tenantId);
    }
  }

  #journal(
    taskId: string,
    run: Run,
    events: ({ type: string } & Record<string, unknown>)[],
  ): Promise<void> {
    const write = run.writes.then(async () => {
      if (run.stop === 'lost') throw new TaskLostError(`task ${taskId} is no longer this runner's`);
      const items = events.map((event) => {
        run.seq += 1;
        return { task_id: taskId, attempt: run.attempt, seq: run.seq, event };
      });
      const notOwned = await this.#deps.runtime.appendEvents(this.ref(), items);
      if (notOwned.has(taskId)) {
        run.stop = 'lost';
        run.controller.abort(new TaskLostError(`task ${taskId} is no longer this runner's`));
        throw new TaskLostError(`task ${taskId} is no longer this runner's`);
      }
    });
    // The chain goes on after a failed write; the caller sees the failure.
    run.writes = write.catch(() => {});
    return write;
  }

  #onNotice(notice: AgentNotice): void {
    switch (notice.op) {
      case 'cancel': {
        const run = this.#runs.get(notice.task_id);
        if (run === undefined || run.attempt !== notice.attempt) return;
        run.stop = notice.reason === 'requested' ? 'cancelled' : 'lost';
        run.controller.abort(new Error(`the task was cancelled (${notice.reason})`));
        return;
      }
      case 'release': {
        const run = this.#runs.get(notice.task_id);
        if (run === undefined || run.attempt !== notice.attempt) return;
        run.stop = 'lost';
        run.controller.abort(new TaskLostError('the task ended without this runner'));
        return;
      }
      case 'drain':
        return;
      case 'replaced':
        if (notice.connection_id === this.#connectionId) this.close(CLOSE_CODES.REPLACED);
        return;
    }
  }

  close(_code: CloseCode): void {
    void this.stop();
  }

  /** Stops its runs (they fail retryably and go back to the queue) and goes offline. */
  async stop(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#unsubscribe?.();
    this.#deps.pool.unbind(this);
    const running = [...this.#runs.values()];
    for (const run of running) {
      run.stop ??= 'stopping';
      run.controller.abort(new Error('the hosted runner is stopping'));
    }
    // Let each run report its end before the agent goes offline.
    const deadline = Date.now() + 5_000;
    while (this.#runs.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    try {
      await this.#deps.agents.setStatus(
        this.#tenantId,
        this.agentId,
        this.#connectionId,
        'offline',
        'the hosted runner stopped',
      );
    } catch (err) {
      this.#deps.log.warn({ err }, 'hosted runner stop not recorded');
    }
  }
}
