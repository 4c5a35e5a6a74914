import {
  type CreateTask,
  isRetryableState,
  isTerminalState,
  type Task,
  type TaskState,
  TERMINAL_EVENT_TYPES,
} from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import type { Bus } from '../bus/bus.ts';
import type { EventLog, StreamEvent, StreamItem } from '../events/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError, fieldError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import {
  bytesOf,
  DEFAULT_PAGE_LIMIT,
  decodeCursor,
  fetchPage,
  ROW_OVERHEAD_BYTES,
} from '../platform/pagination.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import { jsonWithinLimit } from '../platform/value-limits.ts';
import type { MultitaskStrategy } from '../sessions/index.ts';
import type { Database } from '../store/database.ts';
import { filterOnly, Statement } from '../store/statement.ts';
import { countRows, isUniqueViolation, type RelationalStore } from '../store/store.ts';
import type { ResolvedTemplate, TemplateService } from '../templates/index.ts';
import {
  type AgentNotice,
  agentSubject,
  DISPATCH_SUBJECT,
  type DispatchNotice,
} from './runtime.ts';
import { emitTaskEvents, stateEvent, taskStream } from './stream.ts';
import type { TasksTable } from './tables.ts';

/** Defaults of a task routed by capabilities alone (no template to take them from). */
const CAPABILITY_TASK_DEFAULTS = {
  timeout_ms: 300_000,
  max_attempts: 3,
  priority: 0,
  strategy: 'least_connections',
} as const;

/** What the tasks module asks of the agents module: what connected agents offer now. */
export interface TaskAgents {
  /** The capabilities of each of the tenant's agents that take new tasks now. */
  offeredCapabilities(tenantId: string): Promise<string[][]>;
}

/** Why a task needing `needs` cannot be placed on agents offering `offered`; null if it can. */
export function waitingFor(needs: string[], offered: string[][]): Task['waiting'] {
  if (offered.some((set) => needs.every((c) => set.includes(c)))) return null;
  if (offered.length === 0 || needs.length === 0) {
    return {
      reason: 'no_agent',
      message:
        needs.length === 0
          ? 'no agent is connected'
          : `no connected agent offers ${needs.length === 1 ? 'capability' : 'capabilities'} ${needs.join(', ')}`,
      capabilities: needs,
    };
  }
  const missing = needs.filter((c) => !offered.some((set) => set.includes(c)));
  if (missing.length === 0) {
    return {
      reason: 'no_agent',
      message: `no connected agent offers ${needs.join(', ')} together`,
      capabilities: needs,
    };
  }
  return {
    reason: 'no_agent',
    message: `no connected agent offers ${missing.length === 1 ? 'capability' : 'capabilities'} ${missing.join(', ')}`,
    capabilities: missing,
  };
}

/** What tasks need from the sessions module. */
export interface TaskSessions {
  /** The session's multitask strategy; VALIDATION_FAILED naming `field` if it does not exist. */
  strategyFor(tenantId: string, sessionId: string, field: string): Promise<MultitaskStrategy>;
  /** Locks the session's row in `trx` (on stores that lock rows), for a submit to it. */
  lock(trx: Transaction<Database>, tenantId: string, sessionId: string): Promise<void>;
}

/** What tasks need of workspaces: whether an instance a task names is there. */
export interface TaskWorkspaces {
  /** Resolves when the caller's tenant has instance `id`; VALIDATION_FAILED naming `field` if not. */
  checkInstance(principal: Principal, id: string, field: string): Promise<void>;
}

/** The run-time fields of a task that has not started: new, or queued again by a retry. */
const NOT_STARTED = {
  attempt: 0,
  agent_id: null,
  result: null,
  error: null,
  cancel_requested_at: null,
  cancel_deadline_at: null,
  not_before: null,
  assigned_at: null,
  started_at: null,
  deadline_at: null,
  event_seq: 0,
  finished_at: null,
  waiting: null,
} as const satisfies Partial<TasksTable>;

