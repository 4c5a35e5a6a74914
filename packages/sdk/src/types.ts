import type { OrchestraError } from './errors.ts';

export type Role = 'admin' | 'operator' | 'agent' | 'viewer';

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

/**
 * The limits a system admin may set per tenant. Each overrides one node setting for that
 * tenant: the `*_max_bytes` ones bound one stored value (as JSON text; larger ones get 413
 * `VALUE_TOO_LARGE`), the `max_*` ones how many of a kind the tenant may hold (one more
 * gets 409 `TENANT_LIMIT_REACHED`; 0 means no limit), and `max_concurrency` how many of
 * its tasks run at once.
 */
export interface TenantLimits {
  /** ORCHESTRA_TASK_INPUT_MAX_BYTES */
  task_input_max_bytes: number;
  /** ORCHESTRA_TASK_OUTPUT_MAX_BYTES */
  task_output_max_bytes: number;
  /** ORCHESTRA_TASK_EVENT_MAX_BYTES */
  task_event_max_bytes: number;
  /** ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES */
  topic_message_max_bytes: number;
  /** ORCHESTRA_CONFIG_MAX_VALUE_BYTES */
  config_value_max_bytes: number;
  /** ORCHESTRA_TENANT_MAX_CONCURRENCY */
  max_concurrency: number;
  /** ORCHESTRA_TENANT_MAX_QUEUED_TASKS */
  max_queued_tasks: number;
  /** ORCHESTRA_TENANT_MAX_TOPICS */
  max_topics: number;
  /** ORCHESTRA_TENANT_MAX_CONFIG_KEYS */
  max_config_keys: number;
  /** ORCHESTRA_TENANT_MAX_TEMPLATES */
  max_templates: number;
  /** ORCHESTRA_TENANT_MAX_SESSIONS */
  max_sessions: number;
}

export interface Tenant {
  id: string;
  name: string;
  kind: 'system' | 'standard';
  created_at: string;
  /** Every limit as it applies to this tenant: its own where set, else the node's setting. */
  limits: TenantLimits;
  /** The limits set for this tenant. */
  limit_overrides: Partial<TenantLimits>;
}

/** A change to a tenant: a new name, limits to set (a number) or remove (`null`). */
export interface UpdateTenantInput {
  name?: string;
  limits?: { [K in keyof TenantLimits]?: number | null };
}

