import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import { type Balancer, createBalancer, type StrategyName } from '../balancing/strategies.ts';
import type { Bus } from '../bus/bus.ts';
import type { EventLog } from '../events/event-log.ts';
import type { Database } from '../store/database.ts';
import { Statement } from '../store/statement.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TemplateService } from '../templates/template-service.ts';
import { DISPATCH_SUBJECT, type DispatchNotice, type TaskRuntime } from './runtime.ts';
import { emitTaskEvents, stateEvent } from './stream.ts';
import type { TasksTable } from './tables.ts';

/** What an agent receives in `task.assign`. */
export interface AssignedTask {
  id: string;
  attempt: number;
  input: unknown;
  template: { id: string; name: string; version: number; config: Record<string, unknown> } | null;
  capabilities: string[];
  priority: number;
  timeout_ms: number;
  deadline_at: string;
  labels: Record<string, string>;
  concurrency_key: string | null;
  session_id: string | null;
  created_at: string;
}

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

/** Queued tasks read per query, and at most per pass, while looking for work that fits. */
const PAGE = 200;
/** Extra rows read beyond the free slots, for tasks that turn out not to fit. */
const PAGE_SLACK = 8;

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
const MAX_SCAN = 2_000;
/** Everything is looked at this often even without a wake-up (another node, a lost message). */
const TICK_MS = 1_000;
/** An agent that rejected a task is not offered it again for this long, if another can take it. */
const REJECT_MEMORY_MS = 30_000;

/**
 * Hands queued tasks to the agents connected to this node. A pass per tenant reads the
 * queue highest priority first, then oldest, and claims each task that fits an agent with
 * a conditional update in one transaction, within the tenant's and the concurrency key's
 * limits; only after the commit are the tasks sent. On PostgreSQL an advisory lock per
 * tenant serialises passes across nodes, so that limits hold cluster-wide; SQLite
 * serialises writers anyway.
 */
