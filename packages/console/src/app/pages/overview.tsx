import type { ClusterNode, Percentiles, Stats, Task } from '@orchestra/sdk';
import { useEffect } from 'react';
import { Lines, minuteLabel, StackedBars } from '../chart.tsx';
import { useTopic } from '../live.ts';
import { Link, navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import { Badge, ErrorBox, Loading, PageHeader, Time, useAsync, useThrottled } from '../ui.tsx';
import { DailyCharts } from './usage.tsx';

const WINDOWS = [5, 15, 30, 60] as const;
/** Minutes roll over and nodes renew their leases: refresh even when no event arrives. */
const REFRESH_MS = 10_000;
const FAILURES_SHOWN = 8;

/** `35 ms`, `1.2 s`, `4.0 min`. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

function bytes(n: number): string {
  return `${Math.round(n / 1024 / 1024)} MiB`;
}

/** Calls `fn` every `ms` while mounted and the tab is visible. */
function useInterval(fn: () => void, ms: number): void {
  useEffect(() => {
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') fn();
    }, ms);
    return () => clearInterval(timer);
  }, [fn, ms]);
}

function Figure({ value, label, to }: { value: number | string; label: string; to?: string }) {
  const content = (
    <>
      <span className="figure-value">{value}</span>
      <span className="figure-label">{label}</span>
    </>
  );
  return to ? (
    <Link to={to} className="figure">
      {content}
    </Link>
  ) : (
    <div className="figure">{content}</div>
  );
}

function PercentileFacts({ p, what }: { p: Percentiles | null; what: string }) {
  if (p === null) return <p className="muted">No task succeeded in this window.</p>;
  return (
    <dl className="facts" aria-label={what}>
      <dt>p50</dt>
      <dd>{duration(p.p50)}</dd>
      <dt>p95</dt>
      <dd>{duration(p.p95)}</dd>
      <dt>p99</dt>
      <dd>{duration(p.p99)}</dd>
      <dt>max</dt>
      <dd>
        {duration(p.max)} <span className="muted">({p.samples} tasks)</span>
      </dd>
    </dl>
  );
}

function Summary({ stats }: { stats: Stats }) {
  const { agents, tasks } = stats;
  const failed = tasks.finished.failed + tasks.finished.dead + tasks.finished.timed_out;
  const ended = failed + tasks.finished.succeeded;
  const connected = agents.by_status.online + agents.by_status.busy + agents.by_status.draining;
  return (
    <div className="cards">
      <section className="panel card" aria-labelledby="agents-card">
        <h2 id="agents-card">Agents</h2>
        <div className="figures">
          <Figure value={connected} label="connected" to="/agents" />
          <Figure value={`${agents.slots_used} / ${agents.slots}`} label="slots in use" />
        </div>
        <ul className="badges" aria-label="Agents by status">
          {Object.entries(agents.by_status).map(([status, n]) => (
            <li key={status}>
              <Badge value={status} /> {n}
            </li>
          ))}
        </ul>
      </section>
      <section className="panel card" aria-labelledby="tasks-card">
        <h2 id="tasks-card">Tasks now</h2>
        <div className="figures">
          <Figure value={tasks.active.queued} label="queued" to="/tasks?state=queued" />
          <Figure value={tasks.active.assigned} label="assigned" to="/tasks?state=assigned" />
          <Figure value={tasks.active.running} label="running" to="/tasks?state=running" />
          <Figure
            value={tasks.active.awaiting_approval}
            label="awaiting approval"
            to="/tasks?state=awaiting_approval"
          />
        </div>
        <p className="muted">
          {tasks.oldest_queued_at === null ? (
            'Nothing waits in the queue.'
          ) : (
            <>
              Oldest queued for{' '}
              {duration(Date.parse(stats.at) - Date.parse(tasks.oldest_queued_at))}.
            </>
          )}
        </p>
      </section>
      <section className="panel card" aria-labelledby="window-card">
        <h2 id="window-card">Last {stats.window.minutes} minutes</h2>
        <div className="figures">
          <Figure value={tasks.submitted} label="submitted" />
          <Figure value={tasks.finished.succeeded} label="succeeded" to="/tasks?state=succeeded" />
          {/* Failed, dead and timed out together: the recent failures below link to each. */}
          <Figure value={failed} label="failed" />
          <Figure value={tasks.finished.cancelled} label="cancelled" to="/tasks?state=cancelled" />
        </div>
        <p className="muted">
          {ended === 0
            ? 'No task ended in this window.'
            : `${Math.round((100 * tasks.finished.succeeded) / ended)}% of the tasks that ended succeeded.`}
        </p>
      </section>
      <section className="panel card" aria-labelledby="latency-card">
        <h2 id="latency-card">Latency</h2>
        <p className="muted">Submission to success</p>
        <PercentileFacts p={tasks.latency_ms} what="Latency" />
        {tasks.queue_wait_ms && (
          <p className="muted">
            Queue wait p50 {duration(tasks.queue_wait_ms.p50)}, p99{' '}
            {duration(tasks.queue_wait_ms.p99)}
          </p>
        )}
      </section>
    </div>
  );
}

