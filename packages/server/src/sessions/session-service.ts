import type { CreateSession, Session } from '@orchestra/protocol';
import type { Transaction } from 'kysely';
import type { EventLog, StreamItem } from '../events/index.ts';
import { credentialId, type Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import { newId } from '../platform/ids.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { TenantLimit } from '../platform/tenant-limit.ts';
import type { TenantLimitSource } from '../platform/tenant-limits.ts';
import type { Database } from '../store/database.ts';
import { countRows, type RelationalStore } from '../store/store.ts';
import { sessionStream } from './streams.ts';
import type { MultitaskStrategy, SessionsTable } from './tables.ts';

/** What the sessions module needs to know about tasks (from the tasks module). */
export interface SessionTasks {
  /** Ids of all the session's tasks, and of the unfinished ones, oldest first. */
  ofSession(tenantId: string, sessionId: string): Promise<{ all: string[]; unfinished: string[] }>;
  /** Deletes the event streams of these tasks within `trx` (their rows go with the session). */
  deleteEvents(trx: Transaction<Database>, tenantId: string, taskIds: string[]): Promise<void>;
  /** Ids of the session's unfinished tasks, read within `trx`. */
  unfinishedInSession(
    trx: Transaction<Database>,
    tenantId: string,
    sessionId: string,
  ): Promise<string[]>;
}

function sessionNotFound(id: string): ApiError {
  return new ApiError('SESSION_NOT_FOUND', `Session "${id}" does not exist`);
}

function view(row: SessionsTable, tasks: { all: string[]; unfinished: string[] }): Session {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    name: row.name,
    labels: JSON.parse(row.labels) as Record<string, string>,
    metadata: JSON.parse(row.metadata) as Record<string, unknown>,
    multitask_strategy: row.multitask_strategy,
    tasks: { total: tasks.all.length, unfinished: tasks.unfinished },
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

/**
 * Sessions (threads): a named group of tasks with one ordered history. Every event of
 * every task in a session is also appended to the session's stream, in the transaction
 * that appends it to the task's, so the history needs no merging.
 */
export class SessionService {
  readonly #store: RelationalStore;
  readonly #events: EventLog;
  readonly #tasks: SessionTasks;
  readonly #limit: TenantLimit;

  /** `limits`: each tenant's most sessions. */
  constructor(deps: {
    store: RelationalStore;
    events: EventLog;
    tasks: SessionTasks;
    limits: TenantLimitSource;
  }) {
    this.#store = deps.store;
    this.#events = deps.events;
    this.#tasks = deps.tasks;
    this.#limit = new TenantLimit({
      name: 'max_sessions',
      limits: deps.limits,
      what: 'sessions',
      count: (tenantId) => countRows(this.#store.db, 'sessions', { tenant_id: tenantId }),
    });
  }

  async create(principal: Principal, input: CreateSession): Promise<Session> {
    await this.#limit.check(principal.tenant.id);
    const now = new Date().toISOString();
    const row: SessionsTable = {
      id: newId('ses'),
      tenant_id: principal.tenant.id,
      name: input.name ?? null,
      labels: JSON.stringify(input.labels ?? {}),
      metadata: JSON.stringify(input.metadata ?? {}),
      multitask_strategy: input.multitask_strategy ?? 'enqueue',
      created_by: credentialId(principal),
      created_at: now,
      updated_at: now,
    };
    await this.#events.transaction(async (trx, emit) => {
      await trx.insertInto('sessions').values(row).execute();
      const labels = Object.entries(input.labels ?? {}).map(([key, value]) => ({
        session_id: row.id,
        key,
        value,
      }));
      if (labels.length > 0) await trx.insertInto('session_labels').values(labels).execute();
      await emit(sessionStream(row.id), row.tenant_id, [
        {
          type: 'session.created',
          data: { name: row.name, multitask_strategy: row.multitask_strategy },
        },
      ]);
    });
    return view(row, { all: [], unfinished: [] });
  }

  async get(principal: Principal, id: string): Promise<Session> {
    const row = await this.#find(principal.tenant.id, id);
    return view(row, await this.#tasks.ofSession(principal.tenant.id, id));
  }

  /**
   * The session's labels, read alone (for tool policies at each agent's tool call);
   * SESSION_NOT_FOUND when there is no such session.
   */
  async labels(tenantId: string, id: string): Promise<Record<string, string>> {
    const row = await this.#store.db
      .selectFrom('sessions')
      .select('labels')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw sessionNotFound(id);
    return JSON.parse(row.labels) as Record<string, string>;
  }

  /** The session's multitask strategy; VALIDATION_FAILED naming `field` if there is none. */
  async strategyFor(tenantId: string, id: string, field: string): Promise<MultitaskStrategy> {
    const row = await this.#store.db
      .selectFrom('sessions')
      .select('multitask_strategy')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) {
      const message = `no session "${id}" in this tenant`;
      throw new ApiError('VALIDATION_FAILED', `${field}: ${message}`, {
        details: { fields: [{ field, message }] },
      });
    }
    return row.multitask_strategy;
  }

  async list(
    principal: Principal,
    options: {
      limit?: number | undefined;
      cursor?: string | undefined;
      labels?: Record<string, string>;
      maxBytes: number;
    },
  ): Promise<{ items: Session[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('ses_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('sessions')
      .selectAll()
      .where('tenant_id', '=', principal.tenant.id)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    for (const [key, value] of Object.entries(options.labels ?? {})) {
      query = query.where((eb) =>
        eb.exists(
          eb
            .selectFrom('session_labels')
            .select('session_labels.key')
            .whereRef('session_labels.session_id', '=', 'sessions.id')
            .where('session_labels.key', '=', key)
            .where('session_labels.value', '=', value),
        ),
      );
    }
    const rows = await query.execute();
    const tasks = new Map<string, { all: string[]; unfinished: string[] }>();
    for (const row of rows.slice(0, limit)) {
      tasks.set(row.id, await this.#tasks.ofSession(principal.tenant.id, row.id));
    }
    return toPage(
      rows,
      limit,
      (row) => view(row, tasks.get(row.id) ?? { all: [], unfinished: [] }),
      options.maxBytes,
    );
  }

  /**
   * Deletes the session with its tasks and their histories. Refused (SESSION_BUSY) while a
   * task of the session is unfinished: cancel it first.
   */
  /** Locks the session's row in `trx` on PostgreSQL (SQLite has one writer anyway). */
  async lock(trx: Transaction<Database>, tenantId: string, sessionId: string): Promise<void> {
    if (this.#store.kind !== 'postgres') return;
    await trx
      .selectFrom('sessions')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where('id', '=', sessionId)
      .forUpdate()
      .execute();
  }

  async delete(principal: Principal, id: string): Promise<void> {
    const tenantId = principal.tenant.id;
    await this.#find(tenantId, id);
    const { all, unfinished } = await this.#tasks.ofSession(tenantId, id);
    if (unfinished.length > 0) {
      throw new ApiError(
        'SESSION_BUSY',
        `Session "${id}" has unfinished tasks; cancel them first`,
        { details: { unfinished } },
      );
    }
    await this.#events.transaction(async (trx) => {
      // Tasks go with the session (foreign key); a task that started meanwhile blocks it.
      const started = await this.#tasks.unfinishedInSession(trx, tenantId, id);
      if (started.length > 0) {
        throw new ApiError(
          'SESSION_BUSY',
          `Session "${id}" has unfinished tasks; cancel them first`,
          { details: { unfinished: started } },
        );
      }
      await this.#events.deleteStreams(trx, tenantId, [sessionStream(id)]);
      await this.#tasks.deleteEvents(trx, tenantId, all);
      await trx
        .deleteFrom('sessions')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .execute();
    });
  }

  /** VALIDATION_FAILED when `after` is beyond the newest event; SESSION_NOT_FOUND. */
  async openEvents(principal: Principal, id: string, after: number): Promise<void> {
    await this.#find(principal.tenant.id, id);
    const head = (await this.#events.head(principal.tenant.id, sessionStream(id))) ?? 0;
    if (after > head) {
      const message = `is beyond the newest event of this session (${head})`;
      throw new ApiError('VALIDATION_FAILED', `after: ${message}`, {
        details: { fields: [{ field: 'querystring.after', message }] },
      });
    }
  }

  /**
   * The session's events after `after`, then live ones until `signal` aborts; with
   * `follow: false`, only those there are now.
   */
  events(
    principal: Principal,
    id: string,
    after: number,
    options: { signal: AbortSignal; follow: boolean },
  ): AsyncIterable<StreamItem> {
    return this.#events.follow(principal.tenant.id, sessionStream(id), after, {
      signal: options.signal,
      ...(options.follow ? {} : { endWhenCaughtUp: async () => true }),
    });
  }

  async #find(tenantId: string, id: string): Promise<SessionsTable> {
    const row = await this.#store.db
      .selectFrom('sessions')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined) throw sessionNotFound(id);
    return row;
  }
}
