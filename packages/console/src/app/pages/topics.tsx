import type { Topic, TopicMessage } from '@orchestra/sdk';
import { type FormEvent, useEffect, useState } from 'react';
import { useTopic } from '../live.ts';
import { Link, navigate } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  ErrorBox,
  PagedTable,
  PageHeader,
  Time,
  useAsync,
  usePager,
} from '../ui.tsx';

/** Messages kept on screen while tailing; older ones scroll out. */
const TAIL = 200;
/**
 * First segments the server publishes under (docs/protocol.md, realtime/topics.ts): clients
 * may read these topics but neither publish on them nor delete them.
 */
const SYSTEM_TOPIC = /^(tasks|sessions|agents|config|services|registry|instances|system)(\.|$)/;

export function TopicsPage() {
  const { client } = useSession();
  const pager = usePager('');
  const topics = useAsync(
    () => client.topics.list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  const open = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const name = String(new FormData(event.currentTarget).get('topic') ?? '').trim();
    if (name) navigate(`/topics/${encodeURIComponent(name)}`);
  };
  return (
    <>
      <PageHeader title="Topics" />
      <form className="filters" aria-label="Tail a topic" onSubmit={open}>
        <div className="field">
          <label htmlFor="topic-name">Topic</label>
          <input id="topic-name" name="topic" placeholder="chat.room-1, agents, tasks.tsk_…" />
        </div>
        <div className="field">
          <button type="submit">Tail</button>
        </div>
      </form>
      <PagedTable
        result={topics}
        pager={pager}
        what="topics"
        empty="No user topics yet. Publishing the first message creates one; system topics (agents, tasks.<id>, config.<env>) can be tailed by name."
        columns={['Topic', 'Messages so far', 'Created']}
        row={(t: Topic) => (
          <tr key={t.name}>
            <td>
              <Link to={`/topics/${encodeURIComponent(t.name)}`}>{t.name}</Link>
            </td>
            <td>{t.last_offset}</td>
            <td>
              <Time iso={t.created_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}

/**
 * The last messages of a topic, then every new one as it is published; and a publish form
 * on user topics (the server refuses clients' messages on system topics).
 */
export function TopicTailPage({ name }: { name: string }) {
  const { client, topics, canWrite } = useSession();
  const system = SYSTEM_TOPIC.test(name);
  const [messages, setMessages] = useState<TopicMessage[]>([]);
  const [error, setError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  const merge = (more: TopicMessage[]) =>
    setMessages((current) => {
      const byOffset = new Map(current.map((m) => [m.offset, m]));
      for (const m of more) byOffset.set(m.offset, m);
      return [...byOffset.values()].sort((a, b) => a.offset - b.offset).slice(-TAIL);
    });
  // Subscribed first (below), history read after: together they leave no gap, and the
  // merge by offset drops what both delivered.
  useTopic(
    topics,
    name,
    (m) => merge([m]),
    () => setGeneration((g) => g + 1), // history no longer covers a gap: read it again
  );
  // biome-ignore lint/correctness/useExhaustiveDependencies: generation reloads
  useEffect(() => {
    let cancelled = false;
    setError(undefined);
    (async () => {
      let history = await client.topics.history(name, { last: 50 });
      const end = history.last_offset;
      if (!cancelled) merge(history.messages);
      // Large messages come in several answers (the server's byte budget): read on to the
      // newest offset of the first one; later ones arrive live.
      while (!cancelled && history.next_after !== null && history.next_after < end) {
        history = await client.topics.history(name, {
          after: history.next_after,
          limit: end - history.next_after,
        });
        merge(history.messages);
      }
    })().catch((err: unknown) => {
      if (!cancelled) setError(err);
    });
    return () => {
      cancelled = true;
    };
  }, [client, name, generation]);

  const [data, setData] = useState('{\n  "text": "hello"\n}');
  const [eventName, setEventName] = useState('');
  const [problem, setProblem] = useState<string | undefined>();
  const publish = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch (err) {
      setProblem(
        `The message is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    try {
      await client.topics.publish(name, value, eventName.trim() ? { event: eventName.trim() } : {});
    } catch (err) {
      setProblem(describeError(err));
    }
  };

  return (
    <>
      <PageHeader title={`Topic ${name}`}>
        {canWrite && !system && (
          <ConfirmButton
            label="Delete"
            confirmLabel="Delete it and its history"
            onConfirm={async () => {
              await client.topics.delete(name);
              navigate('/topics');
            }}
          />
        )}
      </PageHeader>
      {error !== undefined && (
        <ErrorBox error={error} onRetry={() => setGeneration((g) => g + 1)} />
      )}
      {system && (
        <p className="muted">
          Only Orchestra publishes on system topics (tasks, sessions, agents, config, services…):
          you can follow this one here, not publish on it.
        </p>
      )}
      {canWrite && !system && (
        <form className="panel form" onSubmit={publish} aria-label="Publish" noValidate>
          <div className="field">
            <label htmlFor="publish-data">Message (JSON)</label>
            <textarea
              id="publish-data"
              rows={3}
              spellCheck={false}
              value={data}
              onChange={(e) => setData(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="publish-event">Event name (optional)</label>
            <input
              id="publish-event"
              value={eventName}
              onChange={(e) => setEventName(e.target.value)}
            />
          </div>
          <Alert message={problem} />
          <button type="submit" className="primary">
            Publish
          </button>
        </form>
      )}
      <section className="panel" aria-labelledby="tail-title">
        <h2 id="tail-title">
          Messages <span className="live">live</span>
        </h2>
        {messages.length === 0 ? (
          <p className="muted">No messages yet.</p>
        ) : (
          <ol className="timeline" aria-label="Messages">
            {messages.map((m) => (
              <li key={m.offset} data-offset={m.offset}>
                <span className="offset">#{m.offset}</span>
                <Time iso={m.time} />
                <span className="type">{m.event}</span>
                <code className="summary">{JSON.stringify(m.data)}</code>
              </li>
            ))}
          </ol>
        )}
      </section>
    </>
  );
}
