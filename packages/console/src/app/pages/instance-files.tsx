import { type FileEntry, type Instance, OrchestraError } from '@orchestra/sdk';
import { type FormEvent, useEffect, useState } from 'react';
import { setQueryParam, useLocation } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import {
  Alert,
  ConfirmButton,
  Empty,
  ErrorBox,
  Loading,
  Pager,
  Time,
  useAction,
  useAsync,
  usePager,
} from '../ui.tsx';
import { bytes } from './instances.tsx';

// An instance's files: a browser by directory, and an editor for text files that saves
// only over what it opened (If-Match on the SHA-256), so nobody's change is lost.

/** Files larger than this are not opened in the editor. */
const EDIT_MAX_BYTES = 1024 * 1024;

const parentOf = (path: string) => path.split('/').slice(0, -1).join('/');
const join = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);

function Editor({
  instance,
  path,
  onClose,
}: {
  instance: string;
  path: string;
  onClose: () => void;
}) {
  const { client, canWrite } = useSession();
  const file = useAsync(async () => {
    const entry = await client.instances.files.stat(instance, path);
    if (entry.type !== 'file') throw new Error(`${path} is not a file`);
    if (entry.size > EDIT_MAX_BYTES) {
      throw new Error(`${path} is ${bytes(entry.size)}; the editor opens files up to 1 MiB`);
    }
    const read = await client.instances.files.read(instance, path);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(read.content);
    } catch {
      throw new Error(`${path} is not UTF-8 text`);
    }
    return { text, sha256: read.sha256 };
  }, [client, instance, path]);
  const [text, setText] = useState<string | undefined>();
  const [base, setBase] = useState<string | undefined>();
  const [saved, setSaved] = useState<string | undefined>();
  const save = useAction();
  useEffect(() => {
    if (file.data) {
      setText(file.data.text);
      setBase(file.data.sha256);
    }
  }, [file.data]);
  if (file.error !== undefined) return <ErrorBox error={file.error} onRetry={file.reload} />;
  if (file.data === undefined || text === undefined) return <Loading what={path} />;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setSaved(undefined);
    void save.run(async () => {
      try {
        const entry = await client.instances.files.write(instance, path, text, {
          ...(base ? { ifMatch: base } : {}),
        });
        setBase(entry.sha256);
        setSaved(`Saved ${path} (${bytes(entry.size)}).`);
      } catch (err) {
        if (err instanceof OrchestraError && err.status === 412) {
          throw new Error(
            `${path} changed since you opened it: not saved. Copy your text, reload the file, and apply it again.`,
          );
        }
        throw err;
      }
    });
  };
  return (
    <form className="panel" aria-label={`Edit ${path}`} onSubmit={submit}>
      <div className="field">
        <label htmlFor="file-content">{path}</label>
        <textarea
          id="file-content"
          className="code-editor"
          rows={20}
          spellCheck={false}
          value={text}
          readOnly={!canWrite}
          onChange={(e) => setText(e.target.value)}
        />
      </div>
      <div className="actions-row">
        {canWrite && (
          <button type="submit" disabled={save.busy}>
            {save.busy ? 'Saving…' : 'Save'}
          </button>
        )}
        <button type="button" onClick={() => file.reload()}>
          Reload
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <Alert message={save.problem} />
      {saved && (
        <p className="muted" role="status">
          {saved}
        </p>
      )}
    </form>
  );
}