function Charts({ stats }: { stats: Stats }) {
  const minutes = stats.tasks.per_minute;
  const labels = minutes.map((m) => minuteLabel(m.at));
  const failed = minutes.map((m) => m.finished.failed + m.finished.dead + m.finished.timed_out);
  const total = (values: number[]) => values.reduce((a, b) => a + b, 0);
  return (
    <div className="columns">
      <section className="panel" aria-label="Throughput">
        <StackedBars
          title="Tasks ended per minute"
          description={`${total(minutes.map((m) => m.finished.succeeded))} succeeded, ${total(failed)} failed and ${total(minutes.map((m) => m.finished.cancelled))} cancelled over the last ${minutes.length} minutes; ${stats.tasks.submitted} submitted.`}
          labels={labels}
          series={[
            { name: 'succeeded', className: 'mark-ok' },
            { name: 'failed, dead or timed out', className: 'mark-bad' },
            { name: 'cancelled', className: 'mark-neutral' },
          ]}
          values={[
            minutes.map((m) => m.finished.succeeded),
            failed,
            minutes.map((m) => m.finished.cancelled),
          ]}
          // Arrivals next to completions tell whether a backlog grows.
          extraColumns={[{ name: 'submitted', values: minutes.map((m) => m.submitted) }]}
        />
      </section>
      <section className="panel" aria-label="Latency per minute">
        <Lines
          title="Latency per minute (submission to success)"
          description={
            stats.tasks.latency_ms === null
              ? 'No task succeeded in this window.'
              : `Over the window: p50 ${duration(stats.tasks.latency_ms.p50)}, p99 ${duration(stats.tasks.latency_ms.p99)}.`
          }
          labels={labels}
          series={[
            { name: 'p50', className: 'mark-ok' },
            { name: 'p95', className: 'mark-warn' },
            { name: 'p99', className: 'mark-bad' },
          ]}
          values={[
            minutes.map((m) => m.latency_ms?.p50 ?? null),
            minutes.map((m) => m.latency_ms?.p95 ?? null),
            minutes.map((m) => m.latency_ms?.p99 ?? null),
          ]}
          format={duration}
        />
      </section>
    </div>
  );
}

function RecentFailures() {
  const { client, topics } = useSession();
  const failures = useAsync(
    () => client.tasks.list({ state: ['failed', 'dead', 'timed_out'], limit: FAILURES_SHOWN }),
    [client],
  );
  const reload = useThrottled(failures.reload, 2000);
  useTopic(topics, 'tasks.*', reload, reload);
  return (
    <section className="panel" aria-labelledby="failures-title">
      <h2 id="failures-title">Recent failures</h2>
      {failures.error !== undefined && (
        <ErrorBox error={failures.error} onRetry={failures.reload} />
      )}
      {failures.data === undefined ? (
        failures.error === undefined && <Loading what="failed tasks" />
      ) : failures.data.items.length === 0 ? (
        <p className="muted">No task has failed.</p>
      ) : (
        <>
          <ul className="failures">
            {failures.data.items.map((task: Task) => (
              <li key={task.id}>
                <Link to={`/tasks/${encodeURIComponent(task.id)}`}>
                  <code>{task.id}</code>
                </Link>{' '}
                <Badge value={task.state} />{' '}
                <span className="muted">
                  {task.template?.name ?? task.capabilities.join(', ')} ·{' '}
                  <Time iso={task.finished_at ?? task.updated_at} />
                </span>
                {task.error && (
                  <div className="failure-message">
                    <code>{task.error.code}</code> {task.error.message}
                  </div>
                )}
              </li>
            ))}
          </ul>
          <p>
            <Link to="/tasks?state=failed">All failed tasks</Link> ·{' '}
            <Link to="/tasks?state=dead">dead</Link> ·{' '}
            <Link to="/tasks?state=timed_out">timed out</Link>
          </p>
        </>
      )}
    </section>
  );
}

