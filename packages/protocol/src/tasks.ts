import Type, { type Static } from 'typebox';
import { Capability, Labels, NullableTimestamp, Timestamp } from './common.ts';
import { MAX_BATCH_TASKS, MAX_VERSION } from './constants.ts';
import { TASK_STATES } from './states.ts';
import { Strategy } from './templates.ts';

// Tasks (`/v1/tasks`): units of work for agents, and their event streams.

export const TaskState = Type.Enum([...TASK_STATES], {
  description:
    'queued → assigned → running → succeeded | failed | cancelled | timed_out; dead after the last failed attempt. `awaiting_approval`: a hosted agent’s run waits for an operator to decide on a tool call; it holds no agent and no attempt deadline, and goes back to `queued` once every approval it waits for is decided or expired.',
});
export type TaskState = Static<typeof TaskState>;

export const CreateTask = Type.Object(
  {
    /** Template id (`tpl_…`) or name. Give a template, `capabilities`, or both. */
    template: Type.Optional(
      Type.String({ minLength: 1, maxLength: 120, description: 'Template id (`tpl_…`) or name.' }),
    ),
    /** Pins a template version; default: the one `latest` points to. Needs `template`. */
    template_version: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_VERSION,
        description: 'Pin a version; default: the one `latest` points to.',
      }),
    ),
    /** Routes by capabilities, instead of or on top of the template's; no duplicates. */
    capabilities: Type.Optional(
      Type.Array(Capability, {
        minItems: 1,
        maxItems: 50,
        uniqueItems: true,
        description: 'Route by capabilities (instead of, or on top of, the template’s).',
      }),
    ),
    /** Any JSON value; checked against the template's input schema. Default null. */
    input: Type.Optional(
      Type.Unknown({ description: 'Checked against the template’s input schema.' }),
    ),
    /**
     * Submitting the same key again in this tenant returns the first task, whatever the rest
     * of the input says (see `createDetailed` to learn which happened).
     */
    idempotency_key: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: 'Submitting the same key again returns the first task, whatever the body.',
      }),
    ),
    /** -1000 to 1000, higher runs first; default: the template's, else 0. */
    priority: Type.Optional(
      Type.Integer({ minimum: -1000, maximum: 1000, description: 'Higher runs first.' }),
    ),
    /** 1000 ms to 7 days; default: the template's, else 300000. */
    timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 604_800_000 })),
    /** 1 to 100; default: the template's, else 3. */
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    concurrency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    /** Run in this session: in order with its other tasks, and part of its history. */
    session_id: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 100,
        description:
          'Run the task in this session: its events join the session’s history, and the session’s multitask strategy applies.',
      }),
    ),
    /** Default: the template's, else `least_connections`. */
    strategy: Type.Optional(Strategy),
    labels: Type.Optional(Labels),
    /** An instance (`ins_…`) the task works in: its agent gets the workspace tools. */
    instance: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description:
          'An instance (`ins_…`) of the tenant that the task works in: its agent gets the `workspace.*` tools for it, and a checkpoint is taken before each attempt (and after each turn of a hosted agent).',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTask = Static<typeof CreateTask>;

export const CreateTaskBatch = Type.Object(
  {
    tasks: Type.Array(CreateTask, {
      minItems: 1,
      maxItems: MAX_BATCH_TASKS,
      description: 'Submitted as if one after another, in this order.',
    }),
  },
  { additionalProperties: false },
);
export type CreateTaskBatch = Static<typeof CreateTaskBatch>;

export const TaskError = Type.Object(
  {
    code: Type.String(),
    message: Type.String(),
    /** Whether another attempt could succeed. */
    retryable: Type.Boolean(),
    /** What the agent added to its `task.fail` (a `TaskFailedError`'s `details`), if anything. */
    details: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description: 'What the agent added to its `task.fail`, if anything.',
      }),
    ),
  },
  {
    description:
      'Set once an attempt failed: the last failed attempt’s error. A task that then succeeded keeps it (its `state` and `result` say it succeeded); a task waiting in `queued` for a retry shows why the attempt before failed. Every attempt’s error is in its `task.attempt_failed` event.',
  },
);
/** Why a task failed, as its agent or the server reported it. */
export type TaskError = Static<typeof TaskError>;

/** Why a queued task cannot be placed now. */
export const TaskWaitingForAgent = Type.Object({
  reason: Type.Literal('no_agent', {
    description: 'No connected agent offers what the task needs (the task is `queued`).',
  }),
  /** Such as "no connected agent offers capability gpu". */
  message: Type.String({
    description: 'Such as "no connected agent offers capability gpu".',
  }),
  /** The capabilities nobody offers (all of the task's when no agent offers them together). */
  capabilities: Type.Array(Type.String(), {
    description:
      'The capabilities no connected agent offers; all of the task’s when each is offered but no agent offers them together.',
  }),
});
export type TaskWaitingForAgent = Static<typeof TaskWaitingForAgent>;

