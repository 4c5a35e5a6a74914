import type { TaskState, TaskWaitingForApproval } from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import type { Bus } from '../bus/bus.ts';
import type { Emit, EventLog, NewEvent } from '../events/index.ts';
import type { Database } from '../store/database.ts';
import { filterOnly, Statement } from '../store/statement.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TemplateService } from '../templates/index.ts';
import { emitTaskEvents, stateEvent } from './stream.ts';
import type { TasksTable } from './tables.ts';

/** Which agent speaks: agent ids are unique per tenant. */
export interface AgentRef {
  tenantId: string;
  agentId: string;
}

/** Why the server tells an agent to stop a task. */
export type CancelReason = 'requested' | 'timeout' | 'lease_lost';

/** What reaches the node holding an agent's connection, over the bus. */
export type AgentNotice =
  | { op: 'cancel'; task_id: string; attempt: number; reason: CancelReason; deadline_ms: number }
  | { op: 'release'; task_id: string; attempt: number }
  | { op: 'drain' }
  | { op: 'replaced'; connection_id: string };

/** The bus subject of one agent's notices. */
export function agentSubject(tenantId: string, agentId: string): string {
  return `agent.${tenantId}.${agentId}`;
}

/**
 * Published when a tenant may have tasks to dispatch; `at` when that is only later;
 * `submitted` when a task was just submitted, so that looking is surely worth it.
 */
export const DISPATCH_SUBJECT = 'tasks.dispatch';
export interface DispatchNotice {
  tenant_id: string;
  at?: string;
  submitted?: boolean;
}

/** The answer to a result, failure or cancel confirmation from an agent. */
export interface Ack {
  accepted: boolean;
  /** The task's state afterwards. */
  state?: TaskState;
  /** Why not accepted. */
  reason?: string;
}

export interface AgentTaskEvent {
  task_id: string;
  attempt: number;
  seq: number;
  event: { type: string } & Record<string, unknown>;
}

export interface TaskFailure {
  code?: string | undefined;
  message: string;
  retryable?: boolean | undefined;
  details?: Record<string, unknown> | undefined;
}

export interface ResumedTask {
  task_id: string;
  attempt: number;
  /** The last event sequence number stored; the agent resends what came after. */
  last_seq: number;
  /** A cancellation was requested while the agent was away. */
  cancel_requested: boolean;
}

const ACTIVE: TaskState[] = ['assigned', 'running'];

// An agent's accept and result come for every task: fixed statements, not built per frame.
// Each applies only to the agent's current attempt in the expected state, checked on the
// row found by id (see `filterOnly`).
const START = new Statement(
  "update tasks set state = 'running', started_at = ?, updated_at = ? where id = ? " +
    "and (tenant_id = ? and agent_id = ? and attempt = ? and state = 'assigned') is true " +
    'returning session_id',
);
const SUCCEED = new Statement(
  "update tasks set state = 'succeeded', result = ?, finished_at = ?, " +
    'started_at = coalesce(started_at, ?), updated_at = ? where id = ? ' +
    'and (tenant_id = ? and agent_id = ? and attempt = ? ' +
    "and state in ('assigned', 'running')) is true returning session_id, started_at",
);
/** A declined task waits this long before it is offered again. */
const REJECT_PAUSE_MS = 500;
const SWEEP_BATCH = 500;

/**
 * The task side of the agent protocol: what agents report (accept, events, results,
 * failures), and the clock (leases, timeouts, cancellation deadlines). Every change is a
 * conditional update on the task's agent, attempt and state, so a stale or duplicated
 * frame, or two nodes sweeping at once, changes nothing twice.
 */
export class TaskRuntime {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #bus: Bus;
  readonly #templates: TemplateService;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;

  /**
   * Ticks the agents' lease clock before leases are judged (set by the server once the agent
   * pool exists): time in which no node could hear heartbeats does not count against them.
   */
  leaseClock: ((now: Date) => Promise<void>) | undefined;