/** Every column of a task row (a record, so that the compiler finds one left out). */
const TASK_COLUMNS = Object.keys({
  id: true,
  tenant_id: true,
  template_id: true,
  template_name: true,
  template_version: true,
  capabilities: true,
  input: true,
  state: true,
  priority: true,
  timeout_ms: true,
  max_attempts: true,
  attempt: true,
  strategy: true,
  concurrency_key: true,
  session_id: true,
  instance_id: true,
  idempotency_key: true,
  labels: true,
  agent_id: true,
  result: true,
  error: true,
  cancel_requested_at: true,
  cancel_deadline_at: true,
  not_before: true,
  assigned_at: true,
  started_at: true,
  deadline_at: true,
  event_seq: true,
  concurrency_limit: true,
  created_by: true,
  created_at: true,
  queued_at: true,
  waiting: true,
  updated_at: true,
  finished_at: true,
} satisfies Record<keyof TasksTable, true>) as (keyof TasksTable)[];

// Every submit runs it: written once rather than built per request.
const INSERT_TASK = new Statement(
  `insert into tasks (${TASK_COLUMNS.join(', ')}) values (${TASK_COLUMNS.map(() => '?').join(', ')})`,
);

export interface ListTasksOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  states?: TaskState[] | undefined;
  /** Template id (`tpl_…`) or name. */
  template?: string | undefined;
  agent_id?: string | undefined;
  session_id?: string | undefined;
  instance_id?: string | undefined;
  labels?: Record<string, string>;
  created_after?: string | undefined;
  created_before?: string | undefined;
  /** About the most bytes of JSON the page may carry (ORCHESTRA_RESPONSE_MAX_BYTES). */
  maxBytes: number;
}

/** What became of one task of `createMany`. */
export type BatchOutcome =
  | { ok: true; task: Task; created: boolean }
  | { ok: false; error: ApiError };

function taskNotFound(id: string): ApiError {
  return new ApiError('TASK_NOT_FOUND', `Task "${id}" does not exist`);
}

function view(row: TasksTable): Task {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    template:
      row.template_id !== null && row.template_name !== null && row.template_version !== null
        ? { id: row.template_id, name: row.template_name, version: row.template_version }
        : null,
    capabilities: JSON.parse(row.capabilities) as string[],
    input: JSON.parse(row.input) as unknown,
    state: row.state,
    priority: row.priority,
    timeout_ms: row.timeout_ms,
    max_attempts: row.max_attempts,
    attempt: row.attempt,
    strategy: row.strategy as Task['strategy'],
    concurrency_key: row.concurrency_key,
    session_id: row.session_id,
    instance_id: row.instance_id,
    idempotency_key: row.idempotency_key,
    labels: JSON.parse(row.labels) as Record<string, string>,
    agent_id: row.agent_id,
    result: row.result === null ? null : (JSON.parse(row.result) as unknown),
    error: row.error === null ? null : (JSON.parse(row.error) as Task['error']),
    cancel_requested_at: row.cancel_requested_at,
    not_before: row.not_before,
    assigned_at: row.assigned_at,
    started_at: row.started_at,
    deadline_at: row.deadline_at,
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
    waiting:
      row.state === 'awaiting_approval' && row.waiting !== null
        ? (JSON.parse(row.waiting) as Task['waiting'])
        : null,
  };
}

/**
 * Tasks of a tenant: submission (durable once acknowledged), queries, cancellation and
 * retries. Every state change is a conditional update plus an event in the task's stream,
 * in one transaction, so concurrent changes from several nodes cannot both win.
 */