export function FilesTab({ instance }: { instance: Instance }) {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const dir = query.get('path') ?? '';
  const open = query.get('file') ?? '';
  const pager = usePager(dir);
  const listing = useAsync(
    () =>
      client.instances.files.list(instance.id, dir, {
        limit: 200,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
      }),
    [client, instance.id, dir, pager.cursor],
  );
  const [name, setName] = useState('');
  const create = useAction();
  const [problem, setProblem] = useState<string | undefined>();
  const add = (kind: 'file' | 'directory') =>
    void create.run(async () => {
      const target = name.trim();
      if (target === '') throw new Error('Name the new file or directory.');
      const path = join(dir, target);
      if (kind === 'directory') await client.instances.files.mkdir(instance.id, path);
      else await client.instances.files.write(instance.id, path, '', { create: true });
      setName('');
      listing.reload();
      if (kind === 'file') setQueryParam('file', path);
    });
  const crumbs = dir === '' ? [] : dir.split('/');
  return (
    <>
      <nav aria-label="Directory" className="breadcrumbs">
        <a
          href="?tab=files"
          onClick={(event) => {
            event.preventDefault();
            setQueryParam('path', '');
          }}
        >
          workspace
        </a>
        {crumbs.map((part, index) => {
          const path = crumbs.slice(0, index + 1).join('/');
          return (
            <span key={path}>
              {' / '}
              <a
                href={`?tab=files&path=${encodeURIComponent(path)}`}
                onClick={(event) => {
                  event.preventDefault();
                  setQueryParam('path', path);
                }}
              >
                {part}
              </a>
            </span>
          );
        })}
      </nav>
      {canWrite && (
        <form
          className="inline-form"
          aria-label="New file or directory"
          onSubmit={(event) => {
            event.preventDefault();
            add('file');
          }}
        >
          <div className="field">
            <label htmlFor="new-entry">New</label>
            <input
              id="new-entry"
              value={name}
              maxLength={255}
              placeholder="name"
              onChange={(e) => setName(e.target.value)}
            />
          </div>
          <button type="submit" disabled={create.busy}>
            New file
          </button>
          <button type="button" disabled={create.busy} onClick={() => add('directory')}>
            New directory
          </button>
          <Alert message={create.problem} />
        </form>
      )}
      <Alert message={problem} />
      {listing.error !== undefined && <ErrorBox error={listing.error} onRetry={listing.reload} />}
      {listing.data === undefined ? (
        listing.error === undefined && <Loading what="files" />
      ) : (
        <div className="table-wrap">
          <table aria-label="Files">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Size</th>
                <th scope="col">Modified</th>
                {canWrite && (
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {dir !== '' && (
                <tr>
                  <td>
                    <a
                      href="?tab=files"
                      onClick={(event) => {
                        event.preventDefault();
                        setQueryParam('path', parentOf(dir));
                      }}
                    >
                      ..
                    </a>
                  </td>
                  <td />
                  <td />
                  {canWrite && <td />}
                </tr>
              )}
              {listing.data.items.map((entry: FileEntry) => (
                <tr key={entry.path} data-file={entry.path}>
                  <td>
                    <a
                      href={`?tab=files&${entry.type === 'directory' ? 'path' : 'file'}=${encodeURIComponent(entry.path)}`}
                      onClick={(event) => {
                        event.preventDefault();
                        if (entry.type === 'directory') setQueryParam('path', entry.path);
                        else setQueryParam('file', entry.path);
                      }}
                    >
                      {entry.name}
                      {entry.type === 'directory' ? '/' : ''}
                    </a>
                    {entry.type === 'symlink' && <span className="muted"> → {entry.target}</span>}
                  </td>
                  <td>{entry.type === 'file' ? bytes(entry.size) : ''}</td>
                  <td>
                    <Time iso={entry.modified_at} />
                  </td>
                  {canWrite && (
                    <td>
                      <ConfirmButton
                        label="Delete"
                        ariaLabel={`Delete ${entry.name}`}
                        confirmLabel={`Delete ${entry.name}`}
                        onConfirm={async () => {
                          setProblem(undefined);
                          try {
                            await client.instances.files.delete(instance.id, entry.path, {
                              recursive: entry.type === 'directory',
                            });
                          } catch (err) {
                            setProblem(describeError(err));
                          }
                          if (entry.path === open) setQueryParam('file', '');
                          listing.reload();
                        }}
                      />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
          {listing.data.items.length === 0 && <Empty>This directory is empty.</Empty>}
        </div>
      )}
      <Pager
        page={pager.page}
        nextCursor={listing.data?.next_cursor}
        onNext={pager.next}
        onPrevious={pager.previous}
      />
      {open && (
        <Editor
          key={open}
          instance={instance.id}
          path={open}
          onClose={() => setQueryParam('file', '')}
        />
      )}
    </>
  );
}
