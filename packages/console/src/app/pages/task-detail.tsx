import { isTerminalState, type Task, type TaskEvent } from '@orchestra/sdk';
import { useEffect, useRef, useState } from 'react';
import { Link } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import { Alert, Badge, ErrorBox, Json, NotLoaded, PageHeader, Time, useAsync } from '../ui.tsx';
import { taskSubject } from './tasks.tsx';

// The timeline is kept in sessionStorage, so that a reload resumes the stream after the
// last event shown instead of replaying it (up to MAX_CACHED events; beyond that a reload
// replays from the start).
const MAX_CACHED = 2_000;
/** Long runs show their latest events; the rest are a click away. */
const TIMELINE_TAIL = 100;
const cacheKey = (id: string) => `orchestra.console.task-events.${id}`;

function cachedEvents(id: string): TaskEvent[] {
  try {
    const raw = window.sessionStorage.getItem(cacheKey(id));
    const parsed: unknown = raw ? JSON.parse(raw) : [];
    return Array.isArray(parsed) ? (parsed as TaskEvent[]) : [];
  } catch {
    return [];
  }
}

function cacheEvents(id: string, events: TaskEvent[]): void {
  try {
    if (events.length <= MAX_CACHED) {
      window.sessionStorage.setItem(cacheKey(id), JSON.stringify(events));
    } else window.sessionStorage.removeItem(cacheKey(id));
  } catch {
    // storage full: the stream still works, a reload replays
  }
}

type EventData = Record<string, unknown>;
const dataOf = (e: TaskEvent): EventData =>
  e.data !== null && typeof e.data === 'object' ? (e.data as EventData) : {};

/** One line describing an event, for the timeline. */
export function eventSummary(e: TaskEvent): string {
  const d = dataOf(e);
  switch (e.type) {
    case 'task.progress':
      return `${String(d.current)}${d.total !== undefined ? ` of ${String(d.total)}` : ''}${d.message ? `: ${String(d.message)}` : ''}`;
    case 'task.log':
      return `[${String(d.level)}] ${String(d.message)}`;
    case 'task.output':
      return typeof d.data === 'string' ? d.data : JSON.stringify(d.data);
    case 'task.custom':
      return `${String(d.name)} ${JSON.stringify(d.data ?? null)}`;
    default: {
      const parts: string[] = [];
      if (d.attempt !== undefined) parts.push(`attempt ${String(d.attempt)}`);
      if (typeof d.agent_id === 'string') parts.push(`agent ${d.agent_id}`);
      if (typeof d.reason === 'string') parts.push(d.reason);
      if (d.error && typeof d.error === 'object') {
        parts.push(String((d.error as EventData).message ?? ''));
      }
      if (typeof d.duration_ms === 'number') parts.push(`${d.duration_ms} ms`);
      return parts.join(' · ');
    }
  }
}

/** Streams the task's events into state, resuming after the cached ones. */
function useTaskEvents(id: string, onStateChange: () => void) {
  const { client } = useSession();
  const stateChanged = useRef(onStateChange);
  stateChanged.current = onStateChange;
  const [events, setEvents] = useState<TaskEvent[]>(() => cachedEvents(id));
  const [gap, setGap] = useState(false);
  const [error, setError] = useState<unknown>();
  const [live, setLive] = useState(false);
  const [attemptKey, setAttemptKey] = useState(0);
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new attemptKey restarts the stream
  useEffect(() => {
    const controller = new AbortController();
    let known = cachedEvents(id);
    setEvents(known);
    setError(undefined);
    const after = known.at(-1)?.offset ?? 0;
    setLive(true);
    (async () => {
      for await (const item of client.tasks.events(id, { after, signal: controller.signal })) {
        if (!('offset' in item)) {
          setGap(true);
          continue;
        }
        if (known.length > 0 && item.offset <= (known.at(-1)?.offset ?? 0)) continue;
        known = [...known, item];
        cacheEvents(id, known);
        setEvents(known);
        if (!/^task\.(progress|output|log|custom)$/.test(item.type)) stateChanged.current();
      }
    })()
      .catch((err: unknown) => {
        if (!controller.signal.aborted) setError(err);
      })
      .finally(() => {
        if (!controller.signal.aborted) setLive(false);
      });
    return () => controller.abort();
  }, [client, id, attemptKey]);
  return { events, gap, error, live, restart: () => setAttemptKey((k) => k + 1) };
}

