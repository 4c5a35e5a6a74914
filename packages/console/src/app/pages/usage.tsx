import type { UsageGroup, UsageReport, UsageRow } from '@orchestra/sdk';
import { useState } from 'react';
import { StackedBars } from '../chart.tsx';
import { describeError, useSession } from '../session.tsx';
import { Alert, ErrorBox, Loading, PageHeader, SelectField, TextField, useAsync } from '../ui.tsx';

const GROUPS: readonly { value: UsageGroup; label: string }[] = [
  { value: 'day', label: 'Day' },
  { value: 'template', label: 'Template' },
  { value: 'model', label: 'Model' },
  { value: 'provider', label: 'Provider' },
  { value: 'key', label: 'API key' },
  { value: 'session', label: 'Session' },
  { value: 'task', label: 'Task' },
];
const DAY = /^\d{4}-\d{2}-\d{2}$/;

function monthStart(): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString().slice(0, 10);
}

function dollars(usd: number): string {
  return usd === 0 ? '$0' : usd < 0.01 ? `$${usd.toFixed(6)}` : `$${usd.toFixed(2)}`;
}

function number(n: number): string {
  return n.toLocaleString('en-US');
}

/** Every day from `from` to `to` (exclusive), so that days without usage show as zero. */
function days(from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = Date.parse(from); t < Date.parse(to) && out.length < 400; t += 86_400_000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

/** Tokens and cost per UTC day of a report grouped by day (the overview shows them too). */
export function DailyCharts({ report }: { report: UsageReport }) {
  const labels = days(report.from, report.to);
  const byDay = new Map(report.rows.map((r) => [r.key ?? '', r]));
  const at = (day: string) => byDay.get(day);
  return (
    <div className="columns">
      <section className="panel" aria-label="Tokens">
        <StackedBars
          title="Tokens per day"
          description={`${number(report.total.input_tokens)} input and ${number(report.total.output_tokens)} output tokens over ${labels.length} days.`}
          labels={labels.map((d) => d.slice(5))}
          labelHeader="Day"
          series={[
            { name: 'input', className: 'mark-neutral' },
            { name: 'output', className: 'mark-ok' },
          ]}
          values={[
            labels.map((d) => at(d)?.input_tokens ?? 0),
            labels.map((d) => at(d)?.output_tokens ?? 0),
          ]}
          format={(v) => number(Math.round(v))}
        />
      </section>
      <section className="panel" aria-label="Cost">
        <StackedBars
          title="Cost per day"
          description={`${dollars(report.total.cost_usd)} over ${labels.length} days, from the providers' price tables.`}
          labels={labels.map((d) => d.slice(5))}
          labelHeader="Day"
          series={[{ name: 'cost (USD)', className: 'mark-bad' }]}
          values={[labels.map((d) => at(d)?.cost_usd ?? 0)]}
          format={(v) => (v < 1 ? v.toFixed(4) : v.toFixed(2))}
        />
      </section>
    </div>
  );
}

/** What hosted agents used, over a range, grouped; charts by day; a CSV download. */
export function UsagePage() {
  const { client } = useSession();
  const [group, setGroup] = useState<UsageGroup>('day');
  const [from, setFrom] = useState(monthStart());
  const [to, setTo] = useState('');
  const [problem, setProblem] = useState<string | undefined>();
  const fromBad = !DAY.test(from);
  const toBad = to !== '' && !DAY.test(to);
  const options = {
    group_by: group,
    ...(fromBad ? {} : { from: `${from}T00:00:00Z` }),
    ...(toBad || to === '' ? {} : { to: `${to}T00:00:00Z` }),
  };
  const report = useAsync(() => client.usage.report(options), [client, group, from, to]);
  const download = async () => {
    setProblem(undefined);
    try {
      const csv = await client.usage.csv(options);
      const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
      const link = document.createElement('a');
      link.href = url;
      link.download = `usage-${group}-${from}.csv`;
      link.click();
      URL.revokeObjectURL(url);
    } catch (err) {
      setProblem(describeError(err));
    }
  };
  return (
    <>
      <PageHeader title="Usage" />
      <p className="muted">
        What hosted agents used: each completed model call counted once, with its tokens, cost (from
        the providers&apos; prices), and the tool calls it asked for. Times are UTC.
      </p>
      <form className="filters" aria-label="Usage range" onSubmit={(e) => e.preventDefault()}>
        <SelectField
          id="usage-group"
          label="Group by"
          value={group}
          options={GROUPS}
          onChange={setGroup}
        />
        <TextField
          id="usage-from"
          label="From (UTC day)"
          value={from}
          onChange={setFrom}
          placeholder="2026-12-01"
          error={fromBad ? 'A day, like 2026-12-01.' : undefined}
        />
        <TextField
          id="usage-to"
          label="To (excluded; empty: now)"
          value={to}
          onChange={setTo}
          placeholder="2027-01-01"
          error={toBad ? 'A day, like 2027-01-01.' : undefined}
        />
        <div className="field">
          <button type="button" onClick={download}>
            Download CSV
          </button>
        </div>
      </form>
      <Alert message={problem} />
      {report.error ? (
        <ErrorBox error={report.error} onRetry={report.reload} />
      ) : report.data === undefined ? (
        <Loading what="usage" />
      ) : (
        <>
          <section className="panel">
            <dl className="facts" aria-label="Total">
              <dt>Cost</dt>
              <dd>{dollars(report.data.total.cost_usd)}</dd>
              <dt>Input tokens</dt>
              <dd>{number(report.data.total.input_tokens)}</dd>
              <dt>Output tokens</dt>
              <dd>{number(report.data.total.output_tokens)}</dd>
              <dt>Model calls</dt>
              <dd>{number(report.data.total.model_calls)}</dd>
              <dt>Tool calls</dt>
              <dd>{number(report.data.total.tool_calls)}</dd>
            </dl>
          </section>
          {group === 'day' && report.data.rows.length > 0 && <DailyCharts report={report.data} />}
          <div className="table-wrap">
            <table aria-label="Usage by group">
              <thead>
                <tr>
                  <th scope="col">{GROUPS.find((g) => g.value === group)?.label}</th>
                  <th scope="col">Input</th>
                  <th scope="col">Output</th>
                  <th scope="col">Cached</th>
                  <th scope="col">Cost</th>
                  <th scope="col">Model calls</th>
                  <th scope="col">Tool calls</th>
                </tr>
              </thead>
              <tbody>
                {report.data.rows.length === 0 ? (
                  <tr>
                    <td colSpan={7} className="muted">
                      No usage in this range.
                    </td>
                  </tr>
                ) : (
                  report.data.rows.map((r: UsageRow) => (
                    <tr key={r.key ?? '-'} data-key={r.key ?? ''}>
                      <th scope="row">
                        <code>{r.key ?? '-'}</code>
                      </th>
                      <td>{number(r.input_tokens)}</td>
                      <td>{number(r.output_tokens)}</td>
                      <td>{number(r.cached_input_tokens)}</td>
                      <td>{dollars(r.cost_usd)}</td>
                      <td>{number(r.model_calls)}</td>
                      <td>{number(r.tool_calls)}</td>
                    </tr>
                  ))
                )}
              </tbody>
            </table>
          </div>
          {report.data.truncated && <p className="muted">Only the largest groups are shown.</p>}
        </>
      )}
    </>
  );
}