export class Dispatcher {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #bus: Bus;
  readonly #templates: TemplateService;
  readonly #runtime: TaskRuntime;
  readonly #directory: AgentDirectory;
  readonly #log: Logger;
  readonly #tenantMaxConcurrency: number;
  readonly #concurrencyKeyLimit: number;
  readonly #sweepIntervalMs: number;
  readonly #balancers = new Map<string, Balancer>();
  readonly #passes = new Map<string, { again: boolean; submitted: boolean; done: Promise<void> }>();
  readonly #rejected = new Map<string, { agents: Set<string>; until: number }>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #unsubscribe: (() => void) | undefined;
  #tick: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #stopped = false;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    bus: Bus;
    templates: TemplateService;
    runtime: TaskRuntime;
    directory: AgentDirectory;
    log: Logger;
    tenantMaxConcurrency: number;
    concurrencyKeyLimit: number;
    sweepIntervalMs: number;
  }) {
    this.#store = deps.store;
    this.#events = deps.events;
    this.#bus = deps.bus;
    this.#templates = deps.templates;
    this.#runtime = deps.runtime;
    this.#directory = deps.directory;
    this.#log = deps.log;
    this.#tenantMaxConcurrency = deps.tenantMaxConcurrency;
    this.#concurrencyKeyLimit = deps.concurrencyKeyLimit;
    this.#sweepIntervalMs = deps.sweepIntervalMs;
  }

  start(): void {
    this.#unsubscribe = this.#bus.subscribe(DISPATCH_SUBJECT, (message) => {
      const notice = message as DispatchNotice;
      const delay = notice.at === undefined ? 0 : Date.parse(notice.at) - Date.now();
      if (delay <= 0) this.kick(notice.tenant_id, notice.submitted === true);
      else this.#later(delay, () => this.kick(notice.tenant_id));
    });
    this.#tick = setInterval(() => {
      for (const tenantId of this.#directory.tenants()) this.kick(tenantId);
      const now = Date.now();
      for (const [taskId, entry] of this.#rejected) {
        if (entry.until < now) this.#rejected.delete(taskId);
      }
    }, TICK_MS);
    this.#tick.unref();
    this.#sweep = setInterval(() => {
      this.#sweeping ??= this.#runtime
        .sweep()
        .catch((err: unknown) => this.#log.warn({ err }, 'task sweep failed; retrying'))
        .then(() => {
          this.#sweeping = undefined;
        });
    }, this.#sweepIntervalMs);
    this.#sweep.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    clearInterval(this.#tick);
    clearInterval(this.#sweep);
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    await this.#sweeping;
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

    const claims: { target: DispatchTarget; row: TasksTable }[] = [];
    try {
      await this.#events.transaction(async (trx, emit) => {
        if (this.#store.kind === 'postgres') {
          await sql`select pg_advisory_xact_lock(hashtext(${`dispatch:${tenantId}`}))`.execute(trx);
        }
        const now = new Date();
        const nowIso = now.toISOString();
        let tenantActive = 0;
        if (this.#tenantMaxConcurrency > 0) {
          const row = await trx
            .selectFrom('tasks')
            .select(sql<number>`count(*)`.as('n'))
            .where('tenant_id', '=', tenantId)
            .where('state', 'in', ['assigned', 'running'])
            .executeTakeFirstOrThrow();
          tenantActive = Number(row.n);
        }
        const keyActive = new Map<string, number>();
        const claimedSessions = new Set<string>();
        let scanned = 0;
        let after: { priority: number; id: string } | undefined;
        while (free > 0 && scanned < MAX_SCAN) {
          if (this.#tenantMaxConcurrency > 0 && tenantActive >= this.#tenantMaxConcurrency) break;
          // Usually every row read fits: read about as many as there are free slots.
          const limit = Math.min(PAGE, free + PAGE_SLACK);
          let query = trx
            .selectFrom('tasks')
            .selectAll()
            .where('tenant_id', '=', tenantId)
            .where('state', '=', 'queued')
            .where((eb) => eb.or([eb('not_before', 'is', null), eb('not_before', '<=', nowIso)]))
            .orderBy('priority', 'desc')
            .orderBy('id', 'asc')
            .limit(limit);
          if (after !== undefined) {
            const { priority, id } = after;
            query = query.where((eb) =>
              eb.or([
                eb('priority', '<', priority),
                eb.and([eb('priority', '=', priority), eb('id', '>', id)]),
              ]),
            );
          }
          const rows = await query.execute();
          scanned += rows.length;
          for (const row of rows) {
            if (free === 0) break;
            if (this.#tenantMaxConcurrency > 0 && tenantActive >= this.#tenantMaxConcurrency) {
              break;
            }
            const key = row.concurrency_key;
            let active = 0;
            if (key !== null) {
              const known = keyActive.get(key);
              if (known === undefined) {
                const counted = await trx
                  .selectFrom('tasks')
                  .select(sql<number>`count(*)`.as('n'))
                  .where('tenant_id', '=', tenantId)
                  .where('concurrency_key', '=', key)
                  .where('state', 'in', ['assigned', 'running'])
                  .executeTakeFirstOrThrow();
                active = Number(counted.n);
              } else {
                active = known;
              }
              keyActive.set(key, active);
              if (active >= (row.concurrency_limit ?? this.#concurrencyKeyLimit)) continue;
            }
            if (row.session_id !== null && (await this.#sessionBusy(trx, row, claimedSessions))) {
              continue;
            }
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
      target.assign(await this.#assignment(row));
    }
    return claims.length;
  }

  /**
   * Tasks of a session run one at a time, in submission order: this one waits while
   * another of its session is assigned or running, or an older one is still queued.
   */
  async #sessionBusy(
    trx: Transaction<Database>,
    row: TasksTable,
    claimedSessions: Set<string>,
  ): Promise<boolean> {
    if (row.session_id === null) return false;
    if (claimedSessions.has(row.session_id)) return true;
    const blocker = await trx
      .selectFrom('tasks')
      .select('id')
      .where('tenant_id', '=', row.tenant_id)
      .where('session_id', '=', row.session_id)
      .where((eb) =>
        eb.or([
          eb('state', 'in', ['assigned', 'running']),
          eb.and([eb('state', '=', 'queued'), eb('id', '<', row.id)]),
        ]),
      )
      .limit(1)
      .executeTakeFirst();
    return blocker !== undefined;
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
      created_at: row.created_at,
    };
  }
}