function NodeTable({ nodes }: { nodes: ClusterNode[] }) {
  return (
    <div className="table-wrap">
      <table aria-label="Nodes">
        <thead>
          <tr>
            {[
              'Node',
              'Version',
              'Stores',
              'Last seen',
              'Memory',
              'Event loop delay',
              'Agents',
              'Connections',
            ].map((c) => (
              <th scope="col" key={c}>
                {c}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {nodes.map((n) => (
            <tr key={n.id}>
              <td>
                <code>{n.id}</code>
                <div className="muted">
                  {n.url}
                  {n.health_checker && ' · runs health checks'}
                </div>
              </td>
              <td>{n.version}</td>
              <td>
                {n.store} · {n.kv}
              </td>
              <td>
                <Time iso={n.seen_at} />
              </td>
              <td>{bytes(n.load.rss_bytes)}</td>
              <td>{n.load.event_loop_delay_ms.toFixed(1)} ms</td>
              <td>{n.load.agents}</td>
              <td>{n.load.realtime_connections}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Health() {
  const { client, who } = useSession();
  const systemAdmin = who.tenant.kind === 'system' && who.role === 'admin';
  const ready = useAsync(() => client.ready(), [client]);
  const nodes = useAsync(
    async () => (systemAdmin ? client.cluster.nodes() : undefined),
    [client, systemAdmin],
  );
  useInterval(ready.reload, REFRESH_MS);
  useInterval(nodes.reload, REFRESH_MS);
  const r = ready.data;
  return (
    <section className="panel" aria-labelledby="health-title">
      <h2 id="health-title">Nodes and health</h2>
      {ready.error !== undefined && <ErrorBox error={ready.error} onRetry={ready.reload} />}
      {r === undefined ? (
        ready.error === undefined && <Loading what="the node's health" />
      ) : (
        <>
          <p>
            The node that answered, <code>{r.instance_id}</code> (version {r.version}), is{' '}
            <Badge value={r.status === 'ready' ? 'ready' : 'degraded'} />.
          </p>
          <ul className="checks" aria-label="Dependencies">
            <li>
              <Badge value={r.checks.store.status} /> store ({r.store}, {r.checks.store.latency_ms}{' '}
              ms)
            </li>
            {(
              [
                ['config store', r.checks.kv],
                ['bus', r.checks.bus],
                ['rate limits', r.checks.rate_limit],
              ] as const
            ).map(([name, check]) => (
              <li key={name}>
                <Badge value={check.status} /> {name} ({check.backend}
                {check.latency_ms !== undefined && `, ${check.latency_ms} ms`})
              </li>
            ))}
          </ul>
        </>
      )}
      {systemAdmin ? (
        nodes.error !== undefined ? (
          <ErrorBox error={nodes.error} onRetry={nodes.reload} />
        ) : nodes.data === undefined ? (
          <Loading what="nodes" />
        ) : (
          <>
            <NodeTable nodes={nodes.data} />
            <p className="muted">
              Each node rewrites its entry, with its load, every 30 seconds; one that stops renewing
              its lease leaves the list within 10 seconds.
            </p>
          </>
        )
      ) : (
        <p className="muted">The list of the cluster's nodes is shown to system admins.</p>
      )}
    </section>
  );
}

/** What hosted agents used this month, per day; nothing when they used nothing. */
function HostedUsage() {
  const { client } = useSession();
  const usage = useAsync(() => client.usage.report({ group_by: 'day' }), [client]);
  useInterval(usage.reload, REFRESH_MS);
  if (usage.data === undefined || usage.data.total.model_calls === 0) return null;
  const { total } = usage.data;
  return (
    <section className="panel" aria-labelledby="hosted-usage">
      <h2 id="hosted-usage">
        Hosted agents this month <Link to="/usage">(usage)</Link>
      </h2>
      <p className="muted">
        ${total.cost_usd.toFixed(total.cost_usd < 1 ? 4 : 2)} ·{' '}
        {total.input_tokens.toLocaleString('en-US')} input and{' '}
        {total.output_tokens.toLocaleString('en-US')} output tokens · {total.model_calls} model
        calls
      </p>
      <DailyCharts report={usage.data} />
    </section>
  );
}

export function OverviewPage() {
  const { client, topics } = useSession();
  const { query } = useLocation();
  const asked = Number(query.get('minutes'));
  const minutes = (WINDOWS as readonly number[]).includes(asked) ? asked : 15;
  const stats = useAsync(() => client.stats({ minutes }), [client, minutes]);
  // Live: task and agent events refresh the figures, at most every 2 s.
  const reload = useThrottled(stats.reload, 2000);
  useTopic(topics, 'tasks.*', reload, reload);
  useTopic(topics, 'agents', reload, reload);
  useInterval(stats.reload, REFRESH_MS);

  return (
    <>
      <PageHeader title="Overview">
        <div className="field-inline">
          <label htmlFor="window">Window</label>
          <select
            id="window"
            value={minutes}
            onChange={(e) => navigate(`/overview?minutes=${e.target.value}`, { replace: true })}
          >
            {WINDOWS.map((w) => (
              <option key={w} value={w}>
                last {w} minutes
              </option>
            ))}
          </select>
        </div>
      </PageHeader>
      {stats.error !== undefined && <ErrorBox error={stats.error} onRetry={stats.reload} />}
      {stats.data === undefined ? (
        stats.error === undefined && <Loading what="the overview" />
      ) : (
        <>
          <Summary stats={stats.data} />
          <Charts stats={stats.data} />
        </>
      )}
      <HostedUsage />
      <RecentFailures />
      <Health />
    </>
  );
}
