import Type, { type Static, type TInteger } from 'typebox';
import { NullableTimestamp, Timestamp } from './common.ts';
import { AGENT_STATUSES } from './states.ts';

// Stats (`GET /v1/stats`): the tenant's agents and tasks at a glance.

/** A count per key: of agents by status, of tasks by state. */
const counts = <K extends string>(keys: readonly K[]) =>
  Type.Object(
    Object.fromEntries(keys.map((k) => [k, Type.Integer({ minimum: 0 })])) as Record<K, TInteger>,
  );

/** Tasks that ended, by how they ended. */
export const FinishedCounts = counts(['succeeded', 'failed', 'cancelled', 'timed_out', 'dead']);
export type FinishedCounts = Static<typeof FinishedCounts>;

/** Nearest-rank percentiles of durations, in milliseconds. */
export const Percentiles = Type.Object({
  /** How many durations they were computed from. */
  samples: Type.Integer(),
  p50: Type.Number(),
  p95: Type.Number(),
  p99: Type.Number(),
  max: Type.Number(),
});
export type Percentiles = Static<typeof Percentiles>;

/** Percentiles, or null when there was nothing to compute them from. */
const MaybePercentiles = Type.Union([Percentiles, Type.Null()]);

/** One minute of `Stats.tasks.per_minute`. */
export const StatsMinute = Type.Object({
  /** Start of the minute. */
  at: Timestamp,
  submitted: Type.Integer(),
  finished: FinishedCounts,
  /** Submission to success, of the tasks that succeeded in this minute; null: none did. */
  latency_ms: MaybePercentiles,
});
export type StatsMinute = Static<typeof StatsMinute>;

/** The tenant's agents and tasks at a glance (`GET /v1/stats`). */
export const Stats = Type.Object(
  {
    at: Timestamp,
    /** Whole minutes, ending with the current one (which is still going). */
    window: Type.Object({ minutes: Type.Integer(), from: Timestamp, to: Timestamp }),
    /** The template the task figures are limited to, or null. */
    template: Type.Union([Type.String(), Type.Null()]),
    agents: Type.Object({
      total: Type.Integer(),
      by_status: counts(AGENT_STATUSES),
      slots: Type.Integer({ description: 'Tasks the online and busy agents may hold at once.' }),
      slots_used: Type.Integer({
        description: 'Tasks the online and busy agents hold: the part of `slots` in use.',
      }),
      in_flight: Type.Integer({
        description:
          'Tasks any agent holds now (assigned or running), draining and disconnected ones too.',
      }),
    }),
    tasks: Type.Object({
      active: counts(['queued', 'assigned', 'running', 'awaiting_approval']),
      oldest_queued_at: NullableTimestamp,
      submitted: Type.Integer(),
      finished: FinishedCounts,
      latency_ms: MaybePercentiles,
      queue_wait_ms: MaybePercentiles,
      per_minute: Type.Array(StatsMinute),
    }),
  },
  { $id: 'Stats' },
);
/** The tenant's agents and tasks at a glance (`GET /v1/stats`). */
export type Stats = Static<typeof Stats>;
