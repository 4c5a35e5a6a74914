import { type Kysely, sql } from 'kysely';
import { AGENT_STATUSES, type AgentStatus } from '../agents/statuses.ts';
import type { Principal } from '../platform/auth.ts';
import type { Database } from '../store/database.ts';
import type { RelationalStore } from '../store/store.ts';
import type { TemplateService } from '../templates/template-service.ts';

export { MAX_STATS_MINUTES } from './window.ts';
/** Finished tasks per minute whose timings feed the latency percentiles. */
export const LATENCY_SAMPLES_PER_MINUTE = 200;

const ACTIVE_STATES = ['queued', 'assigned', 'running'] as const;
const FINISHED_STATES = ['succeeded', 'failed', 'cancelled', 'timed_out', 'dead'] as const;
type ActiveState = (typeof ACTIVE_STATES)[number];
type FinishedState = (typeof FINISHED_STATES)[number];

export interface Percentiles {
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface StatsMinute {
  /** Start of the minute. */
  at: string;
  submitted: number;
  finished: Record<FinishedState, number>;
  /** Submission to success, of the tasks that succeeded in this minute. */
  latency_ms: Percentiles | null;
}

export interface Stats {
  at: string;
  window: { minutes: number; from: string; to: string };
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
    active: Record<ActiveState, number>;
    oldest_queued_at: string | null;
    /** Submitted within the window. */
    submitted: number;
    /** Finished within the window, by final state. */
    finished: Record<FinishedState, number>;
    /** Submission to success, of the tasks that succeeded within the window. */
    latency_ms: Percentiles | null;
    /** Submission to start of their last attempt, of the same tasks. */
    queue_wait_ms: Percentiles | null;
    /** Every minute of the window, oldest first; the last one is still going. */
    per_minute: StatsMinute[];
  };
}

export interface StatsOptions {
  minutes: number;
  /** Template id (`tpl_…`) or name; only tasks of it are counted. */
  template?: string | undefined;
}

/** `YYYY-MM-DDTHH:MM` of an ISO timestamp: the stores keep timestamps as ISO text. */
const MINUTE_CHARS = 16;

