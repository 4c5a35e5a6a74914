import type { Checkpoint, Instance } from '@orchestra/sdk';
import { type FormEvent, useState } from 'react';
import { Link, setQueryParam, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  ErrorBox,
  Loading,
  PagedTable,
  Time,
  useAction,
  useAsync,
  usePager,
} from '../ui.tsx';

// An instance's checkpoints: save the workspace, see what changed since one, restore one
// (the workspace is saved first, so a restore can be undone).

/** A unified diff, its lines coloured by what they do. */
function Patch({ patch }: { patch: string }) {
  return (
    <figure className="json-figure" aria-label="Changes">
      <pre className="json patch">
        {patch.split('\n').map((line, index) => {
          const kind =
            line.startsWith('+++') || line.startsWith('---')
              ? 'file'
              : line.startsWith('+')
                ? 'added'
                : line.startsWith('-')
                  ? 'removed'
                  : line.startsWith('@@')
                    ? 'hunk'
                    : 'same';
          return (
            // biome-ignore lint/suspicious/noArrayIndexKey: lines of a fixed text
            <span key={index} className={`diff-${kind}`}>
              {line}
              {'\n'}
            </span>
          );
        })}
      </pre>
    </figure>
  );
}

function Changes({ instance, checkpoint }: { instance: string; checkpoint: string }) {
  const { client } = useSession();
  const diff = useAsync(
    () => client.instances.checkpoints.diff(instance, checkpoint),
    [client, instance, checkpoint],
  );
  if (diff.error !== undefined) return <ErrorBox error={diff.error} onRetry={diff.reload} />;
  if (diff.data === undefined) return <Loading what="the changes" />;
  const d = diff.data;
  return (
    <section className="panel" aria-labelledby="changes-title">
      <h2 id="changes-title">Changes since {checkpoint}</h2>
      {d.files.length === 0 ? (
        <p className="muted">The workspace is as this checkpoint saved it.</p>
      ) : (
        <>
          <ul className="plain">
            {d.files.map((f) => (
              <li key={f.path}>
                <strong>{f.status}</strong> {f.old_path ? `${f.old_path} → ` : ''}
                {f.path}{' '}
                <span className="muted">
                  {f.additions === null ? 'binary' : `+${f.additions} −${f.deletions}`}
                </span>
              </li>
            ))}
          </ul>
          <Patch patch={d.patch} />
          {d.truncated && <p className="muted">The diff is longer than 1 MiB; it stops here.</p>}
        </>
      )}
      <button type="button" onClick={diff.reload}>
        Compare again
      </button>
    </section>
  );
}

export function CheckpointsTab({ instance }: { instance: Instance }) {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const shown = query.get('checkpoint') ?? '';
  const pager = usePager(instance.id);
  const list = useAsync(
    () =>
      client.instances.checkpoints.list(instance.id, {
        limit: 20,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
      }),
    [client, instance.id, pager.cursor],
  );
  const [message, setMessage] = useState('');
  const [notice, setNotice] = useState<string | undefined>();
  const save = useAction();
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setNotice(undefined);
    void save.run(async () => {
      const taken = await client.instances.checkpoints.create(instance.id, {
        ...(message.trim() ? { message: message.trim() } : {}),
      });
      setMessage('');
      setNotice(`Saved ${taken.id}: ${taken.files} files.`);
      list.reload();
    });
  };
  return (
    <>
      {canWrite && (
        <form className="inline-form" aria-label="Save a checkpoint" onSubmit={submit}>
          <div className="field">
            <label htmlFor="checkpoint-message">Message</label>
            <input
              id="checkpoint-message"
              value={message}
              maxLength={1000}
              placeholder="before the refactor"
              onChange={(e) => setMessage(e.target.value)}
            />
          </div>
          <button type="submit" disabled={save.busy}>
            {save.busy ? 'Saving…' : 'Save a checkpoint'}
          </button>
          <Alert message={save.problem} />
        </form>
      )}
      {notice && (
        <p className="muted" role="status">
          {notice}
        </p>
      )}
      <PagedTable
        result={list}
        pager={pager}
        what="checkpoints"
        empty="No checkpoint yet."
        columns={['Checkpoint', 'Files', 'Saved', '']}
        row={(c: Checkpoint) => (
          <tr key={c.id} data-checkpoint={c.id}>
            <td>
              {c.message}
              <div className="muted">
                {c.id}
                {c.task_id !== null && (
                  <>
                    {' · task '}
                    <Link to={`/tasks/${encodeURIComponent(c.task_id)}`}>{c.task_id}</Link>
                  </>
                )}
              </div>
            </td>
            <td>{c.files}</td>
            <td>
              <Time iso={c.created_at} />
            </td>
            <td className="row-actions">
              <button
                type="button"
                aria-label={`Changes since ${c.id}`}
                onClick={() => setQueryParam('checkpoint', c.id)}
              >
                Changes
              </button>
              {canWrite && (
                <ConfirmButton
                  label="Restore"
                  ariaLabel={`Restore ${c.id}`}
                  confirmLabel={`Restore ${c.id}`}
                  onConfirm={async () => {
                    const done = await client.instances.checkpoints.restore(instance.id, c.id);
                    setNotice(
                      `Restored ${c.id}. The workspace as it was is saved as ${done.before.id}: restore it to undo.`,
                    );
                    list.reload();
                  }}
                />
              )}
            </td>
          </tr>
        )}
      />
      {shown && <Changes key={shown} instance={instance.id} checkpoint={shown} />}
    </>
  );
}
