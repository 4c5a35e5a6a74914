import Type, { type Static, type TSchema } from 'typebox';
import { Capability, Labels, NullableTimestamp, Timestamp } from './common.ts';
import { AGENT_ID_PATTERN, type MessageType } from './constants.ts';
import { AGENT_STATUSES, TASK_STATES } from './states.ts';
import { DeclaredTool, ToolAnnotations, ToolCall, ToolResult } from './tools.ts';

// Agents (`/v1/agents`) and the agent protocol: the frames an agent sends on the
// `/v1/agents/connect` WebSocket (docs/protocol.md).

export const AgentStatusSchema = Type.Enum([...AGENT_STATUSES], {
  description:
    'online: connected with room for work; busy: connected at its max concurrency; draining: finishing its tasks, taking no new ones; offline: not connected; error: its connection was closed for breaking the protocol.',
});

export const Agent = Type.Object(
  {
    /** Chosen by the agent (`agentId`); stays the same across its reconnections. */
    id: Type.String({ description: 'Chosen by the agent; stable across its reconnects.' }),
    tenant_id: Type.String(),
    name: Type.String(),
    status: AgentStatusSchema,
    /** Why it is in that status, such as `drain requested`; null when nothing to say. */
    status_reason: Type.Union([Type.String(), Type.Null()]),
    capabilities: Type.Array(Type.String()),
    /** Tasks it runs at once. */
    max_concurrency: Type.Integer(),
    /** Relative capacity for the `weighted` strategy. */
    weight: Type.Integer(),
    labels: Type.Record(Type.String(), Type.String()),
    /** The SDK it connected with, when it said. */
    sdk: Type.Union([Type.Object({ name: Type.String(), version: Type.String() }), Type.Null()]),
    /** Ids of the tasks it holds. */
    in_flight: Type.Array(Type.String(), { description: 'Ids of the tasks it holds.' }),
    /** What its last heartbeat reported; null before the first one. */
    load: Type.Union([
      Type.Object({
        in_flight: Type.Integer(),
        cpu: Type.Optional(Type.Number()),
        memory: Type.Optional(Type.Number()),
      }),
      Type.Null(),
    ]),
    /** The Orchestra node holding its connection; null while it is not connected. */
    node_id: Type.Union([Type.String(), Type.Null()], {
      description: 'The Orchestra node holding its connection.',
    }),
    connected_at: NullableTimestamp,
    last_heartbeat_at: NullableTimestamp,
    /** Its tasks are dispatched again if no heartbeat arrives before then. */
    lease_expires_at: Type.Union([Timestamp, Type.Null()], {
      description: 'Its tasks are dispatched again if no heartbeat arrives before then.',
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'Agent' },
);
/** A process that runs tasks, as it registered with an `AgentWorker` and as it is now. */
export type Agent = Static<typeof Agent>;

const TaskId = Type.String({ minLength: 1, maxLength: 100 });
const Attempt = Type.Integer({ minimum: 1, maximum: 1000 });

/** What an agent may send, by `payload.kind`, with the envelope type each must carry. */
export const AGENT_FRAMES = {
  register: {
    type: 'REQUEST',
    payload: {
      agent_id: Type.String({ pattern: AGENT_ID_PATTERN }),
      // Stored as text: no control characters (PostgreSQL cannot store U+0000 at all).
      name: Type.Optional(
        Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]*$' }),
      ),
      capabilities: Type.Array(Capability, { maxItems: 100, uniqueItems: true }),
      max_concurrency: Type.Integer({ minimum: 1, maximum: 10_000 }),
      weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
      labels: Type.Optional(Labels),
      sdk: Type.Optional(
        Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 100 }),
            version: Type.String({ minLength: 1, maxLength: 50 }),
          },
          { additionalProperties: false },
        ),
      ),
      in_flight: Type.Optional(
        Type.Array(
          Type.Object({ task_id: TaskId, attempt: Attempt }, { additionalProperties: false }),
          { maxItems: 10_000 },
        ),
      ),
      tools: Type.Optional(Type.Array(DeclaredTool, { maxItems: 100 })),
    },
  },
  heartbeat: {
    type: 'EVENT',
    payload: {
      in_flight: Type.Integer({ minimum: 0, maximum: 10_000 }),
      cpu: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
      memory: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    },
  },
  'task.accept': { type: 'RESPONSE', payload: { task_id: TaskId, attempt: Attempt } },
  'task.reject': {
    type: 'RESPONSE',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      reason: Type.String({ minLength: 1, maxLength: 1000 }),
    },
  },
  'task.event': {
    type: 'STREAM',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      seq: Type.Integer({ minimum: 1 }),
      event: Type.Union([
        Type.Object(
          {
            type: Type.Literal('progress'),
            current: Type.Number({ minimum: 0 }),
            total: Type.Optional(Type.Number({ minimum: 0 })),
            message: Type.Optional(Type.String({ maxLength: 1000 })),
          },
          { additionalProperties: false },
        ),
        Type.Object(
          { type: Type.Literal('output'), data: Type.Unknown() },
          { additionalProperties: false, required: ['type', 'data'] },
        ),
        Type.Object(
          {
            type: Type.Literal('log'),
            level: Type.Enum(['debug', 'info', 'warn', 'error']),
            message: Type.String({ maxLength: 10_000 }),
          },
          { additionalProperties: false },
        ),
        Type.Object(
          {
            type: Type.Literal('custom'),
            name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,99}$' }),
            data: Type.Optional(Type.Unknown()),
          },
          { additionalProperties: false },
        ),
      ]),
    },
  },
  'task.result': {
    type: 'REQUEST',
    payload: { task_id: TaskId, attempt: Attempt, output: Type.Unknown() },
  },
  'task.fail': {
    type: 'REQUEST',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      error: Type.Object(
        {
          code: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,100}$' })),
          message: Type.String({ maxLength: 10_000 }),
          retryable: Type.Optional(Type.Boolean()),
          details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        },
        { additionalProperties: false },
      ),
    },
  },
  'task.cancelled': { type: 'RESPONSE', payload: { task_id: TaskId, attempt: Attempt } },
  drain: { type: 'REQUEST', payload: {} },
  /** Lists the tools the agent may call through Orchestra; answered with `tool.list.result`. */
  'tool.list': {
    type: 'REQUEST',
    payload: {
      /** List for this task (which the agent must hold): policies about its template apply. */
      task_id: Type.Optional(TaskId),
      q: Type.Optional(
        Type.String({
          maxLength: 200,
          description: 'Words that must all appear in the name or the definition.',
        }),
      ),
      name_prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
      labels: Type.Optional(Labels),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
      cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    },
  },
  /**
   * Calls a tool through Orchestra, for one of the agent's tasks or for the agent itself;
   * answered with `tool.result` (also when the call is refused).
   */
  'tool.call': {
    type: 'REQUEST',
    payload: {
      request_id: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,100}$' }),
      task_id: Type.Optional(TaskId),
      name: Type.String({ minLength: 1, maxLength: 128 }),
      arguments: Type.Record(Type.String(), Type.Unknown()),
      wait_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 300_000 })),
    },
  },
} as const satisfies Record<string, { type: MessageType; payload: Record<string, TSchema> }>;

