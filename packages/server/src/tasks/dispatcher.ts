import type { AssignedTask as WireAssignedTask } from '@orchestra/protocol';
import { type ExpressionBuilder, type SqlBool, sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import { type Balancer, createBalancer, type StrategyName } from '../balancing/strategies.ts';
import type { Bus } from '../bus/bus.ts';
import type { EventLog } from '../events/index.ts';
import type { Job, Jobs } from '../platform/jobs.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import type { Database } from '../store/database.ts';
import { Statement } from '../store/statement.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TemplateService } from '../templates/index.ts';
import { DISPATCH_SUBJECT, type DispatchNotice, type TaskRuntime } from './runtime.ts';
import { emitTaskEvents, stateEvent } from './stream.ts';
import type { TasksTable } from './tables.ts';

/** What an agent receives in `task.assign`. */
/** A task as an agent receives it (`task.assign`); the wire contract's. */
export type AssignedTask = WireAssignedTask;

/** An agent connected to this node, as dispatch sees it. */
export interface DispatchTarget {
  readonly agentId: string;
  readonly capabilities: ReadonlySet<string>;
  readonly maxConcurrency: number;
  readonly weight: number;
  /** Task id → attempt of the tasks it holds; dispatch adds to it, the pool removes. */
  readonly inFlight: Map<string, number>;
  readonly latencyEwmaMs: number | undefined;
  readonly load: { cpu: number; memory: number } | undefined;
  /** Registered, connected and not draining. */
  accepting(): boolean;
  /** Sends the task; the store already says it is assigned to this agent. */
  assign(task: AssignedTask): void;
}

/** The agents connected to this node, by tenant: the agent pool. */
export interface AgentDirectory {
  tenants(): Iterable<string>;
  targets(tenantId: string): readonly DispatchTarget[];
}

/** Most queued tasks read per query while looking for work that fits. */
const PAGE = 200;
/** Extra rows read beyond the free slots, for tasks that turn out not to fit. */
const PAGE_SLACK = 8;
/** Capability sets (lanes) read together in one statement. */
const LANES_PER_QUERY = 16;

const ANY_DUE = new Statement(
  "select 1 from tasks where tenant_id = ? and state = 'queued' " +
    'and (not_before is null or not_before <= ?) limit 1',
);
// Runs for every dispatched task: a fixed statement, not a query built per task. The
// state and attempt it expects make a concurrent cancel or a second claimer change nothing;
// they are checked on the row found by id (see `filterOnly`).
const CLAIM = new Statement(
  "update tasks set state = 'assigned', agent_id = ?, attempt = ?, assigned_at = ?, " +
    'deadline_at = ?, not_before = null, event_seq = 0, updated_at = ? ' +
    "where id = ? and (state = 'queued' and attempt = ?) is true",
);
/**
 * The distinct capability sets (as stored) of the tenant's queued tasks, by a loose scan
 * of `tasks_lane_idx`: one index seek per set, however many tasks share it. Lanes are told
 * apart by their text: the same set in another order is another lane, which costs a seek.
 */
const LANES = new Statement(
  // `order by … limit 1` rather than `min()`: PostgreSQL plans it as one seek even before
  // it has statistics of the table.
  'with recursive lanes(capabilities) as (' +
    "select * from (select capabilities from tasks where tenant_id = ? and state = 'queued' " +
    'order by capabilities limit 1) head ' +
    'union all select (select t.capabilities from tasks t where t.tenant_id = ? ' +
    "and t.state = 'queued' and t.capabilities > lanes.capabilities " +
    'order by t.capabilities limit 1) ' +
    'from lanes where lanes.capabilities is not null) ' +
    'select capabilities from lanes where capabilities is not null',
);
/**
 * The tenant's assigned and running tasks by key (null: no key), for its limit and its keys'
 * limits: one row per key in use, however many tasks run. No `is not null` filter: with it,
 * SQLite would walk every keyed task the tenant ever had.
 */
const ACTIVE = new Statement(
  'select concurrency_key, count(*) as n from tasks ' +
    "where tenant_id = ? and state in ('assigned', 'running') group by concurrency_key",
);
/**
 * A task of a session waits while another of its session is assigned, running or awaiting
 * an approval, or an older one is still queued: tasks of a session run one at a time, in
 * submission order. Two lookups rather than one with `or`, which SQLite would serve from a
 * tenant-wide index.
 */
const SESSION_FREE = sql<SqlBool>`(tasks.session_id is null or (not exists (select 1 from tasks s where s.session_id = tasks.session_id and s.state in ('assigned', 'running', 'awaiting_approval') and s.tenant_id = tasks.tenant_id) and not exists (select 1 from tasks s where s.session_id = tasks.session_id and s.state = 'queued' and s.id < tasks.id and s.tenant_id = tasks.tenant_id)))`;
/** Everything is looked at this often even without a wake-up (another node, a lost message). */
const TICK_MS = 1_000;
/** An agent that rejected a task is not offered it again for this long, if another can take it. */
const REJECT_MEMORY_MS = 30_000;

/**
 * Hands queued tasks to the agents connected to this node. A pass per tenant (tenants do
 * not wait for each other's passes) reads, highest priority first, then oldest, only the
 * tasks an agent could take now: those of the capability sets that an agent with a free
 * slot offers, leaving out in the query those whose concurrency key is at its limit or
 * whose session is busy, so that no number of tasks nobody can take holds back one that
 * somebody can. It claims each task that fits an agent with a conditional update in one
 * transaction, within the tenant's and the concurrency key's limits; only after the commit
 * are the tasks sent. On PostgreSQL an advisory lock per tenant serialises passes across
 * nodes, so that limits hold cluster-wide; SQLite serialises writers anyway.
 */
export class Dispatcher {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #bus: Bus;
  readonly #templates: TemplateService;
  readonly #runtime: TaskRuntime;
  readonly #directory: AgentDirectory;
  readonly #log: Logger;
  readonly #limits: TenantLimitSource;
  readonly #concurrencyKeyLimit: number;
  readonly #sweepIntervalMs: number;
  readonly #beforeAttempt: ((task: AssignedTask, tenantId: string) => Promise<void>) | undefined;
  readonly #balancers = new Map<string, Balancer>();
  readonly #passes = new Map<string, { again: boolean; submitted: boolean; done: Promise<void> }>();
  readonly #rejected = new Map<string, { agents: Set<string>; until: number }>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #unsubscribe: (() => void) | undefined;
  readonly #tick: Job;
  readonly #sweep: Job;
  #stopped = false;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    bus: Bus;
    templates: TemplateService;
    runtime: TaskRuntime;
    directory: AgentDirectory;
    log: Logger;
    /** Each tenant's most tasks assigned or running at once. */
    limits: TenantLimitSource;
    jobs: Jobs;
    concurrencyKeyLimit: number;
    sweepIntervalMs: number;
    /**
     * Runs before an attempt of a task that works in an instance reaches its agent (the
     * checkpoint the user can go back to); it logs its own failures and never rejects.
     */
    beforeAttempt?: (task: AssignedTask, tenantId: string) => Promise<void>;
  }) {
    this.#beforeAttempt = deps.beforeAttempt;
    this.#store = deps.store;
    this.#events = deps.events;
    this.#bus = deps.bus;
    this.#templates = deps.templates;
    this.#runtime = deps.runtime;
    this.#directory = deps.directory;
    this.#log = deps.log;
    this.#limits = deps.limits;
    this.#concurrencyKeyLimit = deps.concurrencyKeyLimit;
    this.#sweepIntervalMs = deps.sweepIntervalMs;
    // A pass for every tenant with agents here now and then, for tasks whose wake-up was
    // lost (a dropped bus message) or that became due (backoff, not_before).
    this.#tick = deps.jobs.job({
      name: 'dispatch-tick',
      intervalMs: TICK_MS,
      run: () => {
        for (const tenantId of this.#directory.tenants()) this.kick(tenantId);
        const now = Date.now();
        for (const [taskId, entry] of this.#rejected) {
          if (entry.until < now) this.#rejected.delete(taskId);
        }
      },
    });
    this.#sweep = deps.jobs.job({
      name: 'task-sweep',
      intervalMs: this.#sweepIntervalMs,
      run: () => this.#runtime.sweep(),
      logFailure: (err) => this.#log.warn({ err }, 'task sweep failed; retrying'),
    });
  }

  start(): void {
    this.#unsubscribe = this.#bus.subscribe(DISPATCH_SUBJECT, (message) => {
      const notice = message as DispatchNotice;
      const delay = notice.at === undefined ? 0 : Date.parse(notice.at) - Date.now();
      if (delay <= 0) this.kick(notice.tenant_id, notice.submitted === true);
      else this.#later(delay, () => this.kick(notice.tenant_id));
    });
    this.#tick.start();
    this.#sweep.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    await Promise.all([this.#tick.stop(), this.#sweep.stop()]);
    await Promise.all([...this.#passes.values()].map((p) => p.done));
  }

  /** Remembers that `agentId` declined `taskId`, to offer it to another agent first. */
  noteRejection(taskId: string, agentId: string): void {
    const entry = this.#rejected.get(taskId) ?? { agents: new Set(), until: 0 };
    entry.agents.add(agentId);
    entry.until = Date.now() + REJECT_MEMORY_MS;
    this.#rejected.set(taskId, entry);
  }

  /**
   * Runs a pass for the tenant soon; passes never overlap, and kicks during one coalesce.
   * `submitted`: a task was just submitted, so the pass starts its transaction at once,
   * without first looking whether anything is due.
   */
  kick(tenantId: string, submitted = false): void {
    if (this.#stopped) return;
    const running = this.#passes.get(tenantId);
    if (running) {
      running.again = true;
      running.submitted ||= submitted;
      return;
    }
    const state = { again: false, submitted, done: Promise.resolve() };
    state.done = (async () => {
      try {
        do {
          state.again = false;
          const fresh = state.submitted;
          state.submitted = false;
          const claimed = await this.#pass(tenantId, fresh);
          // A full pass may have left more behind: go on until one claims nothing.
          if (claimed > 0) state.again = true;
        } while (state.again && !this.#stopped);
      } catch (err) {
        this.#log.warn({ err, tenant_id: tenantId }, 'dispatch pass failed; retrying shortly');
        this.#later(TICK_MS / 4, () => this.kick(tenantId));
      } finally {
        this.#passes.delete(tenantId);
      }
    })();
    this.#passes.set(tenantId, state);
  }

  #later(delayMs: number, action: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      action();
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  #balancer(tenantId: string, strategy: StrategyName): Balancer {
    const key = `${tenantId}\u0000${strategy}`;
    let balancer = this.#balancers.get(key);
    if (balancer === undefined) {
      balancer = createBalancer(strategy);
      this.#balancers.set(key, balancer);
    }
    return balancer;
  }

  /** One pass over the tenant's queue; resolves to how many tasks it assigned. */
  async #pass(tenantId: string, submitted: boolean): Promise<number> {
    const targets = this.#directory.targets(tenantId).filter((t) => t.accepting());
    let free = 0;
    for (const t of targets) free += Math.max(0, t.maxConcurrency - t.inFlight.size);
    if (free === 0) return 0;
    // Most passes on a quiet server find nothing: a lookup is cheaper than a transaction.
    // After a submit there is work, and the transaction must be asked for at once to
    // share the submit's commit (TaskService.create).
    if (!submitted) {
      const due = new Date().toISOString();
      if ((await ANY_DUE.rows(this.#store.db, this.#store.kind, [tenantId, due])).length === 0) {
        return 0;
      }
    }

    const maxConcurrency = (await this.#limits.get(tenantId, 'max_concurrency')).value;
    const claims: { target: DispatchTarget; row: TasksTable }[] = [];
    try {
      await this.#events.transaction(async (trx, emit) => {
        if (this.#store.kind === 'postgres') {
          await sql`select pg_advisory_xact_lock(hashtext(${`dispatch:${tenantId}`}))`.execute(trx);
        }
        const now = new Date();
        const nowIso = now.toISOString();
        const held = await ACTIVE.rows<{ concurrency_key: string | null; n: number | string }>(
          trx,
          this.#store.kind,
          [tenantId],
        );
        let tenantActive = 0;
        const keyActive = new Map<string, number>();
        for (const { concurrency_key: key, n } of held) {
          tenantActive += Number(n); // PostgreSQL's count is a bigint, read as text
          if (key !== null) keyActive.set(key, Number(n));
        }
        if (maxConcurrency > 0 && tenantActive >= maxConcurrency) return;
        const lanes = (
          await LANES.rows<{ capabilities: string }>(trx, this.#store.kind, [tenantId, tenantId])
        ).map((r) => ({ text: r.capabilities, needs: JSON.parse(r.capabilities) as string[] }));
        const claimedSessions = new Set<string>();
        let after: { priority: number; id: string } | undefined;
        while (free > 0) {
          if (maxConcurrency > 0 && tenantActive >= maxConcurrency) break;
          // Only the lanes an agent with a free slot can serve: tasks nobody here can take
          // now are never read, however many wait ahead of the rest.
          const open = lanes.filter((lane) =>
            targets.some(
              (t) =>
                t.inFlight.size < t.maxConcurrency &&
                lane.needs.every((c) => t.capabilities.has(c)),
            ),
          );
          if (open.length === 0) break;
          // Usually every row read fits: read about as many as there are free slots.
          const limit = Math.min(PAGE, free + PAGE_SLACK);
          const rows = await this.#candidates(trx, {
            tenantId,
            lanes: open.map((l) => l.text),
            nowIso,
            keyActive,
            after,
            limit,
          });
          for (const row of rows) {
            if (free === 0) break;
            if (maxConcurrency > 0 && tenantActive >= maxConcurrency) {
              break;
            }
            // The query left out keys at their limit when it ran; claims since may fill more.
            const key = row.concurrency_key;
            const active = key === null ? 0 : (keyActive.get(key) ?? 0);
            if (key !== null && active >= (row.concurrency_limit ?? this.#concurrencyKeyLimit)) {
              continue;
            }
            if (row.session_id !== null && claimedSessions.has(row.session_id)) continue;
            const target = this.#choose(tenantId, row, targets);
            if (target === undefined) continue;
            const deadlineAt = new Date(now.getTime() + row.timeout_ms).toISOString();
            const attempt = row.attempt + 1;
            const claimed = await CLAIM.run(trx, this.#store.kind, [
              target.agentId,
              attempt,
              nowIso,
              deadlineAt,
              nowIso,
              row.id,
              row.attempt,
            ]);
            if (claimed === 0) continue; // cancelled meanwhile
            const updated: TasksTable = {
              ...row,
              state: 'assigned',
              agent_id: target.agentId,
              attempt,
              assigned_at: nowIso,
              deadline_at: deadlineAt,
              not_before: null,
              event_seq: 0,
              updated_at: nowIso,
            };
            await emitTaskEvents(emit, updated, [stateEvent(updated)]);
            target.inFlight.set(row.id, updated.attempt);
            free -= 1;
            tenantActive += 1;
            if (key !== null) keyActive.set(key, active + 1);
            if (row.session_id !== null) claimedSessions.add(row.session_id);
            claims.push({ target, row: updated });
          }
          const last = rows.at(-1);
          if (rows.length < limit || last === undefined) break;
          after = { priority: last.priority, id: last.id };
        }
      });
    } catch (err) {
      // Nothing was assigned: give the slots back.
      for (const { target, row } of claims) target.inFlight.delete(row.id);
      throw err;
    }
    for (const { target, row } of claims) {
      this.#rejected.delete(row.id);
      const task = await this.#assignment(row);
      const before = row.instance_id !== null ? this.#beforeAttempt : undefined;
      if (before === undefined) {
        target.assign(task);
        continue;
      }
      // Not awaited here: a checkpoint of a large workspace must not hold up the tasks
      // assigned after it. The task is the agent's already; it hears of it once it is taken.
      void before(task, row.tenant_id)
        .catch((err: unknown) => {
          this.#log.warn({ err, task_id: row.id }, 'checkpoint before the attempt failed');
        })
        .then(async () => {
          // Meanwhile the attempt may have been cancelled, timed out or taken back: the
          // agent never hears of it then (a cancelled one ends when its grace is over).
          if (await this.#stillAssigned(row.id, task.attempt, target.agentId)) target.assign(task);
        })
        .catch((err: unknown) => {
          // Gone meanwhile: its lease ends and the task is offered again.
          this.#log.warn({ err, task_id: row.id }, 'assignment after the checkpoint failed');
        });
    }
    return claims.length;
  }

  /**
   * The first `limit` due tasks of `lanes` after `after`, highest priority first, then
   * oldest, that neither a concurrency key at its limit nor their session holds back.
   * Each lane is read in the order of `tasks_lane_idx` and the lanes are merged here, so
   * that tasks of other lanes and those the conditions leave out are skipped by the index
   * or inside the store, never read.
   */
  async #candidates(
    trx: Transaction<Database>,
    q: {
      tenantId: string;
      lanes: string[];
      nowIso: string;
      keyActive: ReadonlyMap<string, number>;
      after: { priority: number; id: string } | undefined;
      limit: number;
    },
  ): Promise<TasksTable[]> {
    // The keys that hold tasks, by how many: a task of one is left out when its limit is
    // no more than that.
    const byCount = new Map<number, string[]>();
    for (const [key, n] of q.keyActive) {
      const keys = byCount.get(n);
      if (keys === undefined) byCount.set(n, [key]);
      else keys.push(key);
    }
    const free = (eb: ExpressionBuilder<Database, 'tasks'>) => {
      const conditions = [
        eb.or([eb('not_before', 'is', null), eb('not_before', '<=', q.nowIso)]),
        SESSION_FREE,
      ];
      if (byCount.size > 0) {
        const full = [...byCount].map(([n, keys]) =>
          eb.and([
            this.#oneOf(keys),
            eb(eb.fn.coalesce('concurrency_limit', sql.lit(this.#concurrencyKeyLimit)), '<=', n),
          ]),
        );
        conditions.push(eb.or([eb('concurrency_key', 'is', null), eb.not(eb.or(full))]));
      }
      if (q.after !== undefined) {
        const { priority, id } = q.after;
        conditions.push(
          eb.or([
            eb('priority', '<', priority),
            eb.and([eb('priority', '=', priority), eb('id', '>', id)]),
          ]),
        );
      }
      return eb.and(conditions);
    };
    const lane = (capabilities: string) =>
      trx
        .selectFrom('tasks')
        .selectAll()
        .where('tenant_id', '=', q.tenantId)
        // A literal, as the predicate of the partial index tasks_lane_idx.
        .where('state', '=', sql.lit('queued'))
        .where('capabilities', '=', capabilities)
        .where(free)
        .orderBy('priority', 'desc')
        .orderBy('id', 'asc')
        .limit(q.limit);
    const rows: TasksTable[] = [];
    for (let i = 0; i < q.lanes.length; i += LANES_PER_QUERY) {
      const [first, ...rest] = q.lanes.slice(i, i + LANES_PER_QUERY);
      if (first === undefined) break;
      let query = trx.selectFrom(lane(first).as('lane')).selectAll();
      for (const capabilities of rest) {
        query = query.unionAll(trx.selectFrom(lane(capabilities).as('lane')).selectAll());
      }
      rows.push(...(await query.execute()));
    }
    rows.sort((a, b) => b.priority - a.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return rows.slice(0, q.limit);
  }

  /** `concurrency_key` is one of `keys`, with one parameter however many there are. */
  #oneOf(keys: string[]) {
    return this.#store.kind === 'postgres'
      ? sql<SqlBool>`concurrency_key = any(${keys}::text[])`
      : sql<SqlBool>`concurrency_key in (select value from json_each(${JSON.stringify(keys)}))`;
  }

  /** An agent that can take the task, by the task's strategy; undefined if none can now. */
  #choose(
    tenantId: string,
    row: TasksTable,
    targets: readonly DispatchTarget[],
  ): DispatchTarget | undefined {
    const needs = JSON.parse(row.capabilities) as string[];
    let fit = targets.filter(
      (t) => t.inFlight.size < t.maxConcurrency && needs.every((c) => t.capabilities.has(c)),
    );
    const rejected = this.#rejected.get(row.id);
    if (rejected !== undefined) {
      const others = fit.filter((t) => !rejected.agents.has(t.agentId));
      if (others.length > 0) fit = others;
    }
    if (fit.length === 0) return undefined;
    const byId = new Map(fit.map((t) => [t.agentId, t]));
    const picked = this.#balancer(tenantId, row.strategy as StrategyName).pick(
      fit.map((t) => ({
        id: t.agentId,
        weight: t.weight,
        inFlight: t.inFlight.size,
        maxConcurrency: t.maxConcurrency,
        latencyEwmaMs: t.latencyEwmaMs,
        load: t.load,
      })),
      { key: row.session_id ?? row.concurrency_key ?? undefined },
    );
    return picked === undefined ? undefined : byId.get(picked.id);
  }

  /** Whether attempt `attempt` of a task is still assigned to `agentId`, and not cancelled. */
  async #stillAssigned(taskId: string, attempt: number, agentId: string): Promise<boolean> {
    const row = await this.#store.db
      .selectFrom('tasks')
      .select(['state', 'attempt', 'agent_id', 'cancel_requested_at'])
      .where('id', '=', taskId)
      .executeTakeFirst();
    return (
      row !== undefined &&
      row.state === 'assigned' &&
      row.attempt === attempt &&
      row.agent_id === agentId &&
      row.cancel_requested_at === null
    );
  }

  async #assignment(row: TasksTable): Promise<AssignedTask> {
    let template: AssignedTask['template'] = null;
    if (row.template_id !== null && row.template_name !== null && row.template_version !== null) {
      const spec = await this.#templates
        .versionSpec(row.tenant_id, row.template_id, row.template_version)
        .catch(() => undefined);
      template = {
        id: row.template_id,
        name: row.template_name,
        version: row.template_version,
        config: spec?.config ?? {},
      };
    }
    return {
      id: row.id,
      attempt: row.attempt,
      input: JSON.parse(row.input) as unknown,
      template,
      capabilities: JSON.parse(row.capabilities) as string[],
      priority: row.priority,
      timeout_ms: row.timeout_ms,
      deadline_at: row.deadline_at ?? new Date(Date.now() + row.timeout_ms).toISOString(),
      labels: JSON.parse(row.labels) as Record<string, string>,
      concurrency_key: row.concurrency_key,
      session_id: row.session_id,
      instance_id: row.instance_id,
      created_at: row.created_at,
    };
  }
}
