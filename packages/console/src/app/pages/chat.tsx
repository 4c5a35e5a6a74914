import { isTerminalState, type Task, type TaskEvent, type Template } from '@orchestra/sdk';
import { type FormEvent, useEffect, useRef, useState } from 'react';
import { Link, setQueryParam, useLocation } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import { toolsApi } from '../tools-api.ts';
import { Alert, ErrorBox, Loading, PageHeader, SelectField, TextField, useAsync } from '../ui.tsx';

/** A tool call of an answer, as it runs. */
interface ToolStep {
  id: string;
  name: string;
  arguments: string;
  status: string;
  isError: boolean;
  approvalId?: string;
}

/** One exchange: the message sent and the agent's answer as it streams. */
interface Turn {
  taskId: string;
  prompt: string;
  answer: string;
  tools: ToolStep[];
  state: Task['state'];
  error?: string;
}

function promptOf(input: unknown): string {
  const prompt = (input as { prompt?: unknown } | null)?.prompt;
  return typeof prompt === 'string' ? prompt : JSON.stringify(input);
}

function answerOf(result: unknown): string {
  return typeof result === 'string' ? result : JSON.stringify(result);
}

/** Applies one event of a turn's task to the turn. */
function apply(turn: Turn, event: TaskEvent): Turn {
  const d = (event.data ?? {}) as { name?: string; data?: Record<string, unknown> };
  if (event.type === 'task.output' && typeof (event.data as { data?: unknown }).data === 'string') {
    return { ...turn, answer: turn.answer + String((event.data as { data: string }).data) };
  }
  if (event.type !== 'task.custom' || d.data === undefined) return turn;
  const data = d.data;
  switch (d.name) {
    case 'llm.tool_call':
      if (turn.tools.some((t) => t.id === data.id)) return turn;
      return {
        ...turn,
        tools: [
          ...turn.tools,
          {
            id: String(data.id),
            name: String(data.name),
            arguments: String(data.arguments),
            status: 'running',
            isError: false,
          },
        ],
      };
    case 'llm.approval_wait':
      return {
        ...turn,
        tools: turn.tools.map((t) =>
          t.id === data.id
            ? { ...t, status: 'awaiting approval', approvalId: String(data.approval_id) }
            : t,
        ),
      };
    case 'llm.tool_result':
      return {
        ...turn,
        tools: turn.tools.map((t) =>
          t.id === data.id
            ? {
                ...t,
                status: String(data.status),
                isError: data.is_error === true,
                approvalId: undefined,
              }
            : t,
        ),
      };
    default:
      return turn;
  }
}

