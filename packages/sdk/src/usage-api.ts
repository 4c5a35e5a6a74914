import type { UsageGroup, UsageReport } from '@orchestra/protocol';
import type { Orchestra } from './client.ts';

// Usage's wire types are @orchestra/protocol's (decision 0014).

export type { UsageGroup, UsageReport, UsageRow, UsageTotals } from '@orchestra/protocol';

export interface UsageOptions {
  /** From this time (inclusive); default the start of the current UTC month. */
  from?: string | Date;
  /** To this time (exclusive); default now. */
  to?: string | Date;
  /** What a row sums; default `day`. */
  group_by?: UsageGroup;
  /** Most rows, largest cost first; default 1000, at most 10000. */
  limit?: number;
}

function query(options: UsageOptions) {
  const iso = (t: string | Date | undefined) => (t instanceof Date ? t.toISOString() : t);
  return {
    ...(options.from !== undefined ? { from: iso(options.from) } : {}),
    ...(options.to !== undefined ? { to: iso(options.to) } : {}),
    ...(options.group_by !== undefined ? { group_by: options.group_by } : {}),
    ...(options.limit !== undefined ? { limit: options.limit } : {}),
  };
}

/**
 * `Orchestra.usage`: what the tenant's hosted agents used (tokens by kind, cost, model and
 * tool calls, time in model calls), grouped by day, template, model, provider, key, session
 * or task (admin, operator or viewer).
 */
export class UsageApi {
  readonly #client: Orchestra;
  constructor(client: Orchestra) {
    this.#client = client;
  }

  /** The rows and the total over the range. */
  report(options: UsageOptions = {}): Promise<UsageReport> {
    return this.#client.request('GET', '/v1/usage', { query: query(options) });
  }

  /** The same rows as CSV, a header line first. */
  csv(options: UsageOptions = {}): Promise<string> {
    return this.#client.request('GET', '/v1/usage', {
      query: { ...query(options), format: 'csv' },
      as: 'text',
    });
  }
}
