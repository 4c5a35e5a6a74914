import { AGENT_STATUSES, type AgentStatus } from '@orchestra/protocol';
import type { Kysely } from 'kysely';
import { agentsByStatus, onlineAgentSlots } from '../agents/index.ts';
import type { Principal } from '../platform/auth.ts';
import type { Database } from '../store/database.ts';
import type { RelationalStore } from '../store/store.ts';
import {
  ACTIVE_STATES,
  type ActiveState,
  activeByState,
  FINISHED_STATES,
  type FinishedState,
  finishedPerMinute,
  heldByAgent,
  MINUTE_CHARS,
  submittedPerMinute,
  successesBetween,
} from '../tasks/index.ts';
import type { TemplateService } from '../templates/index.ts';

/** Finished tasks per minute whose timings feed the latency percentiles. */
export const LATENCY_SAMPLES_PER_MINUTE = 200;

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
    const filter = { template };
    // The figures come from the modules that own the tables (agents, tasks).
    const [agentRows, onlineRows, held, activeRows, submittedRows, finishedRows, samples] =
      await Promise.all([
        agentsByStatus(db, tenantId),
        onlineAgentSlots(db, tenantId),
        heldByAgent(db, tenantId),
        activeByState(db, tenantId, filter),
        submittedPerMinute(db, tenantId, from, filter),
        finishedPerMinute(db, tenantId, from, filter),
        Promise.all(
          Array.from({ length: options.minutes }, async (_, i) => {
            const start = new Date(firstMinute.getTime() + i * 60_000);
            const end = new Date(start.getTime() + 60_000);
            const rows = await successesBetween(
              db,
              tenantId,
              {
                start: start.toISOString(),
                end: end.toISOString(),
                limit: LATENCY_SAMPLES_PER_MINUTE,
              },
              filter,
            );
            return { minute: start.toISOString(), rows };
          }),
        ),
      ]);

    const byStatus = zeros(AGENT_STATUSES);
    for (const row of agentRows) byStatus[row.status] += row.n;
    // Online agents with what they hold: `busy` is derived, as in GET /v1/agents.
    let slots = 0;
    let slotsUsed = 0;
    for (const agent of onlineRows) {
      const holds = held.get(agent.id) ?? 0;
      slots += agent.max_concurrency;
      slotsUsed += holds;
      if (holds >= agent.max_concurrency) {
        byStatus.online -= 1;
        byStatus.busy += 1;
      }
    }
    let inFlight = 0;
    for (const n of held.values()) inFlight += n;

    const active = zeros(ACTIVE_STATES);
    for (const row of activeRows) active[row.state] = row.n;

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
    for (const row of submittedRows) {
      const minute = index.get(row.minute);
      if (minute === undefined) continue; // written with a clock ahead of this node's
      minute.submitted = row.n;
      submitted += minute.submitted;
    }
    const finished = zeros(FINISHED_STATES);
    for (const row of finishedRows) {
      const minute = index.get(row.minute);
      if (minute === undefined || !(FINISHED_STATES as readonly string[]).includes(row.state))
        continue;
      minute.finished[row.state] = row.n;
      finished[row.state] += row.n;
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
        total: agentRows.reduce((sum, row) => sum + row.n, 0),
        by_status: byStatus,
        slots,
        slots_used: slotsUsed,
        in_flight: inFlight,
      },
      tasks: {
        active,
        oldest_queued_at: activeRows.find((row) => row.state === 'queued')?.oldest ?? null,
        submitted,
        finished,
        latency_ms: percentiles(allLatencies),
        queue_wait_ms: percentiles(waits),
        per_minute: minutes,
      },
    };
  }
}