/** The kind (`payload.kind`) of a frame an agent sends. */
export type AgentFrameKind = keyof typeof AGENT_FRAMES;

/** The payload of a valid frame of kind `K` from an agent. */
export type AgentFramePayload<K extends AgentFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof AGENT_FRAMES)[K]['payload']>>
>;

/**
 * A task as the server hands it to an agent: the `task` of a `task.assign` frame (server to
 * agent). The agent answers for it with `task_id` and `attempt`.
 */
export const AssignedTask = Type.Object({
  id: Type.String(),
  attempt: Type.Integer(),
  input: Type.Unknown(),
  template: Type.Union([
    Type.Object({
      id: Type.String(),
      name: Type.String(),
      version: Type.Integer(),
      config: Type.Record(Type.String(), Type.Unknown()),
    }),
    Type.Null(),
  ]),
  capabilities: Type.Array(Type.String()),
  priority: Type.Integer(),
  timeout_ms: Type.Integer(),
  deadline_at: Type.String({ format: 'date-time' }),
  labels: Type.Record(Type.String(), Type.String()),
  concurrency_key: Type.Union([Type.String(), Type.Null()]),
  /** The session the task belongs to: its tasks run one at a time, in order. */
  session_id: Type.Union([Type.String(), Type.Null()]),
  /** The instance the task works in: the `workspace.*` tools act on it. */
  instance_id: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
});
export type AssignedTask = Static<typeof AssignedTask>;

