import { TASK_STATES, type Task, type TaskState } from '@orchestra/sdk';
import { useTopic } from '../live.ts';
import { Link, setQueryParam, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import {
  Badge,
  FilterField,
  FilterSelect,
  PagedTable,
  PageHeader,
  Time,
  useAsync,
  usePager,
  useThrottled,
} from '../ui.tsx';

const PAGE_SIZE = 25;

/** What ran or runs the task: its template, or the capabilities it asked for. */
export function taskSubject(task: Task): string {
  return task.template
    ? `${task.template.name} v${task.template.version}`
    : task.capabilities.join(', ') || '–';
}

export function TasksPage() {
  const { client, topics, canWrite } = useSession();
  const { query } = useLocation();
  const state = query.get('state') ?? '';
  const template = query.get('template') ?? '';
  const session = query.get('session') ?? '';
  const agent = query.get('agent') ?? '';
  const pager = usePager(`${state}|${template}|${session}|${agent}`);
  const tasks = useAsync(
    () =>
      client.tasks.list({
        limit: PAGE_SIZE,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
        ...(state ? { state: state as TaskState } : {}),
        ...(template ? { template } : {}),
        ...(session ? { session_id: session } : {}),
        ...(agent ? { agent_id: agent } : {}),
      }),
    [client, pager.cursor, state, template, session, agent],
  );
  // Live: any task event of the tenant reloads the page shown (at most twice a second).
  const reload = useThrottled(tasks.reload, 500);
  useTopic(topics, 'tasks.*', reload, reload);

  return (
    <>
      <PageHeader title="Tasks">
        {canWrite && (
          <Link to="/tasks/new" className="button primary">
            Submit a task
          </Link>
        )}
      </PageHeader>
      <form className="filters" aria-label="Filter tasks" onSubmit={(e) => e.preventDefault()}>
        <FilterSelect
          id="filter-state"
          label="State"
          name="state"
          value={state}
          options={TASK_STATES}
        />
        <FilterField
          id="filter-template"
          label="Template"
          value={template}
          placeholder="name or id"
          onApply={(value) => setQueryParam('template', value)}
        />
        {(
          [
            ['session', 'Session', session],
            ['agent', 'Agent', agent],
          ] as const
        ).map(
          ([name, label, value]) =>
            value && (
              <div className="field" key={name}>
                <span className="label">{label}</span>
                <span>
                  <code>{value}</code>{' '}
                  <button type="button" className="link" onClick={() => setQueryParam(name, '')}>
                    clear
                  </button>
                </span>
              </div>
            ),
        )}
      </form>
      <PagedTable
        result={tasks}
        pager={pager}
        what="tasks"
        empty={
          state || template || session || agent
            ? 'No task matches these filters.'
            : 'No tasks yet. Submit one, or connect an agent and send tasks with the SDK or CLI.'
        }
        // The state comes right after the id, so that a phone shows both (the id wraps there).
        columns={['Task', 'State', 'Template or capabilities', 'Attempt', 'Agent', 'Created']}
        row={(task: Task) => (
          <tr key={task.id}>
            <td className="task-id">
              <Link to={`/tasks/${encodeURIComponent(task.id)}`}>
                <code>{task.id}</code>
              </Link>
            </td>
            <td>
              <Badge value={task.state} />
            </td>
            <td>{taskSubject(task)}</td>
            <td>
              {task.attempt} / {task.max_attempts}
            </td>
            <td>{task.agent_id ?? <span className="muted">–</span>}</td>
            <td>
              <Time iso={task.created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}