/** Nearest-rank percentiles of `values` (sorted here). */
export function percentiles(values: number[]): Percentiles | null {
  if (values.length === 0) return null;
  const sorted = values.toSorted((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
  return {
    samples: sorted.length,
    p50: rank(0.5) ?? 0,
    p95: rank(0.95) ?? 0,
    p99: rank(0.99) ?? 0,
    max: sorted[sorted.length - 1] ?? 0,
  };
}

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/**
 * What the console's overview shows: agents by status and tasks by state now, and
 * per-minute throughput and latency over the last minutes, for one tenant.
 *
 * Counting reads every task finished or submitted within the window through the
 * `(tenant_id, finished_at)` and `(tenant_id, created_at)` indexes; latency reads at most
 * `LATENCY_SAMPLES_PER_MINUTE` tasks of each minute (the latest ones), so that a busy
 * tenant's overview does not load millions of rows.
 */
export class StatsService {
  readonly #store: RelationalStore;
  readonly #templates: TemplateService;

  constructor(store: RelationalStore, templates: TemplateService) {
    this.#store = store;
    this.#templates = templates;
  }

  async stats(principal: Principal, options: StatsOptions, now = new Date()): Promise<Stats> {
    // A misspelt template must not look like a quiet one: TEMPLATE_NOT_FOUND.
    if (options.template !== undefined) await this.#templates.get(principal, options.template);
    // PostgreSQL: one connection for the whole summary, so that its dozens of queries do not
    // take the pool from dispatch and agents. SQLite has one connection behind a lock:
    // holding it across every query would stall dispatch; each query takes it in turn.
    if (this.#store.kind === 'sqlite') return this.#stats(this.#store.db, principal, options, now);
    return this.#store.db.connection().execute((db) => this.#stats(db, principal, options, now));
  }

  async #stats(
    db: Kysely<Database>,
    principal: Principal,
    options: StatsOptions,
    now: Date,
  ): Promise<Stats> {
    const tenantId = principal.tenant.id;
    const firstMinute = new Date(
      Math.floor(now.getTime() / 60_000) * 60_000 - (options.minutes - 1) * 60_000,
    );
    const from = firstMinute.toISOString();
    const template = options.template;
    const byTemplate = template === undefined ? sql`` : templateFilter(template);

    const minute = (column: 'created_at' | 'finished_at') =>
      sql`substr(${sql.ref(column)}, 1, ${sql.lit(MINUTE_CHARS)})`;
    const [agentRows, heldRows, inFlightRows, activeRows, submittedRows, finishedRows, samples] =
      await Promise.all([
        db
          .selectFrom('agents')
          .select(['status', (eb) => eb.fn.countAll<number | string>().as('n')])
          .where('tenant_id', '=', tenantId)
          .groupBy('status')
          .execute(),
        // Online agents with what they hold: `busy` is derived, as in GET /v1/agents.
        sql<{ max_concurrency: number | string; held: number | string }>`
          select a.max_concurrency,
            (select count(*) from tasks t
              where t.tenant_id = a.tenant_id and t.agent_id = a.id
                and t.state in ('assigned', 'running')) as held
          from agents a
          where a.tenant_id = ${tenantId} and a.status = 'online'`.execute(db),
        sql<{ n: number | string }>`
          select count(*) as n from tasks
          where tenant_id = ${tenantId} and state in ('assigned', 'running')`.execute(db),
        // Grouped by state so that the planner walks the queue index: a bare min(created_at)
        // of queued tasks made SQLite walk every task in creation order instead.
        sql<{ state: ActiveState; n: number | string; oldest: string | null }>`
          select state, count(*) as n, min(coalesce(queued_at, created_at)) as oldest from tasks
          where tenant_id = ${tenantId} and state in ('queued', 'assigned', 'running') ${byTemplate}
          group by state`.execute(db),
        sql<{ minute: string; n: number | string }>`
          select ${minute('created_at')} as minute, count(*) as n from tasks
          where tenant_id = ${tenantId} and created_at >= ${from} ${byTemplate}
          group by ${minute('created_at')}`.execute(db),
        sql<{ minute: string; state: FinishedState; n: number | string }>`
          select ${minute('finished_at')} as minute, state, count(*) as n from tasks
          where tenant_id = ${tenantId} and finished_at >= ${from} ${byTemplate}
          group by ${minute('finished_at')}, state`.execute(db),
        // The latest successes of each minute: one short index range per minute, so that
        // the rows read do not grow with the tenant's throughput.
        Promise.all(
          Array.from({ length: options.minutes }, async (_, i) => {
            const start = new Date(firstMinute.getTime() + i * 60_000);
            const end = new Date(start.getTime() + 60_000);
            const result = await sql<{
              queued_at: string;
              started_at: string | null;
              finished_at: string;
            }>`
              select coalesce(queued_at, created_at) as queued_at, started_at, finished_at
              from tasks
              where tenant_id = ${tenantId} and state = 'succeeded'
                and finished_at >= ${start.toISOString()} and finished_at < ${end.toISOString()}
                ${byTemplate}
              order by finished_at desc
              limit ${LATENCY_SAMPLES_PER_MINUTE}`.execute(db);
            return { minute: start.toISOString(), rows: result.rows };
          }),
        ),
      ]);

    const byStatus = zeros(AGENT_STATUSES);
    for (const row of agentRows) byStatus[row.status] += Number(row.n);
    let slots = 0;
    let slotsUsed = 0;
    for (const row of heldRows.rows) {
      const max = Number(row.max_concurrency);
      slots += max;
      slotsUsed += Number(row.held);
      if (Number(row.held) >= max) {
        byStatus.online -= 1;
        byStatus.busy += 1;
      }
    }

    const active = zeros(ACTIVE_STATES);
    for (const row of activeRows.rows) active[row.state] = Number(row.n);

    const minutes: StatsMinute[] = [];
    const index = new Map<string, StatsMinute>();
    for (let i = 0; i < options.minutes; i += 1) {
      const at = new Date(firstMinute.getTime() + i * 60_000).toISOString();
      const minute: StatsMinute = {
        at,
        submitted: 0,
        finished: zeros(FINISHED_STATES),
        latency_ms: null,
      };
      minutes.push(minute);
      index.set(at.slice(0, MINUTE_CHARS), minute);
    }
    let submitted = 0;
    for (const row of submittedRows.rows) {
      const minute = index.get(row.minute);
      if (minute === undefined) continue; // written with a clock ahead of this node's
      minute.submitted = Number(row.n);
      submitted += minute.submitted;
    }
    const finished = zeros(FINISHED_STATES);
    for (const row of finishedRows.rows) {
      const minute = index.get(row.minute);
      if (minute === undefined || !(FINISHED_STATES as readonly string[]).includes(row.state))
        continue;
      minute.finished[row.state] = Number(row.n);
      finished[row.state] += Number(row.n);
    }
    const allLatencies: number[] = [];
    const waits: number[] = [];
    for (const sample of samples) {
      const list: number[] = [];
      for (const row of sample.rows) {
        const queued = Date.parse(row.queued_at);
        const latency = Date.parse(row.finished_at) - queued;
        if (!Number.isFinite(latency)) continue;
        list.push(latency);
        if (row.started_at !== null) waits.push(Math.max(0, Date.parse(row.started_at) - queued));
      }
      allLatencies.push(...list);
      const entry = index.get(sample.minute.slice(0, MINUTE_CHARS));
      if (entry !== undefined) entry.latency_ms = percentiles(list);
    }

    return {
      at: now.toISOString(),
      window: { minutes: options.minutes, from, to: now.toISOString() },
      template: template ?? null,
      agents: {
        total: agentRows.reduce((sum, row) => sum + Number(row.n), 0),
        by_status: byStatus,
        slots,
        slots_used: slotsUsed,
        in_flight: Number(inFlightRows.rows[0]?.n ?? 0),
      },
      tasks: {
        active,
        oldest_queued_at: activeRows.rows.find((row) => row.state === 'queued')?.oldest ?? null,
        submitted,
        finished,
        latency_ms: percentiles(allLatencies),
        queue_wait_ms: percentiles(waits),
        per_minute: minutes,
      },
    };
  }
}

function templateFilter(template: string) {
  return template.startsWith('tpl_')
    ? sql`and template_id = ${template}`
    : sql`and template_name = ${template}`;
}