/** The tool calls a task in `awaiting_approval` waits for. */
export const TaskWaitingForApproval = Type.Object({
  reason: Type.Literal('approval', {
    description:
      'Tool calls of the run wait for an operator’s approval (the task is `awaiting_approval`).',
  }),
  /** Such as "waits for approval apr_… of tool deploy". */
  message: Type.String({ description: 'Such as "waits for approval apr_… of tool deploy".' }),
  approvals: Type.Array(
    Type.Object({
      /** The approval to decide: `POST /v1/tool-approvals/{id}/approve` or `…/reject`. */
      id: Type.String({ description: 'The approval to decide (`/v1/tool-approvals/{id}`).' }),
      tool: Type.String(),
      call_id: Type.String({ description: 'The tool call’s record (`/v1/tool-calls/{id}`).' }),
    }),
    { description: 'The run resumes once every one of them is decided or expired.' },
  ),
});
export type TaskWaitingForApproval = Static<typeof TaskWaitingForApproval>;

/** What a task waits for besides its turn (`Task.waiting`). */
export const TaskWaiting = Type.Union([TaskWaitingForAgent, TaskWaitingForApproval]);
export type TaskWaiting = Static<typeof TaskWaiting>;

export const Task = Type.Object(
  {
    /** `tsk_…`; ids are time-ordered. */
    id: Type.String(),
    tenant_id: Type.String(),
    /** The template version the task runs, or null for a task routed by capabilities alone. */
    template: Type.Union([
      Type.Object({ id: Type.String(), name: Type.String(), version: Type.Integer() }),
      Type.Null(),
    ]),
    /** What an agent must offer to run it: the template's plus the task's own. */
    capabilities: Type.Array(Type.String()),
    /** The input as submitted; null when none was given. */
    input: Type.Unknown(),
    state: TaskState,
    priority: Type.Integer(),
    timeout_ms: Type.Integer(),
    max_attempts: Type.Integer(),
    /** Attempts started so far; a retry starts again from 0. */
    attempt: Type.Integer({ description: 'Attempts started so far.' }),
    strategy: Strategy,
    concurrency_key: Type.Union([Type.String(), Type.Null()]),
    /** The session the task runs in, if any. */
    session_id: Type.Union([Type.String(), Type.Null()]),
    /** The instance the task works in, if any (`instance` at submit). */
    instance_id: Type.Union([Type.String(), Type.Null()], {
      description: 'The instance the task works in (`instance` at submit), or null.',
    }),
    idempotency_key: Type.Union([Type.String(), Type.Null()]),
    labels: Type.Record(Type.String(), Type.String()),
    /** The agent holding the task, while one does. */
    agent_id: Type.Union([Type.String(), Type.Null()]),
    /** What the agent returned, once succeeded; else null. */
    result: Type.Unknown({ description: 'What the agent returned, once succeeded; else null.' }),
    error: Type.Union([TaskError, Type.Null()]),
    /** When a cancellation was asked for a task an agent holds; null otherwise. */
    cancel_requested_at: NullableTimestamp,
    /** A queued retry waits until then (backoff); null when it may run at once. */
    not_before: Type.Union([Timestamp, Type.Null()], {
      description: 'A retried attempt waits until then (backoff).',
    }),
    /** When the current attempt was handed to an agent; null while queued. */
    assigned_at: NullableTimestamp,
    /** When the agent started the current attempt; null until it did. */
    started_at: NullableTimestamp,
    /** When the current attempt times out; null until an agent is given the task. */
    deadline_at: Type.Union([Timestamp, Type.Null()], {
      description: 'The current attempt times out then.',
    }),
    /** The credential that submitted it. */
    created_by: Type.String(),
    created_at: Timestamp,
    updated_at: Timestamp,
    /** When it reached a terminal state; null while it runs or after a retry. */
    finished_at: NullableTimestamp,
    /**
     * What the task waits for besides its turn or a free slot. A queued task: `no_agent` when
     * no connected agent offers what it needs (it stays queued and runs once one connects).
     * A task `awaiting_approval`: `approval`, with the approvals to decide. Null otherwise.
     */
    waiting: Type.Union([TaskWaiting, Type.Null()], {
      description:
        'What the task waits for besides its turn or a free slot. `no_agent` (a queued task, read when the task is read): no connected agent offers what it needs; the task stays queued and runs once one connects. `approval` (a task `awaiting_approval`): the approvals to decide. Null otherwise.',
    }),
  },
  { $id: 'Task' },
);
/** A unit of work for an agent, with every default filled in. */
export type Task = Static<typeof Task>;

export const TaskEvent = Type.Object(
  {
    /** Position in the task's stream: 1, 2, 3, … without holes. */
    offset: Type.Integer({ description: 'Position in the task’s stream; also the SSE id.' }),
    /** Such as `task.queued`, `task.cancel_requested`, `task.retried`, `task.progress`, `task.succeeded`. */
    type: Type.String({ description: 'task.queued, task.cancelled, task.retried, …; stream.gap' }),
    time: Timestamp,
    /** For state changes: `{ state, attempt, agent_id, … }`; else what the event carries. */
    data: Type.Unknown(),
  },
  { $id: 'TaskEvent' },
);
/** One event in a task's stream. */
export type TaskEvent = Static<typeof TaskEvent>;
