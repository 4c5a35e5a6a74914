import Type, { type Static } from 'typebox';
import { Capability, Labels, NullableTimestamp, Timestamp } from './common.ts';
import { MAX_BATCH_TASKS, MAX_VERSION } from './constants.ts';
import { TASK_STATES } from './states.ts';
import { Strategy } from './templates.ts';

// Tasks (`/v1/tasks`): units of work for agents, and their event streams.

export const TaskState = Type.Enum([...TASK_STATES], {
  description:
    'queued → assigned → running → succeeded | failed | cancelled | timed_out; dead after the last failed attempt.',
});
export type TaskState = Static<typeof TaskState>;

export const CreateTask = Type.Object(
  {
    template: Type.Optional(
      Type.String({ minLength: 1, maxLength: 120, description: 'Template id (`tpl_…`) or name.' }),
    ),
    template_version: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_VERSION,
        description: 'Pin a version; default: the one `latest` points to.',
      }),
    ),
    capabilities: Type.Optional(
      Type.Array(Capability, {
        minItems: 1,
        maxItems: 50,
        uniqueItems: true,
        description: 'Route by capabilities (instead of, or on top of, the template’s).',
      }),
    ),
    input: Type.Optional(
      Type.Unknown({ description: 'Checked against the template’s input schema.' }),
    ),
    idempotency_key: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 200,
        description: 'Submitting the same key again returns the first task, whatever the body.',
      }),
    ),
    priority: Type.Optional(
      Type.Integer({ minimum: -1000, maximum: 1000, description: 'Higher runs first.' }),
    ),
    timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 604_800_000 })),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    concurrency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    session_id: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 100,
        description:
          'Run the task in this session: its events join the session’s history, and the session’s multitask strategy applies.',
      }),
    ),
    strategy: Type.Optional(Strategy),
    labels: Type.Optional(Labels),
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
    retryable: Type.Boolean(),
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
export type TaskError = Static<typeof TaskError>;

export const Task = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    template: Type.Union([
      Type.Object({ id: Type.String(), name: Type.String(), version: Type.Integer() }),
      Type.Null(),
    ]),
    capabilities: Type.Array(Type.String()),
    input: Type.Unknown(),
    state: TaskState,
    priority: Type.Integer(),
    timeout_ms: Type.Integer(),
    max_attempts: Type.Integer(),
    attempt: Type.Integer({ description: 'Attempts started so far.' }),
    strategy: Strategy,
    concurrency_key: Type.Union([Type.String(), Type.Null()]),
    session_id: Type.Union([Type.String(), Type.Null()]),
    idempotency_key: Type.Union([Type.String(), Type.Null()]),
    labels: Type.Record(Type.String(), Type.String()),
    agent_id: Type.Union([Type.String(), Type.Null()]),
    result: Type.Unknown({ description: 'What the agent returned, once succeeded; else null.' }),
    error: Type.Union([TaskError, Type.Null()]),
    cancel_requested_at: NullableTimestamp,
    not_before: Type.Union([Timestamp, Type.Null()], {
      description: 'A retried attempt waits until then (backoff).',
    }),
    assigned_at: NullableTimestamp,
    started_at: NullableTimestamp,
    deadline_at: Type.Union([Timestamp, Type.Null()], {
      description: 'The current attempt times out then.',
    }),
    created_by: Type.String(),
    created_at: Timestamp,
    updated_at: Timestamp,
    finished_at: NullableTimestamp,
    waiting: Type.Union(
      [
        Type.Object({
          reason: Type.Literal('no_agent', {
            description: 'No connected agent offers what the task needs.',
          }),
          message: Type.String({
            description: 'Such as "no connected agent offers capability gpu".',
          }),
          capabilities: Type.Array(Type.String(), {
            description:
              'The capabilities no connected agent offers; all of the task’s when each is offered but no agent offers them together.',
          }),
        }),
        Type.Null(),
      ],
      {
        description:
          'Why a queued task cannot be placed now, beyond waiting for its turn or a free slot; null when an agent could take it (and for tasks not queued). Read when the task is read: the task stays queued and runs once such an agent connects.',
      },
    ),
  },
  { $id: 'Task' },
);
export type Task = Static<typeof Task>;

export const TaskEvent = Type.Object(
  {
    offset: Type.Integer({ description: 'Position in the task’s stream; also the SSE id.' }),
    type: Type.String({ description: 'task.queued, task.cancelled, task.retried, …; stream.gap' }),
    time: Timestamp,
    data: Type.Unknown(),
  },
  { $id: 'TaskEvent' },
);
export type TaskEvent = Static<typeof TaskEvent>;
