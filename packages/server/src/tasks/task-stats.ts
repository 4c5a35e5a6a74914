import { type Kysely, sql } from 'kysely';
import type { Database } from '../store/database.ts';

// The tasks module's figures for the stats module (GET /v1/stats): each a short indexed
// query on the tasks table, which only this module reads. `db` is the caller's executor,
// so that a summary can run all of them on one connection.

export const ACTIVE_STATES = ['queued', 'assigned', 'running', 'awaiting_approval'] as const;
export const FINISHED_STATES = ['succeeded', 'failed', 'cancelled', 'timed_out', 'dead'] as const;
export type ActiveState = (typeof ACTIVE_STATES)[number];
export type FinishedState = (typeof FINISHED_STATES)[number];

/** Characters of an ISO timestamp up to its minute: `2026-12-06T10:15`. */
export const MINUTE_CHARS = 16;

/** Narrows the figures to one template, by id (`tpl_…`) or name. */
export interface TaskFilter {
  template?: string | undefined;
}

function templateFilter(filter: TaskFilter) {
  const { template } = filter;
  if (template === undefined) return sql``;
  return template.startsWith('tpl_')
    ? sql`and template_id = ${template}`
    : sql`and template_name = ${template}`;
}

const minuteOf = (column: 'created_at' | 'finished_at') =>
  sql`substr(${sql.ref(column)}, 1, ${sql.lit(MINUTE_CHARS)})`;

/** Tasks each agent of the tenant holds now (assigned or running), by agent id. */
export async function heldByAgent(
  db: Kysely<Database>,
  tenantId: string,
): Promise<Map<string, number>> {
  const rows = await sql<{ agent_id: string; n: number | string }>`
    select agent_id, count(*) as n from tasks
    where tenant_id = ${tenantId} and state in ('assigned', 'running') and agent_id is not null
    group by agent_id`.execute(db);
  return new Map(rows.rows.map((r) => [r.agent_id, Number(r.n)]));
}

/** Unfinished tasks by state, with the oldest queued one's time. */
export async function activeByState(
  db: Kysely<Database>,
  tenantId: string,
  filter: TaskFilter,
): Promise<{ state: ActiveState; n: number; oldest: string | null }[]> {
  // Grouped by state so that the planner walks the queue index: a bare min(created_at)
  // of queued tasks made SQLite walk every task in creation order instead.
  const rows = await sql<{ state: ActiveState; n: number | string; oldest: string | null }>`
    select state, count(*) as n, min(coalesce(queued_at, created_at)) as oldest from tasks
    where tenant_id = ${tenantId} and state in ('queued', 'assigned', 'running', 'awaiting_approval') ${templateFilter(filter)}
    group by state`.execute(db);
  return rows.rows.map((r) => ({ state: r.state, n: Number(r.n), oldest: r.oldest }));
}

/** Tasks submitted in each minute since `from` (minutes as the first MINUTE_CHARS). */
export async function submittedPerMinute(
  db: Kysely<Database>,
  tenantId: string,
  from: string,
  filter: TaskFilter,
): Promise<{ minute: string; n: number }[]> {
  const rows = await sql<{ minute: string; n: number | string }>`
    select ${minuteOf('created_at')} as minute, count(*) as n from tasks
    where tenant_id = ${tenantId} and created_at >= ${from} ${templateFilter(filter)}
    group by ${minuteOf('created_at')}`.execute(db);
  return rows.rows.map((r) => ({ minute: r.minute, n: Number(r.n) }));
}

/** Tasks finished in each minute since `from`, by final state. */
export async function finishedPerMinute(
  db: Kysely<Database>,
  tenantId: string,
  from: string,
  filter: TaskFilter,
): Promise<{ minute: string; state: FinishedState; n: number }[]> {
  const rows = await sql<{ minute: string; state: FinishedState; n: number | string }>`
    select ${minuteOf('finished_at')} as minute, state, count(*) as n from tasks
    where tenant_id = ${tenantId} and finished_at >= ${from} ${templateFilter(filter)}
    group by ${minuteOf('finished_at')}, state`.execute(db);
  return rows.rows.map((r) => ({ minute: r.minute, state: r.state, n: Number(r.n) }));
}

/**
 * The latest `limit` successes finished in [start, end), with when each was queued, started
 * and finished: one short index range, so the rows read do not grow with throughput.
 */
export async function successesBetween(
  db: Kysely<Database>,
  tenantId: string,
  range: { start: string; end: string; limit: number },
  filter: TaskFilter,
): Promise<{ queued_at: string; started_at: string | null; finished_at: string }[]> {
  const result = await sql<{ queued_at: string; started_at: string | null; finished_at: string }>`
    select coalesce(queued_at, created_at) as queued_at, started_at, finished_at
    from tasks
    where tenant_id = ${tenantId} and state = 'succeeded'
      and finished_at >= ${range.start} and finished_at < ${range.end}
      ${templateFilter(filter)}
    order by finished_at desc
    limit ${range.limit}`.execute(db);
  return result.rows;
}