export function TaskDetailPage({ id }: { id: string }) {
  const { client, canWrite } = useSession();
  const task = useAsync(() => client.tasks.get(id), [client, id]);
  const stream = useTaskEvents(id, task.reload);
  const [actionError, setActionError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [showAll, setShowAll] = useState(false);
  // An agent connecting makes no task event: while nobody could take the task, look again
  // now and then, so that the notice goes once one can.
  const waiting = task.data?.waiting != null;
  const reload = task.reload;
  useEffect(() => {
    if (!waiting) return;
    const timer = setInterval(reload, 5_000);
    return () => clearInterval(timer);
  }, [waiting, reload]);

  const act = async (what: 'cancel' | 'retry') => {
    setBusy(true);
    setActionError(undefined);
    try {
      await (what === 'cancel' ? client.tasks.cancel(id) : client.tasks.retry(id));
      task.reload();
      if (what === 'retry') stream.restart(); // the stream ended with the last attempt
    } catch (err) {
      setActionError(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  if (task.data === undefined) {
    return <NotLoaded result={task} title="Task" what="the task" />;
  }
  const t: Task = task.data;
  const terminal = isTerminalState(t.state);
  const attempt = t.attempt;
  const ofAttempt = (e: TaskEvent) => dataOf(e).attempt === attempt;
  const progress = stream.events.filter((e) => e.type === 'task.progress' && ofAttempt(e)).at(-1);
  const output = stream.events.filter((e) => e.type === 'task.output' && ofAttempt(e));
  const p = progress ? dataOf(progress) : undefined;
  // Failed attempts before the current outcome: history, never the outcome of a task that
  // then succeeded (its `error` still holds the last failed attempt's).
  const earlierFailures = stream.events
    .filter((e) => e.type === 'task.attempt_failed')
    .map((e) => dataOf(e))
    .filter((d) => !(isTerminalState(t.state) && t.state !== 'succeeded' && d.attempt === attempt))
    .map((d) => ({ attempt: Number(d.attempt), error: (d.error ?? {}) as EventData }));
  const ended = terminal && t.state !== 'succeeded' ? t.error : null;

  return (
    <>
      <PageHeader title={`Task ${t.id}`}>
        {canWrite && !terminal && (
          <button
            type="button"
            onClick={() => act('cancel')}
            disabled={busy || t.cancel_requested_at !== null}
          >
            {t.cancel_requested_at ? 'Cancelling…' : 'Cancel task'}
          </button>
        )}
        {canWrite && terminal && t.state !== 'succeeded' && (
          <button type="button" onClick={() => act('retry')} disabled={busy}>
            Retry task
          </button>
        )}
      </PageHeader>
      <Alert message={actionError} />
      {t.waiting?.reason === 'no_agent' && (
        <p className="notice" role="status">
          Waiting: {t.waiting.message}. The task stays queued until such an agent connects.
        </p>
      )}
      {t.waiting?.reason === 'approval' && (
        <p className="notice" role="status">
          Awaiting approval: the run {t.waiting.message}. It goes on once{' '}
          {t.waiting.approvals.length === 1 ? 'it is' : 'they are'} decided on the{' '}
          <Link to="/tool-approvals">Approvals</Link> page.
        </p>
      )}
      <section className="panel" aria-label="Summary">
        <dl className="facts">
          <dt>State</dt>
          <dd>
            <Badge value={t.state} /> <span className="sr-only">state {t.state}</span>
          </dd>
          <dt>Template or capabilities</dt>
          <dd>{taskSubject(t)}</dd>
          <dt>Attempt</dt>
          <dd>
            {t.attempt} of {t.max_attempts}
          </dd>
          <dt>Agent</dt>
          <dd>
            {t.agent_id ? (
              <Link to={`/agents/${encodeURIComponent(t.agent_id)}`}>{t.agent_id}</Link>
            ) : (
              '–'
            )}
          </dd>
          <dt>Session</dt>
          <dd>
            {t.session_id ? (
              <Link to={`/tasks?session=${encodeURIComponent(t.session_id)}`}>{t.session_id}</Link>
            ) : (
              '–'
            )}
          </dd>
          <dt>Instance</dt>
          <dd>
            {t.instance_id ? (
              <Link to={`/instances/${encodeURIComponent(t.instance_id)}`}>{t.instance_id}</Link>
            ) : (
              '–'
            )}
          </dd>
          <dt>Priority</dt>
          <dd>{t.priority}</dd>
          <dt>Created</dt>
          <dd>
            <Time iso={t.created_at} />
          </dd>
          <dt>Finished</dt>
          <dd>
            <Time iso={t.finished_at} />
          </dd>
        </dl>
        {p && (
          <div className="progress">
            <label htmlFor="task-progress">
              Progress{p.message ? `: ${String(p.message)}` : ''}
            </label>
            <progress
              id="task-progress"
              value={Number(p.current)}
              max={p.total !== undefined ? Number(p.total) : undefined}
            />
            <span className="muted">
              {String(p.current)}
              {p.total !== undefined ? ` / ${String(p.total)}` : ''}
            </span>
          </div>
        )}
      </section>
      <div className="columns">
        <section className="panel" aria-labelledby="input-title">
          <h2 id="input-title">Input</h2>
          <Json value={t.input} label="Input" />
        </section>
        <section className="panel" aria-labelledby="outcome-title">
          <h2 id="outcome-title">{ended ? 'Error' : 'Result'}</h2>
          {ended ? (
            <>
              <p className="error-box">
                <code>{ended.code}</code> {ended.message}
              </p>
              {ended.details !== undefined && <Json value={ended.details} label="Error details" />}
            </>
          ) : t.state === 'succeeded' ? (
            <Json value={t.result} label="Result" />
          ) : (
            <p className="muted">Not finished yet.</p>
          )}
          {earlierFailures.length > 0 && (
            <>
              <h3>Earlier attempts</h3>
              <ul className="attempts" aria-label="Earlier attempts">
                {earlierFailures.map((f) => (
                  <li key={f.attempt}>
                    Attempt {f.attempt} failed: <code>{String(f.error.code ?? '')}</code>{' '}
                    {String(f.error.message ?? '')}
                  </li>
                ))}
              </ul>
            </>
          )}
          {output.length > 0 && (
            <>
              <h3>Streamed output</h3>
              <figure className="json-figure" aria-label="Streamed output">
                <pre className="json">{output.map((e) => eventSummary(e)).join('\n')}</pre>
              </figure>
            </>
          )}
        </section>
      </div>
      <section className="panel" aria-labelledby="timeline-title">
        <h2 id="timeline-title">
          Timeline{' '}
          {stream.live && !terminal && (
            <span className="live" role="status">
              live
            </span>
          )}
        </h2>
        {stream.gap && (
          <p className="notice">Older events are no longer retained; the timeline starts later.</p>
        )}
        {stream.error !== undefined && <ErrorBox error={stream.error} onRetry={stream.restart} />}
        {stream.events.length > TIMELINE_TAIL && !showAll && (
          <p className="muted">
            Showing the last {TIMELINE_TAIL} of {stream.events.length} events.{' '}
            <button type="button" className="link" onClick={() => setShowAll(true)}>
              Show all
            </button>
          </p>
        )}
        {stream.events.length === 0 ? (
          <p className="muted">No events yet.</p>
        ) : (
          <ol className="timeline" aria-label="Events">
            {(showAll ? stream.events : stream.events.slice(-TIMELINE_TAIL)).map((e) => (
              <li key={e.offset} data-type={e.type}>
                <span className="offset">#{e.offset}</span>
                <Time iso={e.time} />
                <span className="type">{e.type.replace(/^task\./, '')}</span>
                <span className="summary">{eventSummary(e)}</span>
              </li>
            ))}
          </ol>
        )}
      </section>
    </>
  );
}