/** Approve or reject a tool call the run waits for, inline. */
function ApprovalButtons({ approvalId }: { approvalId: string }) {
  const { client, canWrite } = useSession();
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  if (!canWrite) return <span className="muted"> (an operator must approve it)</span>;
  const decide = async (approve: boolean) => {
    setBusy(true);
    setProblem(undefined);
    try {
      const api = toolsApi(client);
      if (approve) {
        const approval = await client.request<{ arguments_hash: string }>(
          'GET',
          `/v1/tool-approvals/${encodeURIComponent(approvalId)}`,
        );
        await api.approvals.approve(approvalId, approval.arguments_hash);
      } else {
        await api.approvals.reject(approvalId, 'rejected from the chat');
      }
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <span className="actions">
      <button type="button" className="primary" disabled={busy} onClick={() => decide(true)}>
        Approve
      </button>
      <button type="button" disabled={busy} onClick={() => decide(false)}>
        Reject
      </button>
      <Alert message={problem} />
    </span>
  );
}

function TurnView({ turn }: { turn: Turn }) {
  return (
    <li className="chat-turn" data-task={turn.taskId}>
      <p className="chat-user">
        <strong>You:</strong> {turn.prompt}
      </p>
      {turn.tools.length > 0 && (
        <ul className="chat-tools" aria-label="Tool calls">
          {turn.tools.map((t) => (
            <li key={t.id} data-status={t.status}>
              <code>
                {t.name} {t.arguments}
              </code>{' '}
              <span className={t.isError ? 'field-error' : 'muted'}>{t.status}</span>
              {t.approvalId !== undefined && <ApprovalButtons approvalId={t.approvalId} />}
            </li>
          ))}
        </ul>
      )}
      <div className="chat-agent" aria-live="polite">
        <strong>Agent:</strong> <span className="chat-answer">{turn.answer}</span>
        {turn.state !== 'succeeded' && turn.state !== 'failed' && turn.error === undefined && (
          <span className="muted"> …</span>
        )}
      </div>
      {turn.error && <p className="field-error">{turn.error}</p>}
      <p className="muted">
        <Link to={`/tasks/${turn.taskId}`}>Task {turn.taskId}</Link>
      </p>
    </li>
  );
}

/**
 * A conversation with a hosted agent: each message is a task in one session (whose memory
 * brings the conversation so far); tokens stream, tool calls show as they run, and a call
 * that waits for an approval can be approved here.
 */
export function ChatPage() {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const templateName = query.get('template') ?? '';
  const sessionId = query.get('session') ?? '';
  const templates = useAsync(async () => {
    const hosted: Template[] = [];
    for await (const t of client.templates.listAll({ limit: 200 }))
      if (t.kind === 'llm') hosted.push(t);
    return hosted;
  }, [client]);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [message, setMessage] = useState('');
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const stop = useRef(new AbortController());

  /** Streams a turn's task into the page until it ends; then shows how it ended. */
  const follow = async (start: Turn, signal: AbortSignal) => {
    let turn = start;
    const update = (next: Turn) => {
      turn = next;
      setTurns((all) => {
        const at = all.findIndex((t) => t.taskId === next.taskId);
        return at === -1 ? [...all, next] : all.map((t, i) => (i === at ? next : t));
      });
    };
    update(turn);
    for await (const item of client.tasks.events(turn.taskId, { signal })) {
      if ('offset' in item) update(apply(turn, item as TaskEvent));
    }
    const ended = await client.tasks.get(turn.taskId);
    update({
      ...turn,
      state: ended.state,
      // A structured answer does not stream: it comes whole at the end.
      answer:
        turn.answer === '' && ended.state === 'succeeded' ? answerOf(ended.result) : turn.answer,
      ...(ended.error ? { error: `${ended.error.code}: ${ended.error.message}` } : {}),
    });
  };

  // A session's earlier turns, when the page opens on one; a turn still running (a reload in
  // the middle of an answer) is followed to its end.
  // biome-ignore lint/correctness/useExhaustiveDependencies: follow only writes state
  useEffect(() => {
    stop.current.abort();
    const controller = new AbortController();
    stop.current = controller;
    setTurns([]);
    if (sessionId === '') return;
    (async () => {
      const page = await client.tasks.list({ session_id: sessionId, limit: 100 });
      const earlier = [...page.items].reverse().map(
        (t): Turn => ({
          taskId: t.id,
          prompt: promptOf(t.input),
          answer: t.state === 'succeeded' ? answerOf(t.result) : '',
          tools: [],
          state: t.state,
          ...(t.error ? { error: `${t.error.code}: ${t.error.message}` } : {}),
        }),
      );
      if (controller.signal.aborted) return;
      setTurns(earlier);
      for (const turn of earlier) {
        if (!isTerminalState(turn.state)) void follow(turn, controller.signal).catch(() => {});
      }
    })().catch((err: unknown) => {
      if (!controller.signal.aborted) setProblem(describeError(err));
    });
  }, [client, sessionId]);

  const send = async (event: FormEvent) => {
    event.preventDefault();
    const text = message.trim();
    if (text === '' || templateName === '') return;
    setBusy(true);
    setProblem(undefined);
    try {
      let session = sessionId;
      if (session === '') {
        session = (await client.sessions.create({ name: `chat with ${templateName}` })).id;
        setQueryParam('session', session);
      }
      const task = await client.tasks.create({
        template: templateName,
        input: { prompt: text },
        session_id: session,
      });
      setMessage('');
      await follow(
        { taskId: task.id, prompt: text, answer: '', tools: [], state: task.state },
        stop.current.signal,
      );
    } catch (err) {
      if (!stop.current.signal.aborted) setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  if (templates.error) return <ErrorBox error={templates.error} onRetry={templates.reload} />;
  if (templates.data === undefined) return <Loading what="hosted agents" />;
  const options = [
    { value: '', label: 'Choose a hosted agent' },
    ...templates.data.map((t) => ({ value: t.name, label: t.name })),
  ];
  return (
    <>
      <PageHeader title="Chat" />
      {templates.data.length === 0 ? (
        <p className="muted">
          No hosted agents yet: create a template of kind <code>llm</code> (see{' '}
          <Link to="/templates">Templates</Link>).
        </p>
      ) : (
        <>
          <form className="filters" aria-label="Conversation" onSubmit={(e) => e.preventDefault()}>
            <SelectField
              id="chat-template"
              label="Hosted agent"
              value={templateName}
              options={options}
              onChange={(value) => {
                setQueryParam('session', '');
                setQueryParam('template', value);
              }}
            />
            {sessionId !== '' && (
              <div className="field">
                <span className="muted">
                  Session <Link to={`/sessions/${sessionId}`}>{sessionId}</Link>
                </span>
                <button type="button" onClick={() => setQueryParam('session', '')}>
                  New conversation
                </button>
              </div>
            )}
          </form>
          <ol className="chat" aria-label="Messages">
            {turns.map((t) => (
              <TurnView key={t.taskId} turn={t} />
            ))}
          </ol>
          {canWrite ? (
            <form className="form" aria-label="Send a message" onSubmit={send}>
              <TextField
                id="chat-message"
                label="Message"
                value={message}
                onChange={setMessage}
                rows={3}
                disabled={templateName === ''}
              />
              <Alert message={problem} />
              <div className="actions">
                <button
                  type="submit"
                  className="primary"
                  disabled={busy || templateName === '' || message.trim() === ''}
                >
                  {busy ? 'Answering…' : 'Send'}
                </button>
              </div>
            </form>
          ) : (
            <p className="muted">Admins and operators send messages; viewers read conversations.</p>
          )}
        </>
      )}
    </>
  );
}