  /**
   * Which of these agents' leases ended before `at` (set by the server: the agents module
   * owns leases). Without it no lease is judged.
   */
  expiredLeases:
    | ((
        holders: { tenantId: string; agentId: string }[],
        at: string,
      ) => Promise<{ tenantId: string; agentId: string }[]>)
    | undefined;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    bus: Bus;
    templates: TemplateService;
    retryBaseMs: number;
    retryMaxMs: number;
  }) {
    this.#store = deps.store;
    this.#events = deps.events;
    this.#bus = deps.bus;
    this.#templates = deps.templates;
    this.#retryBaseMs = deps.retryBaseMs;
    this.#retryMaxMs = deps.retryMaxMs;
  }

  /** Delay before the attempt after `attempt`: exponential, capped, with equal jitter. */
  retryDelayMs(attempt: number): number {
    const ceiling = Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** Math.max(0, attempt - 1));
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  /** The agent started the task. False when the task is not (any more) its own. */
  async accept(ref: AgentRef, taskId: string, attempt: number): Promise<boolean> {
    return this.#events.transaction(async (trx, emit) => {
      // The usual case in one statement; a read only when it did not apply.
      const now = new Date().toISOString();
      const [started] = await START.rows<Pick<TasksTable, 'session_id'>>(trx, this.#store.kind, [
        now,
        now,
        taskId,
        ref.tenantId,
        ref.agentId,
        attempt,
      ]);
      if (started !== undefined) {
        const row = { id: taskId, tenant_id: ref.tenantId, session_id: started.session_id };
        await emitTaskEvents(emit, row, [
          stateEvent({ state: 'running', attempt, agent_id: ref.agentId }),
        ]);
        return true;
      }
      return (await this.#owned(trx, ref, taskId, attempt)) !== undefined; // accepted before
    });
  }

  /**
   * The agent declined the task before accepting it: back to the queue after a short
   * pause, the attempt not counted; or cancelled, if that was requested meanwhile. A task
   * already accepted cannot be declined (`running`: end it with a failure instead).
   */
  async reject(
    ref: AgentRef,
    taskId: string,
    attempt: number,
    reason: string,
  ): Promise<'requeued' | 'cancelled' | 'running' | 'not_owned'> {
    const outcome = await this.#events.transaction(async (trx, emit) => {
      const row = await this.#owned(trx, ref, taskId, attempt);
      if (row === undefined) return 'not_owned' as const;
      if (row.state === 'running') return 'running' as const;
      const now = new Date();
      const rejected = { type: 'task.rejected', data: { agent_id: ref.agentId, attempt, reason } };
      if (row.cancel_requested_at !== null) {
        const cancelled = await this.#update(trx, row, ['assigned'], {
          state: 'cancelled',
          finished_at: now.toISOString(),
          cancel_deadline_at: null,
        });
        if (cancelled === undefined) return 'not_owned' as const;
        await emitTaskEvents(emit, cancelled, [
          rejected,
          stateEvent(cancelled, { forced: false, by: 'request' }),
        ]);
        return 'cancelled' as const;
      }
      const updated = await this.#update(trx, row, ['assigned'], {
        state: 'queued',
        agent_id: null,
        attempt: row.attempt - 1,
        assigned_at: null,
        deadline_at: null,
        // A pause, so that an agent that is the only one fitting is not asked again at once.
        not_before: new Date(now.getTime() + REJECT_PAUSE_MS).toISOString(),
      });
      if (updated === undefined) return 'not_owned' as const;
      await emitTaskEvents(emit, updated, [rejected, stateEvent(updated)]);
      return 'requeued' as const;
    });
    if (outcome === 'requeued') {
      this.#wakeDispatch(ref.tenantId, new Date(Date.now() + REJECT_PAUSE_MS).toISOString());
    }
    return outcome;
  }

  /**
   * Stores events an agent streamed, in order, in one transaction. Events at or below a
   * task's stored sequence number are duplicates (resent after a reconnect) and skipped.
   * Resolves to the tasks, among them, that are not the agent's.
   */
  async appendEvents(ref: AgentRef, items: AgentTaskEvent[]): Promise<Set<string>> {
    const notOwned = new Set<string>();
    await this.#events.transaction(async (trx, emit) => {
      const byTask = new Map<string, AgentTaskEvent[]>();
      for (const item of items) {
        const key = `${item.task_id}\u0000${item.attempt}`;
        const list = byTask.get(key);
        if (list) list.push(item);
        else byTask.set(key, [item]);
      }
      for (const list of byTask.values()) {
        const first = list[0];
        if (first === undefined) continue;
        let row = await this.#owned(trx, ref, first.task_id, first.attempt);
        if (row === undefined) {
          notOwned.add(first.task_id);
          continue;
        }
        // Events mean the agent is working on it, whether or not its accept arrived.
        if (row.state === 'assigned') row = await this.#start(trx, emit, row);
        if (row === undefined) continue;
        let seq = row.event_seq;
        const fresh: NewEvent[] = [];
        for (const item of list.sort((a, b) => a.seq - b.seq)) {
          if (item.seq <= seq) continue;
          seq = item.seq;
          const { type, ...data } = item.event;
          fresh.push({ type: `task.${type}`, data: { attempt: item.attempt, seq, ...data } });
        }
        if (fresh.length === 0) continue;
        await trx
          .updateTable('tasks')
          .set({ event_seq: seq })
          .where('id', '=', row.id)
          .where('tenant_id', '=', row.tenant_id)
          .execute();
        await emitTaskEvents(emit, row, fresh);
      }
    });
    return notOwned;
  }

  /** The agent finished the task with `output`. Repeating an accepted result is harmless. */
  async complete(
    ref: AgentRef,
    taskId: string,
    attempt: number,
    output: unknown,
    /** The task's template as assigned (null: none), if the caller knows it: saves a read. */
    template?: { id: string; version: number } | null,
  ): Promise<Ack> {
    let known = template;
    if (known === undefined) {
      const row = await this.#store.db
        .selectFrom('tasks')
        .select(['template_id', 'template_version'])
        .where('tenant_id', '=', ref.tenantId)
        .where('id', '=', taskId)
        .executeTakeFirst();
      known =
        row?.template_id != null && row.template_version != null
          ? { id: row.template_id, version: row.template_version }
          : null;
    }
    const check =
      known === null
        ? undefined
        : await this.#templates.outputCheck(ref.tenantId, known.id, known.version);
    const problem = check?.(output);
    if (problem !== undefined) {
      return this.fail(ref, taskId, attempt, {
        code: 'OUTPUT_INVALID',
        message: `the result does not match the template's output schema: ${problem}`,
        retryable: false,
      });
    }
    return this.#events.transaction(async (trx, emit) => {
      const now = new Date().toISOString();
      const [updated] = await SUCCEED.rows<Pick<TasksTable, 'session_id' | 'started_at'>>(
        trx,
        this.#store.kind,
        [JSON.stringify(output ?? null), now, now, now, taskId, ref.tenantId, ref.agentId, attempt],
      );
      if (updated === undefined) {
        return this.#notOwnedAck(trx, ref, taskId, attempt, 'succeeded');
      }
      const row = { id: taskId, tenant_id: ref.tenantId, session_id: updated.session_id };
      const startedAt = updated.started_at ?? now;
      await emitTaskEvents(emit, row, [
        stateEvent(
          { state: 'succeeded', attempt, agent_id: ref.agentId },
          { duration_ms: Date.parse(now) - Date.parse(startedAt) },
        ),
      ]);
      return { accepted: true, state: 'succeeded' };
    });
  }

  /**
   * The agent could not finish the task. A retryable failure (the default) is tried again
   * after a backoff while attempts remain, then the task is dead; any other ends it failed.
   */
  async fail(ref: AgentRef, taskId: string, attempt: number, failure: TaskFailure): Promise<Ack> {
    const error = {
      code: failure.code ?? 'AGENT_ERROR',
      message: failure.message,
      retryable: failure.retryable ?? true,
      ...(failure.details ? { details: failure.details } : {}),
    };
    const later: (() => void)[] = [];
    const result = await this.#events.transaction(async (trx, emit): Promise<Ack> => {
      const owned = await this.#owned(trx, ref, taskId, attempt);
      if (owned === undefined) return this.#notOwnedAck(trx, ref, taskId, attempt, 'failed');
      // The agent reported it, so it needs no notice to stop.
      const updated = await this.#endAttempt(trx, emit, owned, error, later, false);
      if (updated === undefined) return { accepted: false, reason: 'the task changed meanwhile' };
      return { accepted: true, state: updated.state };
    });
    for (const action of later) action();
    return result;
  }

  /**
   * The agent's run waits for operators to decide on tool calls (a hosted agent's run): the
   * task leaves the agent for `awaiting_approval`, giving back its slot and the attempt's
   * deadline, until `resume` queues it again to go on as the same attempt. A cancellation
   * asked for meanwhile ends it cancelled instead.
   */
  async suspend(
    ref: AgentRef,
    taskId: string,
    attempt: number,
    waiting: TaskWaitingForApproval,
  ): Promise<Ack> {
    return this.#events.transaction(async (trx, emit) => {
      const owned = await this.#owned(trx, ref, taskId, attempt);
      if (owned === undefined) {
        return this.#notOwnedAck(trx, ref, taskId, attempt, 'awaiting_approval');
      }
      const now = new Date().toISOString();
      if (owned.cancel_requested_at !== null) {
        const cancelled = await this.#update(trx, owned, ACTIVE, {
          state: 'cancelled',
          finished_at: now,
          cancel_deadline_at: null,
        });
        if (cancelled === undefined) return { accepted: false, reason: 'the task changed' };
        await emitTaskEvents(emit, cancelled, [
          stateEvent(cancelled, { forced: false, by: 'request' }),
        ]);
        return { accepted: true, state: cancelled.state };
      }
      const updated = await this.#update(trx, owned, ACTIVE, {
        state: 'awaiting_approval',
        agent_id: null,
        assigned_at: null,
        deadline_at: null,
        cancel_deadline_at: null,
        waiting: JSON.stringify(waiting),
      });
      if (updated === undefined) return { accepted: false, reason: 'the task changed' };
      await emitTaskEvents(emit, updated, [
        {
          type: 'task.awaiting_approval',
          data: {
            state: updated.state,
            attempt: updated.attempt,
            agent_id: owned.agent_id,
            approvals: waiting.approvals,
          },
        },
      ]);
      return { accepted: true, state: updated.state };
    });
  }

  /**
   * Queues a task `awaiting_approval` again, for any agent to go on with it. False when it
   * no longer waits (resumed by another node, or cancelled).
   */
  async resume(tenantId: string, taskId: string): Promise<boolean> {
    const resumed = await this.#events.transaction(async (trx, emit) => {
      const now = new Date().toISOString();
      const updated = await trx
        .updateTable('tasks')
        // The attempt is given back: the dispatch that resumes it counts the same one again.
        .set((eb) => ({
          state: 'queued',
          attempt: eb('attempt', '-', 1),
          waiting: null,
          queued_at: now,
          updated_at: now,
        }))
        .where('id', '=', taskId)
        .where((eb) =>
          filterOnly(
            eb.and([eb('tenant_id', '=', tenantId), eb('state', '=', 'awaiting_approval')]),
          ),
        )
        .returningAll()
        .executeTakeFirst();
      if (updated === undefined) return false;
      await emitTaskEvents(emit, updated, [stateEvent(updated, { resumed: 'approval' })]);
      return true;
    });
    if (resumed) this.#wakeDispatch(tenantId);
    return resumed;
  }

  /**
   * Tasks in `awaiting_approval` (of one tenant, or of all), oldest first, after id `after`,
   * at most `limit`, with what each waits for.
   */
  async awaitingApproval(
    options: { tenantId?: string; after?: string; limit?: number } = {},
  ): Promise<{ tenant_id: string; id: string; waiting: TaskWaitingForApproval }[]> {
    let query = this.#store.db
      .selectFrom('tasks')
      .select(['tenant_id', 'id', 'waiting'])
      .where('state', '=', 'awaiting_approval')
      .orderBy('id')
      .limit(options.limit ?? SWEEP_BATCH);
    if (options.tenantId !== undefined) query = query.where('tenant_id', '=', options.tenantId);
    if (options.after !== undefined) query = query.where('id', '>', options.after);
    const rows = await query.execute();
    return rows.flatMap((r) =>
      r.waiting === null
        ? []
        : [
            {
              tenant_id: r.tenant_id,
              id: r.id,
              waiting: JSON.parse(r.waiting) as TaskWaitingForApproval,
            },
          ],
    );
  }

  /** The agent stopped a task it was told to cancel (or gave it up on its own). */
  async confirmCancelled(ref: AgentRef, taskId: string, attempt: number): Promise<Ack> {
    return this.#events.transaction(async (trx, emit) => {
      const owned = await this.#owned(trx, ref, taskId, attempt);
      if (owned === undefined) return this.#notOwnedAck(trx, ref, taskId, attempt, 'cancelled');
      const now = new Date().toISOString();
      const updated = await this.#update(trx, owned, ACTIVE, {
        state: 'cancelled',
        finished_at: now,
        cancel_requested_at: owned.cancel_requested_at ?? now,
        cancel_deadline_at: null,
      });
      if (updated === undefined) return { accepted: false, reason: 'the task changed meanwhile' };
      await emitTaskEvents(emit, updated, [
        stateEvent(updated, {
          forced: false,
          by: owned.cancel_requested_at === null ? 'agent' : 'request',
        }),
      ]);
      return { accepted: true, state: updated.state };
    });
  }

  /**
   * Matches what a (re)connecting agent says it holds against what the store says it
   * holds. Tasks on both lists resume; tasks only the store lists were lost by the agent
   * and go back to the queue; tasks only the agent lists are no longer its own (`lost`).
   */
  async reconcile(
    ref: AgentRef,
    held: { task_id: string; attempt: number }[],
  ): Promise<{ resumed: ResumedTask[]; lost: string[] }> {
    const rows = await this.#store.db
      .selectFrom('tasks')
      .selectAll()
      .where('tenant_id', '=', ref.tenantId)
      .where('agent_id', '=', ref.agentId)
      .where('state', 'in', ACTIVE)
      .execute();
    const claimed = new Map(held.map((h) => [h.task_id, h.attempt]));
    const resumed: ResumedTask[] = [];
    const forgotten: TasksTable[] = [];
    for (const row of rows) {
      if (claimed.get(row.id) === row.attempt) {
        resumed.push({
          task_id: row.id,
          attempt: row.attempt,
          last_seq: row.event_seq,
          cancel_requested: row.cancel_requested_at !== null,
        });
        claimed.delete(row.id);
      } else {
        forgotten.push(row);
      }
    }
    for (const row of forgotten) {
      const later: (() => void)[] = [];
      await this.#events.transaction((trx, emit) =>
        this.#endAttempt(
          trx,
          emit,
          row,
          {
            code: 'AGENT_LOST_TASK',
            message: `agent ${ref.agentId} reconnected without this task`,
            retryable: true,
          },
          later,
        ),
      );
      for (const action of later) action();
    }
    return { resumed, lost: [...claimed.keys()] };
  }

  /**
   * One pass of the clock, safe on every node at once: tasks of agents whose lease ran out
   * go back to the queue (or die), tasks past their deadline time out, and cancellations
   * the agent did not confirm in time end anyway. Resolves to how many tasks it changed.
   */
  async sweep(now: Date = new Date()): Promise<number> {
    await this.leaseClock?.(now);
    const at = now.toISOString();
    let changed = 0;
    const orphans = await this.#tasksOfExpiredLeases(at);
    for (const row of orphans) {
      const later: (() => void)[] = [];
      const updated = await this.#events.transaction((trx, emit) =>
        this.#endAttempt(
          trx,
          emit,
          row,
          {
            code: 'LEASE_EXPIRED',
            message: `agent ${row.agent_id} stopped sending heartbeats`,
            retryable: true,
          },
          later,
        ),
      );
      for (const action of later) action();
      if (updated !== undefined) changed += 1;
    }

    const overdue = await this.#store.db
      .selectFrom('tasks')
      .selectAll()
      .where('state', 'in', ACTIVE)
      .where('deadline_at', '<', at)
      .limit(SWEEP_BATCH)
      .execute();
    for (const row of overdue) {
      const updated = await this.#events.transaction(async (trx, emit) => {
        const done = await this.#update(trx, row, ACTIVE, {
          state: 'timed_out',
          finished_at: at,
          cancel_deadline_at: null,
          error: JSON.stringify({
            code: 'TIMEOUT',
            message: `attempt ${row.attempt} did not finish within ${row.timeout_ms} ms`,
            retryable: false,
          }),
        });
        if (done) await emitTaskEvents(emit, done, [stateEvent(done)]);
        return done;
      });
      if (updated === undefined || row.agent_id === null) continue;
      changed += 1;
      this.#notify(row.tenant_id, row.agent_id, {
        op: 'cancel',
        task_id: row.id,
        attempt: row.attempt,
        reason: 'timeout',
        deadline_ms: 0,
      });
    }

    const unconfirmed = await this.#store.db
      .selectFrom('tasks')
      .selectAll()
      .where('state', 'in', ACTIVE)
      .where('cancel_deadline_at', '<', at)
      .limit(SWEEP_BATCH)
      .execute();
    for (const row of unconfirmed) {
      const updated = await this.#events.transaction(async (trx, emit) => {
        const done = await this.#update(trx, row, ACTIVE, {
          state: 'cancelled',
          finished_at: at,
          cancel_deadline_at: null,
        });
        if (done) {
          await emitTaskEvents(emit, done, [stateEvent(done, { forced: true, by: 'request' })]);
        }
        return done;
      });
      if (updated === undefined) continue;
      changed += 1;
      if (row.agent_id !== null) {
        this.#notify(row.tenant_id, row.agent_id, {
          op: 'release',
          task_id: row.id,
          attempt: row.attempt,
        });
      }
    }
    return changed;
  }

  /** The active tasks of each of the agents, for showing them. */
  /**
   * Up to SWEEP_BATCH active tasks whose agent's lease ended before `at`: the agents that
   * hold tasks come from this module's table, whose leases ended from the agents module.
   */
  async #tasksOfExpiredLeases(at: string): Promise<TasksTable[]> {
    if (this.expiredLeases === undefined) return [];
    const holders = await this.#store.db
      .selectFrom('tasks')
      .select(['tenant_id', 'agent_id'])
      .distinct()
      .where('state', 'in', ACTIVE)
      .where('agent_id', 'is not', null)
      .execute();
    if (holders.length === 0) return [];
    const expired = await this.expiredLeases(
      holders.map((h) => ({ tenantId: h.tenant_id, agentId: h.agent_id ?? '' })),
      at,
    );
    const rows: TasksTable[] = [];
    for (const { tenantId, agentId } of expired) {
      if (rows.length >= SWEEP_BATCH) break;
      rows.push(
        ...(await this.#store.db
          .selectFrom('tasks')
          .selectAll()
          .where('tenant_id', '=', tenantId)
          .where('agent_id', '=', agentId)
          .where('state', 'in', ACTIVE)
          .limit(SWEEP_BATCH - rows.length)
          .execute()),
      );
    }
    return rows;
  }

  /** True when the agent holds a task (assigned or running), read within `trx`. */
  async agentHoldsTasks(
    trx: Transaction<Database>,
    tenantId: string,
    agentId: string,
  ): Promise<boolean> {
    const row = await trx
      .selectFrom('tasks')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where('agent_id', '=', agentId)
      .where('state', 'in', ['assigned', 'running'])
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  async activeByAgent(tenantId: string, agentIds: string[]): Promise<Map<string, string[]>> {
    const result = new Map<string, string[]>(agentIds.map((id) => [id, []]));
    if (agentIds.length === 0) return result;
    const rows = await this.#store.db
      .selectFrom('tasks')
      .select(['id', 'agent_id'])
      .where('tenant_id', '=', tenantId)
      .where('agent_id', 'in', agentIds)
      .where('state', 'in', ACTIVE)
      .orderBy('id')
      .execute();
    for (const row of rows) if (row.agent_id !== null) result.get(row.agent_id)?.push(row.id);
    return result;
  }

  /** Tells the node holding an agent's connection; a no-op when nobody holds it. */
  #notify(tenantId: string, agentId: string, notice: AgentNotice): void {
    this.#bus.publish(agentSubject(tenantId, agentId), notice);
  }

  #wakeDispatch(tenantId: string, at?: string): void {
    const notice: DispatchNotice =
      at === undefined ? { tenant_id: tenantId } : { tenant_id: tenantId, at };
    this.#bus.publish(DISPATCH_SUBJECT, notice);
  }

  /** assigned → running. */
  async #start(trx: Transaction<Database>, emit: Emit, row: TasksTable): Promise<TasksTable> {
    const updated = await this.#update(trx, row, ['assigned'], {
      state: 'running',
      started_at: new Date().toISOString(),
    });
    if (updated === undefined) return row;
    await emitTaskEvents(emit, updated, [stateEvent(updated)]);
    return updated;
  }

  /**
   * Ends the current attempt with `error`: back to the queue after a backoff if it is
   * retryable and attempts remain, else dead (retryable) or failed (not retryable).
   */
  async #endAttempt(
    trx: Transaction<Database>,
    emit: Emit,
    row: TasksTable,
    error: { code: string; message: string; retryable: boolean; details?: unknown },
    later: (() => void)[],
    tellAgent = true,
  ): Promise<TasksTable | undefined> {
    const now = new Date();
    const errorJson = JSON.stringify(error);
    let updated: TasksTable | undefined;
    const events: NewEvent[] = [
      {
        type: 'task.attempt_failed',
        data: { attempt: row.attempt, agent_id: row.agent_id, error },
      },
    ];
    if (error.retryable && row.attempt < row.max_attempts) {
      const notBefore = new Date(now.getTime() + this.retryDelayMs(row.attempt)).toISOString();
      updated = await this.#update(trx, row, ACTIVE, {
        state: 'queued',
        agent_id: null,
        error: errorJson,
        not_before: notBefore,
        assigned_at: null,
        started_at: null,
        deadline_at: null,
        cancel_deadline_at: null,
      });
      if (updated) {
        events.push(stateEvent(updated, { retry_at: notBefore }));
        later.push(() => this.#wakeDispatch(row.tenant_id, notBefore));
      }
    } else {
      updated = await this.#update(trx, row, ACTIVE, {
        state: error.retryable ? 'dead' : 'failed',
        error: errorJson,
        finished_at: now.toISOString(),
        cancel_deadline_at: null,
      });
      if (updated) events.push(stateEvent(updated, { error }));
    }
    if (updated === undefined) return undefined;
    await emitTaskEvents(emit, row, events);
    const agentId = row.agent_id;
    if (agentId !== null && tellAgent) {
      // The agent may still hold it (a lost lease): tell it to stop, and free its slot.
      later.push(() =>
        this.#notify(row.tenant_id, agentId, {
          op: 'cancel',
          task_id: row.id,
          attempt: row.attempt,
          reason: 'lease_lost',
          deadline_ms: 0,
        }),
      );
    }
    return updated;
  }

  /** The answer when the task is no longer the agent's: fine if it already ended this way. */
  async #notOwnedAck(
    trx: Transaction<Database>,
    ref: AgentRef,
    taskId: string,
    attempt: number,
    wanted: TaskState,
  ): Promise<Ack> {
    const row = await trx
      .selectFrom('tasks')
      .select(['state', 'agent_id', 'attempt'])
      .where('tenant_id', '=', ref.tenantId)
      .where('id', '=', taskId)
      .executeTakeFirst();
    if (row === undefined) return { accepted: false, reason: 'no such task' };
    if (row.agent_id === ref.agentId && row.attempt === attempt && row.state === wanted) {
      return { accepted: true, state: row.state }; // a repeat whose first ack was lost
    }
    // A repeated failure whose first copy already ended the attempt (queued again, failed
    // or dead): the failure is recorded.
    if (
      wanted === 'failed' &&
      row.attempt === attempt &&
      (row.agent_id === null || row.agent_id === ref.agentId) &&
      (row.state === 'queued' || row.state === 'failed' || row.state === 'dead')
    ) {
      return { accepted: true, state: row.state };
    }
    return {
      accepted: false,
      state: row.state,
      reason: `the task is ${row.state} and no longer this agent's`,
    };
  }

  /** The task if it is the agent's current attempt and active, locked on PostgreSQL. */
  async #owned(
    trx: Transaction<Database>,
    ref: AgentRef,
    taskId: string,
    attempt: number,
    states: TaskState[] = ACTIVE,
  ): Promise<TasksTable | undefined> {
    let query = trx
      .selectFrom('tasks')
      .selectAll()
      .where('id', '=', taskId)
      .where((eb) =>
        filterOnly(
          eb.and([
            eb('tenant_id', '=', ref.tenantId),
            eb('agent_id', '=', ref.agentId),
            eb('attempt', '=', attempt),
            eb('state', 'in', states),
          ]),
        ),
      );
    if (this.#store.kind === 'postgres') query = query.forUpdate();
    return query.executeTakeFirst();
  }

  /** Applies `changes` if the task is still at the same attempt, agent and one of `from`. */
  async #update(
    trx: Transaction<Database>,
    row: TasksTable,
    from: TaskState[],
    changes: Partial<TasksTable>,
  ): Promise<TasksTable | undefined> {
    return trx
      .updateTable('tasks')
      .set({ ...changes, updated_at: new Date().toISOString() })
      .where('id', '=', row.id)
      .where((eb) =>
        filterOnly(
          eb.and([
            eb('tenant_id', '=', row.tenant_id),
            eb('attempt', '=', row.attempt),
            eb('state', 'in', from),
            row.agent_id === null ? eb('agent_id', 'is', null) : eb('agent_id', '=', row.agent_id),
          ]),
        ),
      )
      .returningAll()
      .executeTakeFirst();
  }
}
