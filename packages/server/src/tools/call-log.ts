import type { ToolCall, ToolCallStatus } from '@orchestra/protocol';
import type { EventLog } from '../events/index.ts';
import { ApiError } from '../platform/errors.ts';
import { DEFAULT_PAGE_LIMIT, decodeCursor, toPage } from '../platform/pagination.ts';
import { Statement } from '../store/statement.ts';
import type { RelationalStore } from '../store/store.ts';
import type { ToolCallsTable } from './tables.ts';

/** The event-log stream of a tenant's tool calls (the `tool-calls` topic). */
export function toolCallsStream(tenantId: string): string {
  return `tool-calls:${tenantId}`;
}

/** Every call's record: written once per call, so its text is fixed once. */
const RECORD_COLUMNS = [
  'id',
  'tenant_id',
  'tool',
  'tool_id',
  'tool_version',
  'source',
  'upstream',
  'credential',
  'role',
  'agent_id',
  'task_id',
  'session_id',
  'arguments',
  'status',
  'is_error',
  'error',
  'attempts',
  'duration_ms',
  'result_bytes',
  'approval_id',
  'created_at',
  'finished_at',
] as const satisfies readonly (keyof ToolCallsTable)[];
const INSERT_CALL = new Statement(
  `insert into tool_calls (${RECORD_COLUMNS.join(', ')}) values (${RECORD_COLUMNS.map(() => '?').join(', ')})`,
);

const MAX_STRING_CHARS = 1024;
const MAX_ARGUMENT_BYTES = 16 * 1024;
const MAX_DEPTH = 10;
const SENSITIVE_KEY =
  /pass(word|phrase)?|secret|token|api[_-]?key|authorization|credential|private[_-]?key/i;

/**
 * The arguments as the record keeps them: values of keys that name credentials, and any
 * secret value used by the call, replaced by `[redacted]`; strings over 1 KiB truncated;
 * the whole bounded to 16 KiB.
 */
export function recordedArguments(args: unknown, secretValues: readonly string[]): unknown {
  const scrub = (value: unknown, depth: number): unknown => {
    if (typeof value === 'string') {
      let text = value;
      for (const secret of secretValues)
        if (secret.length > 0) text = text.split(secret).join('[redacted]');
      return text.length > MAX_STRING_CHARS
        ? `${text.slice(0, MAX_STRING_CHARS)}…[truncated]`
        : text;
    }
    if (value === null || typeof value !== 'object') return value;
    if (depth >= MAX_DEPTH) return '[truncated]';
    if (Array.isArray(value)) return value.slice(0, 100).map((v) => scrub(v, depth + 1));
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value as Record<string, unknown>).slice(0, 100)) {
      out[key] = SENSITIVE_KEY.test(key) ? '[redacted]' : scrub(v, depth + 1);
    }
    return out;
  };
  const scrubbed = scrub(args, 0);
  const text = JSON.stringify(scrubbed) ?? 'null';
  return text.length > MAX_ARGUMENT_BYTES
    ? { truncated: true, preview: `${text.slice(0, MAX_ARGUMENT_BYTES)}…` }
    : scrubbed;
}

export interface ListToolCallsOptions {
  limit?: number | undefined;
  cursor?: string | undefined;
  tool?: string | undefined;
  status?: ToolCallStatus | undefined;
  credential?: string | undefined;
  agent_id?: string | undefined;
  session_id?: string | undefined;
  task_id?: string | undefined;
  maxBytes: number;
}

/** The record of every tool call of every tenant, newest first; each is also an event. */
export class ToolCallLog {
  readonly #store: RelationalStore;
  readonly #events: EventLog;

  constructor(deps: { store: RelationalStore; events: EventLog }) {
    this.#store = deps.store;
    this.#events = deps.events;
  }

