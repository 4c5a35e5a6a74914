import type {
  AgentStatus,
  CreateApiKey,
  CreateSession,
  CreateTask,
  CreateTemplate,
  CreateTenant,
  Role,
  SessionEvent as SessionEventSchema,
  StreamGap,
  Task,
  TaskEvent,
  TaskState,
  UpdateTemplate,
  UpdateTenant,
} from '@orchestra/protocol';
import type { OrchestraError } from './errors.ts';

// The SDK's types. The wire shapes (what the server sends and takes) are the static types of
// @orchestra/protocol's schemas, re-exported or refined here, so that a field or a state is
// defined in one place (decision 0014); what is only the SDK's (options, inputs that also
// take a Date, outcomes) is declared here.

export type {
  Agent,
  AgentStatus,
  ApiKey,
  ApiKeyWithSecret,
  ClusterNode,
  CreatedTenant,
  DependencyCheck,
  ErrorCode,
  FinishedCounts,
  MultitaskStrategy,
  Percentiles,
  Readiness,
  Role,
  Session,
  Stats,
  StatsMinute,
  StrategyName as TemplateStrategy,
  StreamGap,
  Task,
  TaskError,
  TaskEvent,
  TaskState,
  TaskWaiting,
  Template,
  TemplateVersionSummary,
  Tenant,
  TenantLimits,
  WhoAmI,
} from '@orchestra/protocol';

/** What `tenants.create` takes: the tenant's id (2 to 63 lowercase letters, digits, dashes) and name. */
export type CreateTenantInput = CreateTenant;

/** A change to a tenant: a new name, limits to set (a number) or remove (`null`). */
export type UpdateTenantInput = UpdateTenant;

/** What `apiKeys.create` takes. */
export interface CreateApiKeyInput extends Omit<CreateApiKey, 'expires_at'> {
  /** ISO-8601 date-time in the future, or a Date. Omit for a key that never expires. */
  expires_at?: string | Date;
}

/**
 * What a version of a template defines. An update replaces all of it: a field left out
 * goes back to its default, it does not keep its previous value.
 */
export type TemplateDefinition = UpdateTemplate;

/** What `templates.create` takes: a name and what the first version defines. */
export type CreateTemplateInput = CreateTemplate;

/** What `tasks.create` takes. */
export type CreateTaskInput = CreateTask;

/** What `sessions.create` takes. */
export type CreateSessionInput = CreateSession;

/** A page of a list; pass `next_cursor` as `cursor` to get the next one (null: last page). */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface PageOptions {
  /** 1 to 200; the server's default is 50. */
  limit?: number;
  cursor?: string;
}

export interface ListApiKeysOptions extends PageOptions {
  role?: Role;
  /** Include revoked keys (default false). */
  include_revoked?: boolean;
}

export interface ListTemplatesOptions extends PageOptions {
  /** Only templates whose name starts with this. */
  name_prefix?: string;
  /** Only templates whose latest version carries every one of these labels (up to 20). */
  labels?: Record<string, string>;
}

/** What `tasks.createDetailed` resolves to. */
export interface CreateTaskResult {
  task: Task;
  /**
   * True when the idempotency key had been used before: `task` is the task submitted
   * then, and nothing new was created.
   */
  replayed: boolean;
}

/**
 * What became of one task of `tasks.createMany`: created (or replayed, for a used
 * idempotency key), or refused with the error a single submit would have got.
 */
export type CreateTaskOutcome =
  | { ok: true; task: Task; replayed: boolean }
  | { ok: false; error: OrchestraError };

export interface ListTasksOptions extends PageOptions {
  /** Only tasks in this state, or in any of these states (up to 8). */
  state?: TaskState | TaskState[];
  /** Only tasks of this template: its id (`tpl_…`) or name. */
  template?: string;
  /** Only tasks held by this agent. */
  agent_id?: string;
  /** Only tasks of this session. */
  session_id?: string;
  /** Only tasks that work in this instance. */
  instance_id?: string;
  /** Only tasks carrying every one of these labels. */
  labels?: Record<string, string>;
  /** Only tasks created at or after this time (ISO-8601 date-time or a Date). */
  created_after?: string | Date;
  /** Only tasks created before this time (ISO-8601 date-time or a Date). */
  created_before?: string | Date;
}

/** An item of `tasks.events`: an event, or a gap (`'offset' in item` tells them apart). */
export type TaskStreamItem = TaskEvent | StreamGap;

export interface ListAgentsOptions extends PageOptions {
  /** Only agents in this status, or in any of these statuses. */
  status?: AgentStatus | AgentStatus[];
  /** Only agents that offer this capability. */
  capability?: string;
}

export interface StatsOptions {
  /** Minutes to summarize, 1 to 60; default 15. */
  minutes?: number;
  /** Only tasks of this template (id or name); one that does not exist rejects with `TEMPLATE_NOT_FOUND`. */
  template?: string;
}

export interface ListSessionsOptions extends PageOptions {
  /** Sessions that carry every one of these labels. */
  labels?: Record<string, string>;
}

/**
 * An event of a session's history: `session.created` (its `data` is the session), or one
 * of a task's events, whose `data` is the task event's with the task's id added. The wire
 * schema leaves `data` open; this names the `task_id` it carries.
 */
export interface SessionEvent extends Omit<SessionEventSchema, 'data'> {
  data: SessionEventData;
}

/** The `data` of a session event. */
export interface SessionEventData {
  /** The task the event is about: on every event but `session.created`. */
  task_id?: string;
  [field: string]: unknown;
}

/** An item of a session's event stream: an event, or a gap where retention removed some. */
export type SessionStreamItem = SessionEvent | StreamGap;

export interface SessionEventsOptions {
  /** Start after this offset; default 0, from the first retained event. */
  after?: number;
  /** Default true: go on with live events until `signal` aborts; false: end when caught up. */
  follow?: boolean;
  /** Stops the iteration: the iterator then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Reconnections in a row that may fail before the iterator gives up; default 8. */
  maxReconnects?: number;
}
