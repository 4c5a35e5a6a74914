import type { UsageReport, UsageTotals } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  countFlag,
  noArguments,
  print,
  UsageError,
} from '../common.ts';
import { command, single } from '../spec.ts';
import { formatTable } from '../table.ts';

const GROUPS = ['day', 'template', 'model', 'provider', 'key', 'session', 'task'] as const;

/** A --from or --to: a date (`2026-11-01`) or a date and time, as UTC. */
function timeFlag(flag: string, text: string): string {
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : text);
  if (Number.isNaN(ms)) {
    throw new UsageError(
      `${flag} must be a date or a date and time, like 2026-11-01, got "${text}"`,
    );
  }
  return new Date(ms).toISOString();
}

function cost(usd: number): string {
  return `$${usd < 1 ? usd.toFixed(6) : usd.toFixed(2)}`;
}

function cells(t: UsageTotals): string[] {
  return [
    String(t.input_tokens),
    String(t.output_tokens),
    String(t.cached_input_tokens),
    cost(t.cost_usd),
    String(t.model_calls),
    String(t.tool_calls),
  ];
}

function reportText(report: UsageReport): string {
  const header = [
    report.group_by.toUpperCase(),
    'INPUT',
    'OUTPUT',
    'CACHED',
    'COST',
    'CALLS',
    'TOOL CALLS',
  ];
  const rows = report.rows.map((r) => [r.key ?? '-', ...cells(r)]);
  rows.push(['TOTAL', ...cells(report.total)]);
  return [
    `Usage from ${report.from} to ${report.to}${report.truncated ? ' (the largest groups only)' : ''}`,
    formatTable(header, rows),
  ].join('\n');
}

export const group = single({
  name: 'usage',
  summary: 'What hosted agents used: tokens, cost, model and tool calls, by day, template, model…',
  command: command({
    name: 'usage',
    description: [
      'Shows what the tenant’s hosted agents used over a time range (default: this UTC month so far), one row per day, template, model, provider, API key, session or task, with the total. Examples:',
      '  orchestra usage',
      '  orchestra usage --by model --from 2026-11-01 --to 2026-12-01',
      '  orchestra usage --by template --csv > usage.csv',
    ].join('\n'),
    options: {
      by: { type: 'string', value: 'GROUP', description: `${GROUPS.join(', ')} (default day)` },
      from: { type: 'string', value: 'TIME', description: 'From this date or time (UTC)' },
      to: { type: 'string', value: 'TIME', description: 'To this date or time (UTC), excluded' },
      limit: {
        type: 'string',
        value: 'N',
        description: 'Most rows, largest cost first (default 1000)',
      },
      csv: { type: 'boolean', default: false, description: 'Print CSV with a header line' },
    },
    common: CLIENT_OPTIONS,
    async run(invocation) {
      const { values } = invocation;
      noArguments(invocation);
      const options = {
        ...(values.by !== undefined ? { group_by: choice('--by', values.by, GROUPS) } : {}),
        ...(values.from !== undefined ? { from: timeFlag('--from', values.from) } : {}),
        ...(values.to !== undefined ? { to: timeFlag('--to', values.to) } : {}),
        ...(values.limit !== undefined
          ? { limit: countFlag('--limit', values.limit, 10_000) }
          : {}),
      };
      const api = client(values);
      if (values.csv) {
        process.stdout.write(await api.usage.csv(options));
        return 0;
      }
      const report = await api.usage.report(options);
      print(values.json, report, () => reportText(report));
      return 0;
    },
  }),
});