export interface ApiKey {
  id: string;
  tenant_id: string;
  name: string;
  role: Role;
  prefix: string;
  status: 'active' | 'revoked' | 'expired';
  created_at: string;
  created_by: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

/** A newly created key; `secret` is shown only once. */
export interface ApiKeyWithSecret extends ApiKey {
  secret: string;
}

export interface CreateApiKeyInput {
  name: string;
  role: Role;
  /** ISO-8601 date-time in the future, or a Date. Omit for a key that never expires. */
  expires_at?: string | Date;
}

export interface ListApiKeysOptions extends PageOptions {
  role?: Role;
  /** Include revoked keys (default false). */
  include_revoked?: boolean;
}

export interface CreateTenantInput {
  /** Lowercase letters, digits and dashes; 2 to 63 characters. */
  id: string;
  name?: string;
}

export interface CreatedTenant {
  tenant: Tenant;
  admin_key: ApiKeyWithSecret;
}

export interface WhoAmI {
  tenant: { id: string; name: string; kind: string };
  role: Role;
  credential:
    | { type: 'api_key'; id: string; name: string; prefix: string; expires_at: string | null }
    | { type: 'jwt'; subject: string; issuer: string | null; expires_at: string | null };
}

/** A dependency's answer in `Readiness.checks`. */
export interface DependencyCheck {
  status: 'ok' | 'failed';
  /** Round trip of the check, when it answered. */
  latency_ms?: number;
}

/**
 * What `GET /readyz` says of the node that answered: `degraded` when etcd, NATS or Redis
 * does not answer (the node still serves what does not need them).
 */
export interface Readiness {
  status: 'ready' | 'degraded';
  version: string;
  instance_id: string;
  store: string;
  checks: {
    store: { status: 'ok'; latency_ms: number };
    kv: DependencyCheck & { backend: 'embedded' | 'etcd' };
    bus: DependencyCheck & { backend: 'in-process' | 'nats' };
    rate_limit: DependencyCheck & { backend: 'off' | 'memory' | 'redis' };
  };
}

/** An Orchestra node of the cluster, as it last reported itself (`GET /v1/cluster/nodes`). */
export interface ClusterNode {
  id: string;
  url: string;
  version: string;
  started_at: string;
  /**
   * When it last rewrote its entry (with its load), every 30 s. Its lease is renewed far more
   * often: a node that stops renewing drops out of the list within 10 s.
   */
  seen_at: string;
  store: string;
  kv: string;
  lease: string;
  /** Whether it runs the service registry's health checks. */
  health_checker: boolean;
  load: {
    rss_bytes: number;
    event_loop_delay_ms: number;
    agents: number;
    realtime_connections: number;
  };
}

/** How tasks of a template choose an agent. */
export type TemplateStrategy =
  | 'round_robin'
  | 'weighted'
  | 'least_connections'
  | 'latency'
  | 'resource'
  | 'consistent_hash';

/**
 * What a version of a template defines. An update replaces all of it: a field left out
 * goes back to its default, it does not keep its previous value.
 */
export interface TemplateDefinition {
  /** Up to 2000 characters; default empty. */
  description?: string;
  /** Up to 50 `key: value` pairs to find templates by; keys are lowercase `[a-z0-9._/-]`. */
  labels?: Record<string, string>;
  /** Capabilities an agent must have to run tasks of this template; no duplicates. */
  capabilities?: string[];
  /** JSON Schema (draft-07, or 2020-12 by `$schema`) that task input must match. */
  input_schema?: Record<string, unknown>;
  /** JSON Schema that task results should match. */
  output_schema?: Record<string, unknown>;
  /** JSON Schema that `config` must match. */
  config_schema?: Record<string, unknown>;
  /** Free configuration handed to agents. */
  config?: Record<string, unknown>;
  /** 1000 ms to 7 days; default 300000 (5 minutes). */
  default_timeout_ms?: number;
  /** 1 to 100; default 3. */
  default_max_attempts?: number;
  /** -1000 to 1000; default 0. */
  default_priority?: number;
  /** Default `least_connections`. */
  strategy?: TemplateStrategy;
  /**
   * 1 to 10000: how many tasks of this template that share a `concurrency_key` may be
   * assigned or running at once. Null or left out: the server's
   * ORCHESTRA_CONCURRENCY_KEY_LIMIT setting applies.
   */
  concurrency_key_limit?: number | null;
}

export interface CreateTemplateInput extends TemplateDefinition {
  /**
   * Lowercase letters, digits, ".", "_" and "-"; 1 to 100 characters; unique in the tenant;
   * cannot start with "tpl_". It never changes.
   */
  name: string;
}

/** A template at one version, with every default filled in. */
export interface Template {
  /** `tpl_…`; usable wherever a name is. */
  id: string;
  tenant_id: string;
  name: string;
  /** The version the definition fields come from. */
  version: number;
  /** The version `latest` points to: the newest, unless rolled back. */
  latest_version: number;
  /** The newest version ever created; the next update creates this + 1. */
  highest_version: number;
  description: string;
  labels: Record<string, string>;
  capabilities: string[];
  input_schema: Record<string, unknown> | null;
  output_schema: Record<string, unknown> | null;
  config_schema: Record<string, unknown> | null;
  config: Record<string, unknown>;
  default_timeout_ms: number;
  default_max_attempts: number;
  default_priority: number;
  strategy: TemplateStrategy;
  /** Null: the server's ORCHESTRA_CONCURRENCY_KEY_LIMIT setting applies. */
  concurrency_key_limit: number | null;
  created_at: string;
  updated_at: string;
  /** When `version` was created. */
  version_created_at: string;
  /** The credential that created `version`. */
  version_created_by: string;
}

export interface TemplateVersionSummary {
  version: number;
  created_at: string;
  /** The credential that created the version. */
  created_by: string;
  /** Whether `latest` points to this version. */
  latest: boolean;
}

export interface ListTemplatesOptions extends PageOptions {
  /** Only templates whose name starts with this. */
  name_prefix?: string;
  /** Only templates whose latest version carries every one of these labels (up to 20). */
  labels?: Record<string, string>;
}

/**
 * Where a task is in its life: queued → assigned → running → succeeded | failed |
 * cancelled | timed_out; dead after the last failed attempt. The last five are terminal:
 * nothing more happens to the task unless someone retries it (see `isTerminalState`).
 */
export type TaskState =
  | 'queued'
  | 'assigned'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'timed_out'
  | 'dead';

/** Why a task failed, as its agent or the server reported it. */
export interface TaskError {
  code: string;
  message: string;
  /** Whether another attempt could succeed. */
  retryable: boolean;
  /** What the agent added to its `task.fail` (a `TaskFailedError`'s `details`), if anything. */
  details?: Record<string, unknown>;
}

/** A unit of work for an agent, with every default filled in. */
export interface Task {
  /** `tsk_…`; ids are time-ordered. */
  id: string;
  tenant_id: string;
  /** The template version the task runs, or null for a task routed by capabilities alone. */
  template: { id: string; name: string; version: number } | null;
  /** What an agent must offer to run it: the template's plus the task's own. */
  capabilities: string[];
  /** The input as submitted; null when none was given. */
  input: unknown;
  state: TaskState;
  priority: number;
  timeout_ms: number;
  max_attempts: number;
  /** Attempts started so far; a retry starts again from 0. */
  attempt: number;
  strategy: TemplateStrategy;
  concurrency_key: string | null;
  /** The session the task runs in, if any. */
  session_id: string | null;
  idempotency_key: string | null;
  labels: Record<string, string>;
  /** The agent holding the task, while one does. */
  agent_id: string | null;
  /** What the agent returned, once succeeded; else null. */
  result: unknown;
  error: TaskError | null;
  /** When a cancellation was asked for a task an agent holds; null otherwise. */
  cancel_requested_at: string | null;
  /** A queued retry waits until then (backoff); null when it may run at once. */
  not_before: string | null;
  /** When the current attempt was handed to an agent; null while queued. */
  assigned_at: string | null;
  /** When the agent started the current attempt; null until it did. */
  started_at: string | null;
  /** When the current attempt times out; null until an agent is given the task. */
  deadline_at: string | null;
  /** The credential that submitted it. */
  created_by: string;
  created_at: string;
  updated_at: string;
  /** When it reached a terminal state; null while it runs or after a retry. */
  finished_at: string | null;
  /**
   * Why a queued task cannot be placed now, beyond waiting for its turn or a free slot:
   * no connected agent offers what it needs. Null when an agent could take it, and for
   * tasks not queued. The task stays queued and runs once such an agent connects.
   */
  waiting: TaskWaiting | null;
}

export interface TaskWaiting {
  reason: 'no_agent';
  /** Such as "no connected agent offers capability gpu". */
  message: string;
  /** The capabilities nobody offers (all of the task's when no agent offers them together). */
  capabilities: string[];
}

export interface CreateTaskInput {
  /** Template id (`tpl_…`) or name. Give a template, `capabilities`, or both. */
  template?: string;
  /** Pins a template version; default: the one `latest` points to. Needs `template`. */
  template_version?: number;
  /** Routes by capabilities, instead of or on top of the template's; no duplicates. */
  capabilities?: string[];
  /** Any JSON value; checked against the template's input schema. Default null. */
  input?: unknown;
  /**
   * Submitting the same key again in this tenant returns the first task, whatever the rest
   * of the input says (see `createDetailed` to learn which happened).
   */
  idempotency_key?: string;
  /** -1000 to 1000, higher runs first; default: the template's, else 0. */
  priority?: number;
  /** 1000 ms to 7 days; default: the template's, else 300000. */
  timeout_ms?: number;
  /** 1 to 100; default: the template's, else 3. */
  max_attempts?: number;
  concurrency_key?: string;
  /** Run in this session: in order with its other tasks, and part of its history. */
  session_id?: string;
  /** Default: the template's, else `least_connections`. */
  strategy?: TemplateStrategy;
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
  /** Only tasks carrying every one of these labels. */
  labels?: Record<string, string>;
  /** Only tasks created at or after this time (ISO-8601 date-time or a Date). */
  created_after?: string | Date;
  /** Only tasks created before this time (ISO-8601 date-time or a Date). */
  created_before?: string | Date;
}

/** One event in a task's stream. */
export interface TaskEvent {
  /** Position in the task's stream: 1, 2, 3, … without holes. */
  offset: number;
  /** Such as `task.queued`, `task.cancel_requested`, `task.retried`, `task.progress`, `task.succeeded`. */
  type: string;
  time: string;
  /** For state changes: `{ state, attempt, agent_id, … }`; else what the event carries. */
  data: unknown;
}

/**
 * Said instead of events that retention removed: the stream continues at `first_offset`.
 * It has no `offset`, which tells it apart from a `TaskEvent`.
 */
export interface StreamGap {
  type: 'stream.gap';
  /** The offset the reader asked to continue after. */
  after: number;
  /** The oldest offset still retained. */
  first_offset: number;
}

/** An item of `tasks.events`: an event, or a gap (`'offset' in item` tells them apart). */
export type TaskStreamItem = TaskEvent | StreamGap;

/**
 * Where an agent is: `online` (connected, with room for work), `busy` (connected, at its
 * max concurrency), `draining` (finishing what it holds, taking nothing new), `offline`
 * (not connected) or `error` (its connection was closed for breaking the protocol).
 */
export type AgentStatus = 'online' | 'busy' | 'draining' | 'offline' | 'error';

/** A process that runs tasks, as it registered with an `AgentWorker` and as it is now. */
export interface Agent {
  /** Chosen by the agent (`agentId`); stays the same across its reconnections. */
  id: string;
  tenant_id: string;
  name: string;
  status: AgentStatus;
  /** Why it is in that status, such as `drain requested`; null when nothing to say. */
  status_reason: string | null;
  capabilities: string[];
  /** Tasks it runs at once. */
  max_concurrency: number;
  /** Relative capacity for the `weighted` strategy. */
  weight: number;
  labels: Record<string, string>;
  /** The SDK it connected with, when it said. */
  sdk: { name: string; version: string } | null;
  /** Ids of the tasks it holds. */
  in_flight: string[];
  /** What its last heartbeat reported; null before the first one. */
  load: { in_flight: number; cpu?: number; memory?: number } | null;
  /** The Orchestra node holding its connection; null while it is not connected. */
  node_id: string | null;
  connected_at: string | null;
  last_heartbeat_at: string | null;
  /** Its tasks are dispatched again if no heartbeat arrives before then. */
  lease_expires_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface ListAgentsOptions extends PageOptions {
  /** Only agents in this status, or in any of these statuses. */
  status?: AgentStatus | AgentStatus[];
  /** Only agents that offer this capability. */
  capability?: string;
}

/** Nearest-rank percentiles of durations, in milliseconds. */
export interface Percentiles {
  /** How many durations they were computed from. */
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Tasks that ended, by how they ended. */
export interface FinishedCounts {
  succeeded: number;
  failed: number;
  cancelled: number;
  timed_out: number;
  dead: number;
}

/** One minute of `Stats.tasks.per_minute`. */
export interface StatsMinute {
  /** Start of the minute. */
  at: string;
  submitted: number;
  finished: FinishedCounts;
  /** Submission to success, of the tasks that succeeded in this minute; null: none did. */
  latency_ms: Percentiles | null;
}

/** The tenant's agents and tasks at a glance (`GET /v1/stats`). */
export interface Stats {
  at: string;
  /** Whole minutes, ending with the current one (which is still going). */
  window: { minutes: number; from: string; to: string };
  /** The template the task figures are limited to, or null. */
  template: string | null;
  agents: {
    total: number;
    by_status: Record<AgentStatus, number>;
    /** Tasks the online and busy agents may hold at once. */
    slots: number;
    /** Tasks the online and busy agents hold: the part of `slots` in use. */
    slots_used: number;
    /** Tasks any agent holds now (assigned or running), draining and disconnected ones too. */
    in_flight: number;
  };
  tasks: {
    /** Unfinished tasks now, by state. */
    active: { queued: number; assigned: number; running: number };
    oldest_queued_at: string | null;
    /** Submitted within the window. */
    submitted: number;
    /** Finished within the window, by final state. */
    finished: FinishedCounts;
    /**
     * Submission to success of the tasks that succeeded within the window. A task retried by
     * hand counts from its retry; automatic retries of failed attempts are part of it.
     */
    latency_ms: Percentiles | null;
    /** Submission to the start of the last attempt, of the same tasks. */
    queue_wait_ms: Percentiles | null;
    /** Every minute of the window, oldest first. */
    per_minute: StatsMinute[];
  };
}

export interface StatsOptions {
  /** Minutes to summarize, 1 to 60; default 15. */
  minutes?: number;
  /** Only tasks of this template (id or name); one that does not exist rejects with `TEMPLATE_NOT_FOUND`. */
  template?: string;
}

/** What happens to a task submitted while another task of the session is unfinished. */
export type MultitaskStrategy = 'reject' | 'enqueue' | 'interrupt';

export interface CreateSessionInput {
  name?: string;
  labels?: Record<string, string>;
  /** Free data for the application, returned as given. */
  metadata?: Record<string, unknown>;
  /** Default `enqueue`: tasks run one after the other, in submission order. */
  multitask_strategy?: MultitaskStrategy;
}

/** A session (thread): tasks submitted with its id run in order and share one history. */
export interface Session {
  id: string;
  tenant_id: string;
  name: string | null;
  labels: Record<string, string>;
  metadata: Record<string, unknown>;
  multitask_strategy: MultitaskStrategy;
  tasks: { total: number; unfinished: string[] };
  created_by: string;
  created_at: string;
  updated_at: string;
}

export interface ListSessionsOptions extends PageOptions {
  /** Sessions that carry every one of these labels. */
  labels?: Record<string, string>;
}

/**
 * An event of a session's history: `session.created` (its `data` is the session), or one
 * of a task's events, whose `data` is the task event's with the task's id added.
 */
export interface SessionEvent {
  /** Position in the session's stream: 1, 2, 3, … without holes. */
  offset: number;
  /** `session.created`, or a task event's type (`task.queued`, `task.output`, …). */
  type: string;
  time: string;
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
