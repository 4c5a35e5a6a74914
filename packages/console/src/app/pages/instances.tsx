import { INSTANCE_STATES, type Instance, type InstanceState } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { useTopic } from '../live.ts';
import { Link, navigate, setQueryParam, useLocation } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  ConfirmButton,
  Empty,
  ErrorBox,
  FilterSelect,
  Loading,
  NotLoaded,
  PagedTable,
  PageHeader,
  Time,
  useAction,
  useAsync,
  usePager,
  useThrottled,
} from '../ui.tsx';
import { CheckpointsTab } from './instance-checkpoints.tsx';
import { FilesTab } from './instance-files.tsx';
import { PortsTab } from './instance-ports.tsx';
import { TerminalsTab } from './instance-terminals.tsx';

// Workspaces: the instances of the tenant, live, and one instance's page with its
// terminals, files and checkpoints (issue 22).

/** Bytes as a person reads them: 512 MiB, 2 GiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

const percent = (x: number) => `${Math.round(x * 100)}%`;

/** Start or stop, as the state allows, with the action's error next to it. */
function StartStop({ instance, onDone }: { instance: Instance; onDone: () => void }) {
  const { client } = useSession();
  const action = useAction();
  const running = ['running', 'starting', 'creating'].includes(instance.state);
  const label = running ? 'Stop' : 'Start';
  return (
    <>
      <button
        type="button"
        disabled={action.busy || instance.state === 'stopping' || instance.state === 'creating'}
        aria-label={`${label} ${instance.name}`}
        onClick={() =>
          void action.run(async () => {
            if (running) await client.instances.stop(instance.id);
            else await client.instances.start(instance.id);
            onDone();
          })
        }
      >
        {action.busy ? `${label}ping…` : label}
      </button>
      <Alert message={action.problem} />
    </>
  );
}