/** An error frame, on either WebSocket protocol: a catalogued code, its message, details. */
export const ErrorFramePayload = {
  code: Type.String(),
  message: Type.String(),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
};

const CANCEL_REASONS = ['requested', 'timeout', 'lease_lost'] as const;

/**
 * A tool as an agent sees it (`tool.list.result`): what it needs to call it, not where its
 * calls go.
 */
export const AgentTool = Type.Object({
  name: Type.String(),
  version: Type.Integer(),
  description: Type.String(),
  input_schema: Type.Record(Type.String(), Type.Unknown()),
  output_schema: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  annotations: ToolAnnotations,
  destructive: Type.Boolean(),
  labels: Type.Record(Type.String(), Type.String()),
  timeout_ms: Type.Integer(),
});
export type AgentTool = Static<typeof AgentTool>;

/** The error of a refused tool call in `tool.result`: an error frame's fields. */
export const ToolCallError = Type.Object(ErrorFramePayload);
export type ToolCallError = Static<typeof ToolCallError>;

/**
 * What the server sends an agent (docs/protocol.md), by `payload.kind`: the fields of each
 * payload besides `kind`. The server's `send` is typed by it; a test checks the frames an
 * agent really receives against it.
 */
export const SERVER_AGENT_FRAMES = {
  registered: {
    agent_id: Type.String(),
    heartbeat_interval_ms: Type.Integer(),
    heartbeat_timeout_ms: Type.Integer(),
    max_frame_bytes: Type.Integer(),
    resumed: Type.Array(
      Type.Object({ task_id: Type.String(), attempt: Type.Integer(), last_seq: Type.Integer() }),
    ),
    lost: Type.Array(Type.String()),
    server: Type.Object({ version: Type.String(), instance_id: Type.String() }),
  },
  'task.assign': { task: AssignedTask },
  'task.cancel': {
    task_id: Type.String(),
    attempt: Type.Integer(),
    reason: Type.Enum([...CANCEL_REASONS]),
    deadline_ms: Type.Integer({ minimum: 0 }),
  },
  /** The answer to a task's outcome (`task_id`, `attempt`) or to `drain` (`in_flight`). */
  ack: {
    accepted: Type.Boolean(),
    task_id: Type.Optional(Type.String()),
    attempt: Type.Optional(Type.Integer()),
    state: Type.Optional(Type.Enum([...TASK_STATES])),
    reason: Type.Optional(Type.String()),
    in_flight: Type.Optional(Type.Array(Type.String())),
  },
  drain: { reason: Type.String() },
  error: ErrorFramePayload,
  'tool.list.result': {
    tools: Type.Array(AgentTool),
    /** Where the next page starts (`cursor` of the next `tool.list`); null on the last. */
    next_cursor: Type.Union([Type.String(), Type.Null()]),
  },
  /**
   * The answer to `tool.call`: the call's record and, once it ran, its result; or, for a
   * refused call, `error` (and the record when the refusal was recorded).
   */
  'tool.result': {
    request_id: Type.String(),
    call: Type.Optional(ToolCall),
    result: Type.Optional(Type.Union([ToolResult, Type.Null()])),
    error: Type.Optional(ToolCallError),
  },
} as const satisfies Record<string, Record<string, TSchema>>;

export type ServerAgentFrameKind = keyof typeof SERVER_AGENT_FRAMES;

/** The payload of a frame of kind `K` that the server sends an agent. */
export type ServerAgentFramePayload<K extends ServerAgentFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof SERVER_AGENT_FRAMES)[K]>>
>;
