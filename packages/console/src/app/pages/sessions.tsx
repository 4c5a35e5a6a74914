import type { Session, TaskEvent } from '@orchestra/sdk';
import { useEffect, useState } from 'react';
import { Link } from '../router.tsx';
import { useSession } from '../session.tsx';
import { ErrorBox, NotLoaded, PagedTable, PageHeader, Time, useAsync, usePager } from '../ui.tsx';
import { eventSummary } from './task-detail.tsx';

export function SessionsPage() {
  const { client } = useSession();
  const pager = usePager('');
  const sessions = useAsync(
    () => client.sessions.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  return (
    <>
      <PageHeader title="Sessions" />
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
  const { client } = useSession();
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