function CreateInstances({ onCreated }: { onCreated: () => void }) {
  const { client } = useSession();
  const templates = useAsync(() => client.workspaceTemplates.list({ limit: 200 }), [client]);
  const [template, setTemplate] = useState('');
  const [name, setName] = useState('');
  const [count, setCount] = useState('1');
  const [outcome, setOutcome] = useState<string | undefined>();
  const action = useAction();
  const chosen = template || templates.data?.items[0]?.name || '';
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setOutcome(undefined);
    const n = Number(count);
    void action.run(async () => {
      if (!Number.isInteger(n) || n < 1 || n > 100) {
        throw new Error('How many: a whole number from 1 to 100.');
      }
      const base = { template: chosen, ...(name.trim() ? { name: name.trim() } : {}) };
      if (n === 1) {
        const created = await client.instances.create(base);
        setOutcome(`Created ${created.name}: ${created.state}.`);
      } else {
        const items = await client.instances.createMany(Array.from({ length: n }, () => base));
        const failed = items.flatMap((i) => ('error' in i ? [i.error.message] : []));
        setOutcome(
          `Created ${n - failed.length} of ${n}.${failed.length > 0 ? ` ${failed.length} failed: ${failed[0]}` : ''}`,
        );
      }
      setName('');
      onCreated();
    });
  };
  if (templates.error !== undefined)
    return <ErrorBox error={templates.error} onRetry={templates.reload} />;
  if (templates.data === undefined) return <Loading what="workspace templates" />;
  if (templates.data.items.length === 0) {
    return (
      <Empty>
        No workspace template yet: create one with POST /v1/workspace-templates (the README's
        Workspaces section shows how), then create instances from it here.
      </Empty>
    );
  }
  return (
    <form className="panel inline-form" aria-label="Create instances" onSubmit={submit}>
      <div className="field">
        <label htmlFor="instance-template">Template</label>
        <select id="instance-template" value={chosen} onChange={(e) => setTemplate(e.target.value)}>
          {templates.data.items.map((t) => (
            <option key={t.id} value={t.name}>
              {t.name} (v{t.version})
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="instance-name">Name</label>
        <input
          id="instance-name"
          value={name}
          maxLength={128}
          placeholder="optional"
          onChange={(e) => setName(e.target.value)}
        />
      </div>
      <div className="field">
        <label htmlFor="instance-count">How many</label>
        <input
          id="instance-count"
          type="number"
          min={1}
          max={100}
          step={1}
          value={count}
          onChange={(e) => setCount(e.target.value)}
        />
      </div>
      <button type="submit" disabled={action.busy}>
        {action.busy ? 'Creating…' : 'Create'}
      </button>
      <Alert message={action.problem} />
      {outcome && (
        <p className="muted" role="status">
          {outcome}
        </p>
      )}
    </form>
  );
}

function Usage() {
  const { client, topics } = useSession();
  const usage = useAsync(() => client.instances.usage(), [client]);
  const quotas = useAsync(() => client.instances.quotas(), [client]);
  const reload = useThrottled(() => {
    usage.reload();
    quotas.reload();
  }, 2000);
  useTopic(topics, 'instances', reload);
  return (
    <section className="panel" aria-labelledby="usage-title">
      <h2 id="usage-title">Usage</h2>
      {usage.error !== undefined && <ErrorBox error={usage.error} onRetry={usage.reload} />}
      {quotas.data && (
        <div className="table-wrap">
          <table aria-label="Quotas">
            <thead>
              <tr>
                <th scope="col">Quota</th>
                <th scope="col">Used</th>
                <th scope="col">Limit</th>
              </tr>
            </thead>
            <tbody>
              {quotas.data.quotas.map((q) => (
                <tr key={q.name}>
                  <td>{q.name}</td>
                  <td>{q.name.endsWith('_bytes') ? bytes(q.used) : q.used}</td>
                  <td>
                    {q.limit === 0 ? 'none' : q.name.endsWith('_bytes') ? bytes(q.limit) : q.limit}
                    <span className="muted">
                      {' '}
                      ({q.source === 'tenant' ? 'the tenant’s' : q.setting})
                    </span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {usage.data && (
        <>
          <p className="muted">
            Node {usage.data.node.node_id}: {usage.data.node.instances_running} running,{' '}
            {usage.data.node.cpus} CPUs, {bytes(usage.data.node.memory_free_bytes)} of{' '}
            {bytes(usage.data.node.memory_total_bytes)} memory free, load{' '}
            {usage.data.node.load_average.map((l) => l.toFixed(2)).join(' ')}.
          </p>
          {usage.data.instances.some((i) => i.usage !== null) && (
            <div className="table-wrap">
              <table aria-label="Instance usage">
                <thead>
                  <tr>
                    <th scope="col">Instance</th>
                    <th scope="col">CPU</th>
                    <th scope="col">Memory</th>
                    <th scope="col">Disk</th>
                    <th scope="col">Processes</th>
                  </tr>
                </thead>
                <tbody>
                  {usage.data.instances
                    .filter((i) => i.usage !== null)
                    .map((i) => (
                      <tr key={i.instance_id}>
                        <td>
                          <Link to={`/instances/${i.instance_id}`}>{i.name}</Link>
                        </td>
                        <td>{percent(i.usage?.cpu_utilization ?? 0)}</td>
                        <td>
                          {bytes(i.usage?.memory_bytes ?? 0)} of {bytes(i.resources.memory_bytes)}
                        </td>
                        <td>
                          {bytes(i.usage?.disk_bytes ?? 0)} of {bytes(i.resources.storage_bytes)}
                        </td>
                        <td>{i.usage?.processes ?? 0}</td>
                      </tr>
                    ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}

export function InstancesPage() {
  const { client, topics, canWrite } = useSession();
  const { query } = useLocation();
  const state = query.get('state') ?? '';
  const pager = usePager(state);
  const instances = useAsync(
    () =>
      client.instances.list({
        limit: 50,
        ...(state ? { state: [state as InstanceState] } : {}),
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
      }),
    [client, state, pager.cursor],
  );
  const reload = useThrottled(instances.reload, 300);
  useTopic(topics, 'instances', reload, reload);
  return (
    <>
      <PageHeader title="Instances" />
      {canWrite && <CreateInstances onCreated={reload} />}
      <div className="filters">
        <FilterSelect
          id="filter-state"
          label="State"
          name="state"
          value={state}
          options={INSTANCE_STATES}
        />
      </div>
      <PagedTable
        result={instances}
        pager={pager}
        what="instances"
        empty={state ? 'No instance is in this state.' : 'No instance yet.'}
        columns={['Instance', 'Template', 'State', 'Created', ...(canWrite ? [''] : [])]}
        row={(i: Instance) => (
          <tr key={i.id} data-instance={i.id}>
            <td>
              <Link to={`/instances/${i.id}`}>{i.name}</Link>
              <div className="muted">{i.id}</div>
            </td>
            <td>
              {i.template.name} v{i.template.version}
            </td>
            <td>
              <Badge value={i.state} />
              <div className="muted">{i.state_reason}</div>
            </td>
            <td>
              <Time iso={i.created_at} />
            </td>
            {canWrite && (
              <td className="row-actions">
                <StartStop instance={i} onDone={reload} />
                <ConfirmButton
                  label="Delete"
                  ariaLabel={`Delete ${i.name}`}
                  confirmLabel={`Delete ${i.name}`}
                  onConfirm={async () => {
                    await client.instances.delete(i.id);
                    reload();
                  }}
                />
              </td>
            )}
          </tr>
        )}
      />
      <Usage />
    </>
  );
}

const TABS = [
  { id: 'terminals', label: 'Terminals' },
  { id: 'files', label: 'Files' },
  { id: 'checkpoints', label: 'Checkpoints' },
  { id: 'ports', label: 'Ports' },
] as const;
type Tab = (typeof TABS)[number]['id'];

export function InstancePage({ id }: { id: string }) {
  const { client, topics, canWrite } = useSession();
  const { query } = useLocation();
  const instance = useAsync(() => client.instances.get(id), [client, id]);
  const reload = useThrottled(instance.reload, 300);
  useTopic(
    topics,
    'instances',
    (m) => {
      if ((m.data as { instance_id?: string } | undefined)?.instance_id === id) reload();
    },
    reload,
  );
  const [problem, setProblem] = useState<string | undefined>();
  const tab = (TABS.find((t) => t.id === query.get('tab'))?.id ?? 'terminals') as Tab;
  if (instance.data === undefined) {
    return <NotLoaded result={instance} title={`Instance ${id}`} what="the instance" />;
  }
  const i = instance.data;
  const act = async (what: () => Promise<unknown>) => {
    setProblem(undefined);
    try {
      await what();
    } catch (err) {
      setProblem(describeError(err));
    }
    instance.reload();
  };
  return (
    <>
      <PageHeader title={`Instance ${i.name}`}>
        {canWrite && (
          <>
            <StartStop instance={i} onDone={instance.reload} />
            <Link to={`/tasks/new?instance=${encodeURIComponent(i.id)}`} className="button">
              Submit a task here
            </Link>
            <button
              type="button"
              disabled={i.state !== 'running'}
              onClick={() => void act(() => client.instances.restart(i.id))}
            >
              Restart
            </button>
            <ConfirmButton
              label="Delete"
              confirmLabel={`Delete ${i.name}`}
              onConfirm={async () => {
                await client.instances.delete(i.id);
                navigate('/instances');
              }}
            />
          </>
        )}
      </PageHeader>
      <Alert message={problem} />
      <section className="panel" aria-label="Instance">
        <dl className="facts">
          <dt>State</dt>
          <dd>
            <Badge value={i.state} /> <span className="muted">{i.state_reason}</span>
          </dd>
          <dt>ID</dt>
          <dd>
            <code>{i.id}</code>
          </dd>
          <dt>Template</dt>
          <dd>
            {i.template.name} v{i.template.version} ({i.driver})
          </dd>
          <dt>Resources</dt>
          <dd>
            {i.resources.cpus} CPU, {bytes(i.resources.memory_bytes)} memory,{' '}
            {bytes(i.resources.storage_bytes)} storage
            {i.resource_limits && (
              <span className="muted"> (limited by {i.resource_limits.mechanism})</span>
            )}
          </dd>
          <dt>Node</dt>
          <dd>{i.node_id}</dd>
          <dt>Labels</dt>
          <dd>
            {Object.entries(i.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ') || '–'}
          </dd>
          <dt>Created</dt>
          <dd>
            <Time iso={i.created_at} />
          </dd>
          <dt>Last active</dt>
          <dd>
            <Time iso={i.last_active_at} />
          </dd>
          <dt>Expires</dt>
          <dd>{i.expires_at ? <Time iso={i.expires_at} /> : 'never'}</dd>
        </dl>
      </section>
      <nav className="tabs" aria-label="Instance sections">
        <ul className="tabs-list">
          {TABS.map((t) => (
            <li key={t.id}>
              <a
                href={`?tab=${t.id}`}
                className="tab"
                aria-current={t.id === tab ? 'page' : undefined}
                onClick={(event) => {
                  event.preventDefault();
                  setQueryParam('tab', t.id === 'terminals' ? '' : t.id);
                }}
              >
                {t.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      {tab === 'terminals' && <TerminalsTab instance={i} />}
      {tab === 'files' && <FilesTab instance={i} />}
      {tab === 'checkpoints' && <CheckpointsTab instance={i} />}
      {tab === 'ports' && <PortsTab instance={i} />}
    </>
  );
}
