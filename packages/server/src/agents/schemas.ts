import Type, { type Static } from 'typebox';
import { NullableTimestamp, Timestamp } from '../platform/schemas.ts';

import { AGENT_STATUSES } from './statuses.ts';

export { AGENT_STATUSES, type AgentStatus } from './statuses.ts';

export const AgentStatusSchema = Type.Enum([...AGENT_STATUSES], {
  description:
    'online: connected with room for work; busy: connected at its max concurrency; draining: finishing its tasks, taking no new ones; offline: not connected; error: its connection was closed for breaking the protocol.',
});

export const Agent = Type.Object(
  {
    id: Type.String({ description: 'Chosen by the agent; stable across its reconnects.' }),
    tenant_id: Type.String(),
    name: Type.String(),
    status: AgentStatusSchema,
    status_reason: Type.Union([Type.String(), Type.Null()]),
    capabilities: Type.Array(Type.String()),
    max_concurrency: Type.Integer(),
    weight: Type.Integer(),
    labels: Type.Record(Type.String(), Type.String()),
    sdk: Type.Union([Type.Object({ name: Type.String(), version: Type.String() }), Type.Null()]),
    in_flight: Type.Array(Type.String(), { description: 'Ids of the tasks it holds.' }),
    load: Type.Union([
      Type.Object({
        in_flight: Type.Integer(),
        cpu: Type.Optional(Type.Number()),
        memory: Type.Optional(Type.Number()),
      }),
      Type.Null(),
    ]),
    node_id: Type.Union([Type.String(), Type.Null()], {
      description: 'The Orchestra node holding its connection.',
    }),
    connected_at: NullableTimestamp,
    last_heartbeat_at: NullableTimestamp,
    lease_expires_at: Type.Union([Timestamp, Type.Null()], {
      description: 'Its tasks are dispatched again if no heartbeat arrives before then.',
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'Agent' },
);
export type Agent = Static<typeof Agent>;
