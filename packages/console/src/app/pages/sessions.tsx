import type { MultitaskStrategy, Session, TaskEvent } from '@orchestra/sdk';
import { type FormEvent, useEffect, useState } from 'react';
import { Link, navigate } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  ErrorBox,
  NotLoaded,
  PagedTable,
  PageHeader,
  SelectField,
  TextField,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';
import { eventSummary } from './task-detail.tsx';

const STRATEGIES: { value: MultitaskStrategy; what: string }[] = [
  { value: 'enqueue', what: 'enqueue: run it after the unfinished ones' },
  { value: 'reject', what: 'reject: refuse it while one is unfinished' },
  { value: 'interrupt', what: 'interrupt: cancel the unfinished ones, then run it' },
];

function CreateSession() {
  const { client } = useSession();
  const [name, setName] = useState('');
  const [strategy, setStrategy] = useState<MultitaskStrategy>('enqueue');
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    setBusy(true);
    try {
      const session = await client.sessions.create({
        ...(name.trim() ? { name: name.trim() } : {}),
        multitask_strategy: strategy,
      });
      navigate(`/sessions/${encodeURIComponent(session.id)}`);
    } catch (err) {
      setProblem(describeError(err));
      setBusy(false);
    }
  };
  return (
    <details className="panel">
      <summary>New session</summary>
      <form className="form" onSubmit={submit} aria-label="New session">
        <TextField
          id="session-name"
          label="Name (optional)"
          value={name}
          onChange={setName}
          maxLength={200}
        />
        <SelectField
          id="session-strategy"
          label="A task submitted while another is unfinished"
          value={strategy}
          options={STRATEGIES.map((s) => ({ value: s.value, label: s.what }))}
          onChange={setStrategy}
        />
        <Alert message={problem} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            Create session
          </button>
        </div>
      </form>
    </details>
  );
}

export function SessionsPage() {
  const { client, canWrite } = useSession();
  const pager = usePager('');
  const sessions = useAsync(
    () => client.sessions.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Sessions" />
      {canWrite && <CreateSession />}
      <PagedTable
        result={sessions}
        pager={pager}
        what="sessions"
        empty="No sessions yet. A session groups tasks submitted with its session_id into one ordered history."
        columns={['Session', 'Name', 'Tasks', 'Unfinished', 'Strategy', 'Created']}
        row={(s: Session) => (
          <tr key={s.id}>
            <td>
              <Link to={`/sessions/${encodeURIComponent(s.id)}`}>
                <code>{s.id}</code>
              </Link>
            </td>
            <td>{s.name ?? <span className="muted">–</span>}</td>
            <td>{s.tasks.total}</td>
            <td>{s.tasks.unfinished.length}</td>
            <td>{s.multitask_strategy}</td>
            <td>
              <Time iso={s.created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}

/** A session's whole history: every event of every task in it, live. */
export function SessionDetailPage({ id }: { id: string }) {
  const { client, canWrite } = useSession();
  const session = useAsync(() => client.sessions.get(id), [client, id]);
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [gap, setGap] = useState(false);
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    const controller = new AbortController();
    setEvents([]);
    (async () => {
      for await (const item of client.sessions.events(id, { signal: controller.signal })) {
        if (!('offset' in item)) setGap(true);
        else setEvents((all) => [...all, item]);
      }
    })().catch((err: unknown) => {
      if (!controller.signal.aborted) setError(err);
    });
    return () => controller.abort();
  }, [client, id]);

  if (session.data === undefined) {
    return <NotLoaded result={session} title={`Session ${id}`} what="the session" />;
  }
  const s = session.data;
  const taskOf = (e: TaskEvent) => {
    const data = e.data as { task_id?: unknown } | null;
    return typeof data?.task_id === 'string' ? data.task_id : undefined;
  };
  return (
    <>
      <PageHeader title={s.name ? `Session ${s.name}` : `Session ${s.id}`}>
        <Link to={`/tasks?session=${encodeURIComponent(s.id)}`} className="button">
          Its tasks
        </Link>
        {canWrite && (
          <Link to={`/tasks/new?session=${encodeURIComponent(s.id)}`} className="button primary">
            Submit a task in it
          </Link>
        )}
        {canWrite && (
          <ConfirmButton
            label="Delete"
            confirmLabel="Delete it with its tasks"
            onConfirm={async () => {
              await client.sessions.delete(id);
              navigate('/sessions');
            }}
          />
        )}
      </PageHeader>
      <section className="panel" aria-label="Session">
        <dl className="facts">
          <dt>Id</dt>
          <dd>
            <code>{s.id}</code>
          </dd>
          <dt>Tasks</dt>
          <dd>
            {s.tasks.total} ({s.tasks.unfinished.length} unfinished)
          </dd>
          <dt>When busy</dt>
          <dd>{s.multitask_strategy}</dd>
          <dt>Created</dt>
          <dd>
            <Time iso={s.created_at} />
          </dd>
        </dl>
      </section>
      <section className="panel" aria-labelledby="history-title">
        <h2 id="history-title">History</h2>
        {gap && <p className="notice">Older events are no longer retained.</p>}
        {error !== undefined && <ErrorBox error={error} />}
        {events.length === 0 ? (
          <p className="muted">Nothing yet.</p>
        ) : (
          <ol className="timeline" aria-label="Session history">
            {events.map((e) => {
              const taskId = taskOf(e);
              return (
                <li key={e.offset} data-type={e.type}>
                  <span className="offset">#{e.offset}</span>
                  <Time iso={e.time} />
                  <span className="type">{e.type.replace(/^(task|session)\./, '')}</span>
                  <span className="summary">
                    {taskId && (
                      <Link to={`/tasks/${encodeURIComponent(taskId)}`}>
                        <code>{taskId}</code>
                      </Link>
                    )}{' '}
                    {eventSummary(e)}
                  </span>
                </li>
              );
            })}
          </ol>
        )}
      </section>
    </>
  );
}
