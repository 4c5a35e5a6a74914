import type { UsageGroup, UsageReport, UsageRow, UsageTotals } from '@orchestra/protocol';
import { type RawBuilder, sql } from 'kysely';
import type { Principal } from '../platform/auth.ts';
import { ApiError } from '../platform/errors.ts';
import type { RelationalStore } from '../store/store.ts';
import type { ModelUsageTable } from './tables.ts';

const DEFAULT_LIMIT = 1000;
const NANO = 1_000_000_000;

export interface UsageQueryOptions {
  from?: string | undefined;
  to?: string | undefined;
  group_by?: UsageGroup | undefined;
  limit?: number | undefined;
}

/** Dollars as billionths, exact for prices per million tokens with up to three decimals. */
export function nanoUsd(costUsd: number | null): number {
  return costUsd === null ? 0 : Math.round(costUsd * NANO);
}

function keyOf(group: UsageGroup): RawBuilder<string | null> {
  switch (group) {
    case 'day':
      return sql<string>`substr(created_at, 1, 10)`;
    case 'template':
      return sql<string | null>`template`;
    case 'model':
      return sql<string>`provider || '/' || model`;
    case 'provider':
      return sql<string>`provider`;
    case 'key':
      return sql<string>`api_key`;
    case 'session':
      return sql<string | null>`session_id`;
    case 'task':
      return sql<string>`task_id`;
  }
}

function time(field: string, value: string | undefined, fallback: Date): string {
  if (value === undefined) return fallback.toISOString();
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) {
    throw new ApiError('VALIDATION_FAILED', `querystring.${field}: is not a date-time`, {
      details: { fields: [{ field: `querystring.${field}`, message: 'is not a date-time' }] },
    });
  }
  // One format as stored, so that text comparison is time order.
  return new Date(ms).toISOString();
}

interface Sums {
  input_tokens: unknown;
  output_tokens: unknown;
  cached_input_tokens: unknown;
  cost_nano_usd: unknown;
  model_calls: unknown;
  tool_calls: unknown;
  duration_ms: unknown;
}

/** PostgreSQL answers sums of bigints as text. */
function totalsOf(row: Sums | undefined): UsageTotals {
  const n = (v: unknown) => Number(v ?? 0);
  return {
    input_tokens: n(row?.input_tokens),
    output_tokens: n(row?.output_tokens),
    cached_input_tokens: n(row?.cached_input_tokens),
    cost_usd: n(row?.cost_nano_usd) / NANO,
    model_calls: n(row?.model_calls),
    tool_calls: n(row?.tool_calls),
    duration_ms: n(row?.duration_ms),
  };
}

const CSV_COLUMNS = [
  'input_tokens',
  'output_tokens',
  'cached_input_tokens',
  'cost_usd',
  'model_calls',
  'tool_calls',
  'duration_ms',
] as const;

/** A CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180). */
function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/**
 * What hosted agents' model calls used (the analytics service): one row per completed model
 * call, recorded once however often its run resumed, summed by day, template, model, key,
 * session or task.
 */
export class UsageService {
  readonly #store: RelationalStore;

  constructor(deps: { store: RelationalStore }) {
    this.#store = deps.store;
  }

  /** Records a model call; recording the same call (`id`) again changes nothing. */
  async record(row: ModelUsageTable): Promise<void> {
    await this.#store.db
      .insertInto('model_usage')
      .values(row)
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
  }

  /** Tokens and cost of the tenant's model calls since `since` (quotas). */
  async since(tenantId: string, since: string): Promise<{ tokens: number; costUsd: number }> {
    const row = await this.#store.db
      .selectFrom('model_usage')
      .select([
        sql<string>`coalesce(sum(input_tokens + output_tokens), 0)`.as('tokens'),
        sql<string>`coalesce(sum(cost_nano_usd), 0)`.as('cost'),
      ])
      .where('tenant_id', '=', tenantId)
      .where('created_at', '>=', since)
      .executeTakeFirst();
    return { tokens: Number(row?.tokens ?? 0), costUsd: Number(row?.cost ?? 0) / NANO };
  }

  async report(principal: Principal, query: UsageQueryOptions): Promise<UsageReport> {
    const now = new Date();
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    const from = time('from', query.from, monthStart);
    const to = time('to', query.to, now);
    if (from >= to) {
      throw new ApiError('VALIDATION_FAILED', 'querystring.to: must be after from', {
        details: { fields: [{ field: 'querystring.to', message: 'must be after from' }] },
      });
    }
    const group = query.group_by ?? 'day';
    const limit = query.limit ?? DEFAULT_LIMIT;
    const sums = [
      sql<string>`sum(input_tokens)`.as('input_tokens'),
      sql<string>`sum(output_tokens)`.as('output_tokens'),
      sql<string>`sum(cached_input_tokens)`.as('cached_input_tokens'),
      sql<string>`sum(cost_nano_usd)`.as('cost_nano_usd'),
      sql<string>`count(*)`.as('model_calls'),
      sql<string>`sum(tool_calls)`.as('tool_calls'),
      sql<string>`sum(duration_ms)`.as('duration_ms'),
    ];
    const scoped = this.#store.db
      .selectFrom('model_usage')
      .where('tenant_id', '=', principal.tenant.id)
      .where('created_at', '>=', from)
      .where('created_at', '<', to);
    const key = keyOf(group);
    const rows = await scoped
      .select([key.as('key'), ...sums])
      .groupBy(key)
      .orderBy(sql`sum(cost_nano_usd)`, 'desc')
      .orderBy(sql`sum(input_tokens + output_tokens)`, 'desc')
      .orderBy(key)
      .limit(limit + 1)
      .execute();
    const total = await scoped.select(sums).executeTakeFirst();
    const kept = rows.slice(0, limit);
    // Days read best in time order; the other groups largest first.
    if (group === 'day') kept.sort((a, b) => String(a.key).localeCompare(String(b.key)));
    return {
      from,
      to,
      group_by: group,
      rows: kept.map((r): UsageRow => ({ key: (r.key as string | null) ?? null, ...totalsOf(r) })),
      truncated: rows.length > limit,
      total: totalsOf(total),
    };
  }

  /** The report's rows as CSV with a header line (the group's name first). */
  csv(report: UsageReport): string {
    const lines = [[report.group_by, ...CSV_COLUMNS].join(',')];
    for (const row of report.rows) {
      lines.push([csvField(row.key ?? ''), ...CSV_COLUMNS.map((c) => String(row[c]))].join(','));
    }
    return `${lines.join('\r\n')}\r\n`;
  }
}