export class TaskService {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #templates: TemplateService;
  readonly #bus: Bus;
  readonly #limits: TenantLimitSource;
  readonly #cancelGraceMs: number;
  readonly #sessions: TaskSessions;
  readonly #queuedLimit: TenantLimit;
  readonly #agents: TaskAgents;
  readonly #workspaces: TaskWorkspaces;

  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    templates: TemplateService;
    bus: Bus;
    cancelGraceMs: number;
    sessions: TaskSessions;
    /** Each tenant's largest task input and most queued tasks. */
    limits: TenantLimitSource;
    /** What connected agents offer, to tell why a queued task waits. */
    agents: TaskAgents;
    workspaces: TaskWorkspaces;
  }) {
    this.#agents = deps.agents;
    this.#workspaces = deps.workspaces;
    this.#limits = deps.limits;
    this.#queuedLimit = new TenantLimit({
      name: 'max_queued_tasks',
      limits: deps.limits,
      what: 'queued tasks',
      count: (tenantId) =>
        countRows(this.#store.db, 'tasks', { tenant_id: tenantId, state: 'queued' }),
      // The queue can hold 100,000 tasks: count it at most every 100 ms near the limit, and
      // not at all for a second after a refusal (dispatch, not a delete, makes room).
      refusalTtlMs: 1_000,
      nearLimitRecountMs: 100,
    });
    this.#sessions = deps.sessions;
    this.#store = deps.store;
    this.#events = deps.events;
    this.#templates = deps.templates;
    this.#bus = deps.bus;
    this.#cancelGraceMs = deps.cancelGraceMs;
  }

  #wakeDispatch(tenantId: string, submitted = false): void {
    const notice: DispatchNotice = submitted
      ? { tenant_id: tenantId, submitted: true }
      : { tenant_id: tenantId };
    this.#bus.publish(DISPATCH_SUBJECT, notice);
  }

  /**
   * Stores a task in `queued`. Resolves to `created: false` with the existing task when
   * the idempotency key was used before in this tenant.
   */
  async create(principal: Principal, input: CreateTask): Promise<{ task: Task; created: boolean }> {
    const outcome = await this.#create(principal, input, newId('tsk'));
    const [task] = await this.#withWaiting(principal.tenant.id, [outcome.task]);
    return { task: task ?? outcome.task, created: outcome.created };
  }

  async #create(
    principal: Principal,
    input: CreateTask,
    /** The new task's id, taken in advance (by `createMany`, for order). */
    id: string,
  ): Promise<{ task: Task; created: boolean }> {
    const tenantId = principal.tenant.id;
    // First: a task whose input cannot be stored is refused before anything is looked up.
    const inputJson = jsonWithinLimit(
      input.input ?? null,
      'body.input',
      await this.#limits.get(tenantId, 'task_input_max_bytes'),
    );
    if (input.idempotency_key !== undefined) {
      const existing = await this.#byIdempotencyKey(tenantId, input.idempotency_key);
      if (existing) return { task: view(existing), created: false };
    }
    if (input.template === undefined && input.capabilities === undefined) {
      throw fieldError('body.template', 'give a template, capabilities, or both');
    }
    await this.#queuedLimit.check(tenantId);
    if (input.template === undefined && input.template_version !== undefined) {
      throw fieldError('body.template_version', 'needs a template');
    }
    let resolved: ResolvedTemplate | undefined;
    if (input.template !== undefined) {
      try {
        resolved = await this.#templates.resolve(principal, input.template, input.template_version);
      } catch (err) {
        if (err instanceof ApiError && err.code === 'TEMPLATE_NOT_FOUND') {
          throw fieldError('body.template', `no template "${input.template}" in this tenant`);
        }
        if (err instanceof ApiError && err.code === 'TEMPLATE_VERSION_NOT_FOUND') {
          throw fieldError(
            'body.template_version',
            `template "${input.template}" has no version ${input.template_version}`,
          );
        }
        throw err;
      }
      const problem = resolved.checkInput(input.input ?? null);
      if (problem !== undefined) {
        const { name, version } = resolved.template;
        throw fieldError(
          'body.input',
          `does not match the input schema of ${name} v${version}: ${problem}`,
        );
      }
    }
    if (input.instance !== undefined) {
      await this.#workspaces.checkInstance(principal, input.instance, 'body.instance');
    }
    const strategy =
      input.session_id === undefined
        ? undefined
        : await this.#sessions.strategyFor(tenantId, input.session_id, 'body.session_id');
    const template = resolved?.template;
    const capabilities = [
      ...new Set([...(template?.capabilities ?? []), ...(input.capabilities ?? [])]),
    ];
    const now = new Date().toISOString();
    const row: TasksTable = {
      id,
      tenant_id: tenantId,
      template_id: template?.id ?? null,
      template_name: template?.name ?? null,
      template_version: template?.version ?? null,
      capabilities: JSON.stringify(capabilities),
      input: inputJson,
      state: 'queued',
      priority: input.priority ?? template?.default_priority ?? CAPABILITY_TASK_DEFAULTS.priority,
      timeout_ms:
        input.timeout_ms ?? template?.default_timeout_ms ?? CAPABILITY_TASK_DEFAULTS.timeout_ms,
      max_attempts:
        input.max_attempts ??
        template?.default_max_attempts ??
        CAPABILITY_TASK_DEFAULTS.max_attempts,
      strategy: input.strategy ?? template?.strategy ?? CAPABILITY_TASK_DEFAULTS.strategy,
      concurrency_key: input.concurrency_key ?? null,
      idempotency_key: input.idempotency_key ?? null,
      labels: JSON.stringify(input.labels ?? {}),
      ...NOT_STARTED,
      concurrency_limit: template?.concurrency_key_limit ?? null,
      session_id: input.session_id ?? null,
      instance_id: input.instance ?? null,
      created_by: credentialId(principal),
      created_at: now,
      queued_at: now,
      updated_at: now,
    };
    let interrupted: string[] = [];
    try {
      const stored = this.#events.transaction(async (trx, emit) => {
        if (row.session_id !== null) {
          interrupted = await this.#checkSession(trx, tenantId, row.session_id, strategy);
        }
        await INSERT_TASK.run(
          trx,
          this.#store.kind,
          TASK_COLUMNS.map((c) => row[c]),
        );
        const labels = Object.entries(input.labels ?? {}).map(([key, value]) => ({
          task_id: row.id,
          key,
          value,
        }));
        if (labels.length > 0) await trx.insertInto('task_labels').values(labels).execute();
        await emitTaskEvents(emit, row, [stateEvent(row, { priority: row.priority })], true);
      });
      // Where transactions run in the order asked for, a dispatch pass asked for now runs
      // right after this one, in the same commit, and the task reaches an agent one commit
      // sooner. Elsewhere it would run too early to see the task.
      if (this.#store.ordersTransactions) this.#wakeDispatch(tenantId, true);
      await stored;
    } catch (err) {
      if (isUniqueViolation(err) && input.idempotency_key !== undefined) {
        // Another request with the same key won the race: its task is the answer.
        const existing = await this.#byIdempotencyKey(tenantId, input.idempotency_key);
        if (existing) return { task: view(existing), created: false };
      }
      throw err;
    }
    for (const id of interrupted) {
      // Cancelled after the new task is stored: it runs once they are over (in order).
      await this.cancel(principal, id).catch((err: unknown) => {
        if (!(err instanceof ApiError && err.code === 'TASK_ALREADY_FINISHED')) throw err;
      });
    }
    this.#wakeDispatch(tenantId);
    return {
      task: (await this.#withWaiting(tenantId, [view(row)]))[0] ?? view(row),
      created: true,
    };
  }

  /**
   * Submits several tasks with the outcome of each: as if submitted one after another, in
   * order (ids, and so first-in-first-out dispatch, follow the order), but sharing commits.
   * Tasks of one session, or with one idempotency key, are submitted strictly one after
   * the other; the rest at once. A task that cannot be submitted (an `ApiError`) fails
   * alone. Any other failure (the store is down) rejects the whole call once every task
   * has settled; tasks stored by then stay stored.
   */
  async createMany(principal: Principal, inputs: CreateTask[]): Promise<BatchOutcome[]> {
    const ids = inputs.map(() => newId('tsk'));
    const tails = new Map<string, Promise<unknown>>();
    const settled = await Promise.allSettled(
      inputs.map((input, i) => {
        const keys: string[] = [];
        if (input.session_id !== undefined) keys.push(`session\u0000${input.session_id}`);
        if (input.idempotency_key !== undefined) keys.push(`key\u0000${input.idempotency_key}`);
        const before = keys.map((k) => tails.get(k));
        const done = Promise.all(before.map((p) => p?.catch(() => {}))).then(() =>
          this.#create(principal, input, ids[i] ?? newId('tsk')),
        );
        for (const key of keys) tails.set(key, done);
        return done;
      }),
    );
    const broken = settled.find(
      (s): s is PromiseRejectedResult => s.status === 'rejected' && !(s.reason instanceof ApiError),
    );
    if (broken !== undefined) throw broken.reason;
    const created = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value.task] : []));
    const shown = new Map(
      (await this.#withWaiting(principal.tenant.id, created)).map((t) => [t.id, t]),
    );
    return settled.map((s) =>
      s.status === 'fulfilled'
        ? { ok: true, task: shown.get(s.value.task.id) ?? s.value.task, created: s.value.created }
        : { ok: false, error: s.reason as ApiError },
    );
  }

  /**
   * Applies the session's multitask strategy to a new task, inside its transaction: throws
   * SESSION_BUSY for `reject`; resolves to the tasks to cancel for `interrupt`. The session
   * row is locked on PostgreSQL so that concurrent submits see each other.
   */
  async #checkSession(
    trx: Transaction<Database>,
    tenantId: string,
    sessionId: string,
    strategy: MultitaskStrategy | undefined,
  ): Promise<string[]> {
    // Concurrent submits to one session see each other: the sessions module locks its row.
    await this.#sessions.lock(trx, tenantId, sessionId);
    if (strategy === 'enqueue') return [];
    const unfinished = await this.unfinishedInSession(trx, tenantId, sessionId);
    if (unfinished.length > 0 && strategy === 'reject') {
      throw new ApiError(
        'SESSION_BUSY',
        `Session "${sessionId}" has an unfinished task and rejects new ones meanwhile`,
        { details: { session_id: sessionId, unfinished } },
      );
    }
    return unfinished;
  }

  /** Deletes the event streams of these tasks within `trx` (a deleted session's). */
  async deleteEvents(
    trx: Transaction<Database>,
    tenantId: string,
    taskIds: string[],
  ): Promise<void> {
    await this.#events.deleteStreams(trx, tenantId, taskIds.map(taskStream));
  }

  /** Ids of a session's unfinished tasks within `trx`, oldest first. */
  async unfinishedInSession(
    trx: Transaction<Database>,
    tenantId: string,
    sessionId: string,
  ): Promise<string[]> {
    const rows = await trx
      .selectFrom('tasks')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where('session_id', '=', sessionId)
      .where('state', 'in', ['queued', 'assigned', 'running', 'awaiting_approval'])
      .orderBy('id')
      .execute();
    return rows.map((r) => r.id);
  }

  /** Ids of a session's tasks, and of its unfinished ones, oldest first. */
  async ofSession(
    tenantId: string,
    sessionId: string,
  ): Promise<{ all: string[]; unfinished: string[] }> {
    const rows = await this.#store.db
      .selectFrom('tasks')
      .select(['id', 'state'])
      .where('tenant_id', '=', tenantId)
      .where('session_id', '=', sessionId)
      .orderBy('id')
      .execute();
    return {
      all: rows.map((r) => r.id),
      unfinished: rows.filter((r) => !isTerminalState(r.state)).map((r) => r.id),
    };
  }

  /**
   * The tasks of a session that succeeded before task `beforeId` (created earlier), newest
   * first, at most `limit`: what a hosted agent remembers of the session.
   */
  async sessionHistory(
    tenantId: string,
    sessionId: string,
    beforeId: string,
    limit: number,
  ): Promise<{ id: string; input: unknown; result: unknown; template: string | null }[]> {
    const rows = await this.#store.db
      .selectFrom('tasks')
      .select(['id', 'input', 'result', 'template_name'])
      .where('tenant_id', '=', tenantId)
      .where('session_id', '=', sessionId)
      .where('id', '<', beforeId)
      .where('state', '=', 'succeeded')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute();
    return rows.map((r) => ({
      id: r.id,
      input: JSON.parse(r.input) as unknown,
      result: r.result === null ? null : (JSON.parse(r.result) as unknown),
      template: r.template_name,
    }));
  }

  /** The state of the tenant's task `id`; undefined when there is no such task. */
  async stateOf(tenantId: string, id: string): Promise<Task['state'] | undefined> {
    const row = await this.#store.db
      .selectFrom('tasks')
      .select('state')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    return row?.state;
  }

  /** The instance task `id` works in: null for none, undefined when there is no such task. */
  async instanceOf(tenantId: string, id: string): Promise<string | null | undefined> {
    const row = await this.#store.db
      .selectFrom('tasks')
      .select('instance_id')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    return row === undefined ? undefined : row.instance_id;
  }

  async get(principal: Principal, id: string): Promise<Task> {
    const task = view(await this.#find(this.#store.db, principal.tenant.id, id));
    return (await this.#withWaiting(principal.tenant.id, [task]))[0] ?? task;
  }

  /**
   * Fills in `waiting` for the queued tasks among `tasks`: one look at the tenant's
   * connected agents, only when there is a queued task.
   */
  async #withWaiting(tenantId: string, tasks: Task[]): Promise<Task[]> {
    if (!tasks.some((t) => t.state === 'queued')) return tasks;
    const offered = await this.#agents.offeredCapabilities(tenantId);
    return tasks.map((t) =>
      t.state === 'queued' ? { ...t, waiting: waitingFor(t.capabilities, offered) } : t,
    );
  }

  async list(
    principal: Principal,
    options: ListTasksOptions,
  ): Promise<{ items: Task[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('tsk_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tasks')
      .where('tenant_id', '=', principal.tenant.id)
      // Newest first: ids are time-ordered.
      .orderBy('id', 'desc');
    if (before !== undefined) query = query.where('id', '<', before);
    if (options.states && options.states.length > 0)
      query = query.where('state', 'in', options.states);
    if (options.template !== undefined) {
      query = options.template.startsWith('tpl_')
        ? query.where('template_id', '=', options.template)
        : query.where('template_name', '=', options.template);
    }
    if (options.agent_id !== undefined) query = query.where('agent_id', '=', options.agent_id);
    if (options.session_id !== undefined) {
      query = query.where('session_id', '=', options.session_id);
    }
    if (options.instance_id !== undefined) {
      query = query.where('instance_id', '=', options.instance_id);
    }
    if (options.created_after !== undefined) {
      query = query.where('created_at', '>=', new Date(options.created_after).toISOString());
    }
    if (options.created_before !== undefined) {
      query = query.where('created_at', '<', new Date(options.created_before).toISOString());
    }
    for (const [key, value] of Object.entries(options.labels ?? {})) {
      query = query.where((eb) =>
        eb.exists(
          eb
            .selectFrom('task_labels')
            .select('task_labels.key')
            .whereRef('task_labels.task_id', '=', 'tasks.id')
            .where('task_labels.key', '=', key)
            .where('task_labels.value', '=', value),
        ),
      );
    }
    // Inputs and results can be large: sized first, so that a page reads no more of them
    // than it sends.
    const page = await fetchPage({
      limit,
      maxBytes: options.maxBytes,
      sizes: async (n) =>
        (
          await query
            .select(bytesOf('input', 'result', 'error', 'labels', 'capabilities').as('size'))
            .limit(n)
            .execute()
        ).map((r) => Number(r.size) + ROW_OVERHEAD_BYTES),
      rows: (n) => query.selectAll().limit(n).execute(),
      map: view,
    });
    return { ...page, items: await this.#withWaiting(principal.tenant.id, page.items) };
  }

  /**
   * Cancels a task. A queued task, or one awaiting an approval (no agent holds it), ends
   * `cancelled` at once. An assigned or running task
   * gets a cancellation request that the agent pool delivers to its agent. A finished
   * task cannot be cancelled (409). Cancelling twice is harmless.
   */
  async cancel(principal: Principal, id: string): Promise<Task> {
    // A cancelled queued task makes room at once: the next submit counts the queue again.
    this.#queuedLimit.forget(principal.tenant.id);
    const tenantId = principal.tenant.id;
    let later: (() => void) | undefined;
    const task = await this.#events.transaction(async (trx, emit) => {
      const row = await this.#find(trx, tenantId, id, { lock: true });
      const now = new Date().toISOString();
      switch (row.state) {
        case 'queued':
        case 'awaiting_approval': {
          const updated = await this.#transition(trx, row, [row.state], {
            state: 'cancelled',
            cancel_requested_at: now,
            finished_at: now,
            waiting: null,
          });
          await emitTaskEvents(emit, updated, [
            stateEvent(updated, {
              reason:
                row.state === 'queued'
                  ? 'cancelled while queued'
                  : 'cancelled while awaiting approval',
            }),
          ]);
          return view(updated);
        }
        case 'assigned':
        case 'running': {
          if (row.cancel_requested_at !== null) return view(row);
          const deadline = new Date(Date.now() + this.#cancelGraceMs).toISOString();
          const updated = await this.#transition(trx, row, [row.state], {
            cancel_requested_at: now,
            cancel_deadline_at: deadline,
          });
          await emitTaskEvents(emit, updated, [
            {
              type: 'task.cancel_requested',
              data: { state: updated.state, attempt: updated.attempt, deadline_at: deadline },
            },
          ]);
          const agentId = updated.agent_id;
          if (agentId !== null) {
            const notice: AgentNotice = {
              op: 'cancel',
              task_id: id,
              attempt: updated.attempt,
              reason: 'requested',
              deadline_ms: this.#cancelGraceMs,
            };
            later = () => this.#bus.publish(agentSubject(tenantId, agentId), notice);
          }
          return view(updated);
        }
        case 'succeeded':
        case 'failed':
        case 'cancelled':
        case 'timed_out':
        case 'dead':
          if (row.state === 'cancelled') return view(row);
          throw new ApiError(
            'TASK_ALREADY_FINISHED',
            `Task "${id}" has already ended (${row.state})`,
          );
      }
    });
    later?.(); // after the commit: the agent's node reads the request from the store
    return task;
  }

  /** Puts a task that ended without success back in the queue, with its attempts reset. */
  async retry(principal: Principal, id: string): Promise<Task> {
    const task = await this.#retry(principal, id);
    this.#wakeDispatch(principal.tenant.id);
    return task;
  }

  async #retry(principal: Principal, id: string): Promise<Task> {
    const tenantId = principal.tenant.id;
    return this.#events.transaction(async (trx, emit) => {
      const row = await this.#find(trx, tenantId, id, { lock: true });
      if (!isRetryableState(row.state)) {
        throw new ApiError(
          'TASK_NOT_RETRYABLE',
          `Task "${id}" is ${row.state}; only failed, dead, cancelled or timed-out tasks can be retried`,
        );
      }
      const updated = await this.#transition(trx, row, [row.state], {
        state: 'queued',
        ...NOT_STARTED,
        queued_at: new Date().toISOString(),
      });
      await emitTaskEvents(emit, updated, [
        { type: 'task.retried', data: { previous_state: row.state } },
        stateEvent(updated, { priority: updated.priority }),
      ]);
      return view(updated);
    });
  }

  /**
   * Waits until the task ends or `timeoutMs` passes, then resolves to its current state.
   * Ends early, with the current state, when `signal` aborts (the client went away).
   */
  async waitForEnd(
    principal: Principal,
    id: string,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<Task> {
    const current = await this.get(principal, id);
    if (isTerminalState(current.state)) return current;
    const stop = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
    const head = (await this.#events.head(principal.tenant.id, taskStream(id))) ?? 0;
    for await (const _event of this.#follow(principal, id, head, stop)) {
      // Draining to the terminal event; the task row is the answer.
    }
    return this.get(principal, id);
  }

  /**
   * Checks a request for the task's events before any is sent: TASK_NOT_FOUND, or
   * VALIDATION_FAILED when `after` is beyond the newest event. Resolves to `ended` when the
   * task is over and the reader has everything (nothing will come), else `open`.
   */
  async openEvents(principal: Principal, id: string, after: number): Promise<'open' | 'ended'> {
    const task = await this.#find(this.#store.db, principal.tenant.id, id);
    const head = (await this.#events.head(principal.tenant.id, taskStream(id))) ?? 0;
    if (after > head) {
      const message = `is beyond the newest event of this task (${head})`;
      throw new ApiError('VALIDATION_FAILED', `after: ${message}`, {
        details: { fields: [{ field: 'querystring.after', message }] },
      });
    }
    return isTerminalState(task.state) && after >= head ? 'ended' : 'open';
  }

  /**
   * The task's events after `after`, then live ones, until the task is over and every event
   * was delivered (the terminal one last, unless retention trimmed it), or `signal` aborts.
   * Check the request with `openEvents` first.
   */
  events(
    principal: Principal,
    id: string,
    after: number,
    signal: AbortSignal,
  ): AsyncIterable<StreamItem> {
    return this.#follow(principal, id, after, signal);
  }

  #follow(
    principal: Principal,
    id: string,
    after: number,
    signal: AbortSignal,
  ): AsyncIterable<StreamItem> {
    const tenantId = principal.tenant.id;
    return this.#events.follow(tenantId, taskStream(id), after, {
      signal,
      isLast: (event: StreamEvent) => isTerminalEvent(event),
      endWhenCaughtUp: async () => {
        const state = await this.stateOf(tenantId, id);
        return state === undefined || isTerminalState(state);
      },
    });
  }

  async #find(
    db: Transaction<Database> | RelationalStore['db'],
    tenantId: string,
    id: string,
    options: { lock?: boolean } = {},
  ): Promise<TasksTable> {
    let query = db
      .selectFrom('tasks')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id);
    if (options.lock && this.#store.kind === 'postgres') query = query.forUpdate();
    const row = await query.executeTakeFirst();
    if (row === undefined) throw taskNotFound(id);
    return row;
  }

  /** Applies `changes` only if the task is still in one of `from`; the store decides races. */
  async #transition(
    trx: Transaction<Database>,
    row: TasksTable,
    from: TaskState[],
    changes: Partial<TasksTable>,
  ): Promise<TasksTable> {
    const updated = await trx
      .updateTable('tasks')
      .set({ ...changes, updated_at: new Date().toISOString() })
      .where('id', '=', row.id)
      .where((eb) =>
        filterOnly(eb.and([eb('tenant_id', '=', row.tenant_id), eb('state', 'in', from)])),
      )
      .returningAll()
      .executeTakeFirst();
    if (updated === undefined) {
      throw new ApiError(
        'TASK_STATE_CHANGED',
        `Task "${row.id}" changed state meanwhile; try again`,
      );
    }
    return updated;
  }

  async #byIdempotencyKey(tenantId: string, key: string): Promise<TasksTable | undefined> {
    return this.#store.db
      .selectFrom('tasks')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('idempotency_key', '=', key)
      .executeTakeFirst();
  }
}

function isTerminalEvent(event: StreamEvent): boolean {
  return TERMINAL_EVENT_TYPES.has(event.type);
}
