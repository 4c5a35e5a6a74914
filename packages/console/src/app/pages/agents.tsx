import type { Agent, AgentStatus } from '@orchestra/sdk';
import { useState } from 'react';
import { useTopic } from '../live.ts';
import { Link, navigate, setQueryParam, useLocation } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  ConfirmButton,
  FilterField,
  NotLoaded,
  PagedTable,
  PageHeader,
  SelectField,
  Time,
  useAsync,
  usePager,
  useThrottled,
} from '../ui.tsx';

function load(agent: Agent): string {
  const parts = [`${agent.in_flight.length} / ${agent.max_concurrency} tasks`];
  if (agent.load?.cpu !== undefined) parts.push(`CPU ${Math.round(agent.load.cpu * 100)}%`);
  if (agent.load?.memory !== undefined)
    parts.push(`memory ${Math.round(agent.load.memory * 100)}%`);
  return parts.join(' · ');
}

/** Every agent status, in the order of the filter (the record makes the list complete). */
const STATUSES = Object.keys({
  online: true,
  busy: true,
  draining: true,
  offline: true,
  error: true,
} satisfies Record<AgentStatus, true>) as AgentStatus[];

export function AgentsPage() {
  const { client, topics } = useSession();
  const { query } = useLocation();
  const status = STATUSES.find((s) => s === query.get('status')) ?? '';
  const capability = query.get('capability') ?? '';
  const pager = usePager(`${status}|${capability}`);
  const agents = useAsync(
    () =>
      client.agents.list({
        limit: 50,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
        ...(status ? { status } : {}),
        ...(capability ? { capability } : {}),
      }),
    [client, pager.cursor, status, capability],
  );
  // Status changes arrive on `agents`; load and in-flight counts change with tasks.
  const reload = useThrottled(agents.reload, 500);
  useTopic(topics, 'agents', reload, reload);
  useTopic(topics, 'tasks.*', reload);

  return (
    <>
      <PageHeader title="Agents" />
      {/* Filters live in the address, as on the tasks page: a filtered list can be linked to. */}
      <form className="filters" aria-label="Filter agents" onSubmit={(e) => e.preventDefault()}>
        <SelectField<AgentStatus | ''>
          id="filter-status"
          label="Status"
          value={status}
          options={[{ value: '', label: 'Any' }, ...STATUSES.map((s) => ({ value: s, label: s }))]}
          onChange={(value) => setQueryParam('status', value)}
        />
        <FilterField
          id="filter-capability"
          label="Capability"
          value={capability}
          placeholder="reports"
          maxLength={100}
          onApply={(value) => setQueryParam('capability', value)}
        />
      </form>
      <PagedTable
        result={agents}
        pager={pager}
        what="agents"
        empty={
          status || capability ? (
            'No agent matches these filters.'
          ) : (
            <>
              No agent has connected yet. Start one with the SDK's <code>AgentWorker</code> (see the
              README) and it appears here.
            </>
          )
        }
        columns={['Agent', 'Status', 'Capabilities', 'Load', 'Last heartbeat']}
        row={(agent: Agent) => (
          <tr key={agent.id}>
            <td>
              <Link to={`/agents/${encodeURIComponent(agent.id)}`}>{agent.id}</Link>
              {agent.name !== agent.id && <div className="muted">{agent.name}</div>}
            </td>
            <td>
              <Badge value={agent.status} />
            </td>
            <td>{agent.capabilities.join(', ') || <span className="muted">–</span>}</td>
            <td>{load(agent)}</td>
            <td>
              <Time iso={agent.last_heartbeat_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}

export function AgentDetailPage({ id }: { id: string }) {
  const { client, topics, canWrite } = useSession();
  const agent = useAsync(() => client.agents.get(id), [client, id]);
  const reload = useThrottled(agent.reload, 500);
  useTopic(topics, 'agents', reload, reload);
  useTopic(topics, 'tasks.*', reload);
  const [actionError, setActionError] = useState<string | undefined>();
  if (agent.data === undefined) {
    return <NotLoaded result={agent} title={`Agent ${id}`} what="the agent" />;
  }
  const a = agent.data;
  const drain = async () => {
    setActionError(undefined);
    try {
      await client.agents.drain(id);
      agent.reload();
    } catch (err) {
      setActionError(describeError(err));
    }
  };
  return (
    <>
      <PageHeader title={`Agent ${a.id}`}>
        {canWrite && a.status !== 'offline' && a.status !== 'error' && a.status !== 'draining' && (
          <button type="button" onClick={drain}>
            Drain
          </button>
        )}
        {canWrite && (a.status === 'offline' || a.status === 'error') && (
          <ConfirmButton
            label="Forget"
            confirmLabel="Forget this agent"
            title="Removes its record; if it connects again it is recorded anew"
            onConfirm={async () => {
              await client.agents.delete(id);
              navigate('/agents');
            }}
          />
        )}
      </PageHeader>
      <Alert message={actionError} />
      <section className="panel" aria-label="Agent">
        <dl className="facts">
          <dt>Status</dt>
          <dd>
            <Badge value={a.status} />
            {a.status_reason && <span className="muted"> {a.status_reason}</span>}
          </dd>
          <dt>Name</dt>
          <dd>{a.name}</dd>
          <dt>Capabilities</dt>
          <dd>{a.capabilities.join(', ') || '–'}</dd>
          <dt>Load</dt>
          <dd>{load(a)}</dd>
          <dt>Weight</dt>
          <dd>{a.weight}</dd>
          <dt>Labels</dt>
          <dd>
            {Object.entries(a.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ') || '–'}
          </dd>
          <dt>SDK</dt>
          <dd>{a.sdk ? `${a.sdk.name} ${a.sdk.version}` : '–'}</dd>
          <dt>Node</dt>
          <dd>{a.node_id ?? '–'}</dd>
          <dt>Connected</dt>
          <dd>
            <Time iso={a.connected_at} />
          </dd>
          <dt>Last heartbeat</dt>
          <dd>
            <Time iso={a.last_heartbeat_at} />
          </dd>
        </dl>
      </section>
      <section className="panel" aria-labelledby="in-flight-title">
        <h2 id="in-flight-title">Tasks it holds</h2>
        {a.in_flight.length === 0 ? (
          <p className="muted">None.</p>
        ) : (
          <ul>
            {a.in_flight.map((taskId) => (
              <li key={taskId}>
                <Link to={`/tasks/${encodeURIComponent(taskId)}`}>
                  <code>{taskId}</code>
                </Link>
              </li>
            ))}
          </ul>
        )}
        <p>
          <Link to={`/tasks?agent=${encodeURIComponent(a.id)}`}>All its tasks</Link>
        </p>
      </section>
    </>
  );
}
