import Type, { type Static } from 'typebox';
import { Labels, Timestamp } from './common.ts';
import { MULTITASK_STRATEGIES } from './constants.ts';

// Sessions (`/v1/sessions`): threads of tasks that run in order and share one history.

export const MultitaskStrategySchema = Type.Enum([...MULTITASK_STRATEGIES], {
  description:
    'What happens to a task submitted while another task of the session is unfinished: reject (409 SESSION_BUSY), enqueue (it runs after the earlier ones, in order), interrupt (the unfinished ones are cancelled, then it runs).',
});

export const CreateSession = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    labels: Type.Optional(Labels),
    /** Free data for the application, returned as given. */
    metadata: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        maxProperties: 100,
        description: 'Free data for the application, returned as given.',
      }),
    ),
    /** Default `enqueue`: tasks run one after the other, in submission order. */
    multitask_strategy: Type.Optional(MultitaskStrategySchema),
  },
  { additionalProperties: false },
);
export type CreateSession = Static<typeof CreateSession>;

export const Session = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.Union([Type.String(), Type.Null()]),
    labels: Type.Record(Type.String(), Type.String()),
    metadata: Type.Record(Type.String(), Type.Unknown()),
    multitask_strategy: MultitaskStrategySchema,
    tasks: Type.Object(
      {
        total: Type.Integer(),
        unfinished: Type.Array(Type.String(), {
          description: 'Ids of its queued, assigned or running tasks, oldest first.',
        }),
      },
      { description: 'The tasks submitted in this session.' },
    ),
    created_by: Type.String(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'Session' },
);
/** A session (thread): tasks submitted with its id run in order and share one history. */
export type Session = Static<typeof Session>;

export const SessionEvent = Type.Object(
  {
    offset: Type.Integer({ description: 'Position in the session’s stream; also the SSE id.' }),
    type: Type.String({ description: 'session.created, or a task event type; stream.gap' }),
    time: Timestamp,
    data: Type.Unknown({ description: 'For task events: the task event’s data with `task_id`.' }),
  },
  { $id: 'SessionEvent' },
);
export type SessionEvent = Static<typeof SessionEvent>;