  /**
   * Stores a call and appends it to the tenant's `tool-calls` stream. `sync: 'later'` for
   * a call that has finished or was refused: it resolves once committed, without waiting
   * for the disk (docs/decisions/0017), since the call has happened whatever the record's
   * fate and its answer need not wait for a sync. A call that waits stays `now`.
   */
  async record(call: ToolCall, sync: 'now' | 'later' = 'now'): Promise<void> {
    const row: ToolCallsTable = {
      id: call.id,
      tenant_id: call.tenant_id,
      tool: call.tool,
      tool_id: call.tool_id,
      tool_version: call.tool_version,
      source: call.source,
      upstream: call.upstream,
      credential: call.caller.credential,
      role: call.caller.role,
      agent_id: call.caller.agent_id,
      task_id: call.caller.task_id,
      session_id: call.caller.session_id,
      arguments: JSON.stringify(call.arguments ?? null),
      status: call.status,
      is_error: call.is_error ? 1 : 0,
      error: call.error === null ? null : JSON.stringify(call.error),
      attempts: call.attempts,
      duration_ms: call.duration_ms,
      result_bytes: call.result_bytes,
      approval_id: call.approval_id,
      created_at: call.created_at,
      finished_at: call.finished_at,
    };
    await this.#events.transaction(
      async (trx, emit) => {
        await INSERT_CALL.run(
          trx,
          this.#store.kind,
          RECORD_COLUMNS.map((column) => row[column]),
        );
        await emit(toolCallsStream(call.tenant_id), call.tenant_id, [
          { type: `tool_call.${call.status}`, data: call },
        ]);
      },
      { sync },
    );
  }

  /**
   * Moves a recorded call on (approved, run, rejected, expired) and appends its new state to
   * the stream. `from`: the statuses it may move from; resolves false when it was in none.
   */
  async update(call: ToolCall, from: readonly ToolCallStatus[]): Promise<boolean> {
    return this.#events.transaction(async (trx, emit) => {
      const result = await trx
        .updateTable('tool_calls')
        .set({
          status: call.status,
          is_error: call.is_error ? 1 : 0,
          error: call.error === null ? null : JSON.stringify(call.error),
          arguments: JSON.stringify(call.arguments ?? null),
          attempts: call.attempts,
          duration_ms: call.duration_ms,
          result_bytes: call.result_bytes,
          finished_at: call.finished_at,
        })
        .where('tenant_id', '=', call.tenant_id)
        .where('id', '=', call.id)
        .where('status', 'in', from)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) === 0) return false;
      await emit(toolCallsStream(call.tenant_id), call.tenant_id, [
        { type: `tool_call.${call.status}`, data: call },
      ]);
      return true;
    });
  }

  async get(tenantId: string, id: string): Promise<ToolCall> {
    const row = await this.#store.db
      .selectFrom('tool_calls')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (row === undefined)
      throw new ApiError('TOOL_CALL_NOT_FOUND', `Tool call "${id}" does not exist`);
    return view(row);
  }

  /** Newest first. */
  async list(
    tenantId: string,
    options: ListToolCallsOptions,
  ): Promise<{ items: ToolCall[]; next_cursor: string | null }> {
    const before = decodeCursor(options.cursor, (id) => id.startsWith('tc_'));
    const limit = options.limit ?? DEFAULT_PAGE_LIMIT;
    let query = this.#store.db
      .selectFrom('tool_calls')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (before !== undefined) query = query.where('id', '<', before);
    if (options.tool !== undefined) query = query.where('tool', '=', options.tool);
    if (options.status !== undefined) query = query.where('status', '=', options.status);
    if (options.credential !== undefined)
      query = query.where('credential', '=', options.credential);
    if (options.agent_id !== undefined) query = query.where('agent_id', '=', options.agent_id);
    if (options.session_id !== undefined)
      query = query.where('session_id', '=', options.session_id);
    if (options.task_id !== undefined) query = query.where('task_id', '=', options.task_id);
    return toPage(await query.execute(), limit, view, options.maxBytes);
  }
}

function view(row: ToolCallsTable): ToolCall {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    tool: row.tool,
    tool_id: row.tool_id,
    tool_version: row.tool_version,
    source: row.source,
    upstream: row.upstream,
    caller: {
      credential: row.credential,
      role: row.role as ToolCall['caller']['role'],
      agent_id: row.agent_id,
      task_id: row.task_id,
      session_id: row.session_id,
    },
    arguments: JSON.parse(row.arguments) as unknown,
    status: row.status as ToolCallStatus,
    is_error: row.is_error === 1,
    error: row.error === null ? null : (JSON.parse(row.error) as { code: string; message: string }),
    attempts: row.attempts,
    duration_ms: row.duration_ms,
    result_bytes: row.result_bytes,
    approval_id: row.approval_id,
    created_at: row.created_at,
    finished_at: row.finished_at,
  };
}
