import { type ConfigHistoryEntry, type ConfigItem, OrchestraError } from '@orchestra/sdk';
import { type FormEvent, useEffect, useMemo, useRef, useState } from 'react';
import { Diff } from '../diff.tsx';
import { Link, navigate, useLocation } from '../router.tsx';
import { describeError, useSession } from '../session.tsx';
import { Alert, Empty, ErrorBox, Loading, PageHeader, Time, useAsync } from '../ui.tsx';

// The config center: keys as a tree by prefix, per environment, kept current by a watch;
// a key's page edits with compare-and-set, and shows history, diffs and reverts.

function configUrl(path: string, params: Record<string, string>): string {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  return query ? `${path}?${query}` : path;
}

/** A value in one line, for lists. */
function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

const keyCount = (n: number) => `${n} key${n === 1 ? '' : 's'}`;

/** Keys and state of a watched prefix: a snapshot, then every change as it happens. */
function useLiveConfig(env: string, prefix: string) {
  const { client } = useSession();
  const [items, setItems] = useState<Map<string, ConfigItem>>(new Map());
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<unknown>();
  const [changed, setChanged] = useState<Set<string>>(new Set());
  const [generation, setGeneration] = useState(0);
  // biome-ignore lint/correctness/useExhaustiveDependencies: generation restarts the watch
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    setLoaded(false);
    setError(undefined);
    setChanged(new Set());
    (async () => {
      const snapshot = await client.config.snapshot({
        ...(env ? { env } : {}),
        ...(prefix ? { prefix } : {}),
        signal,
      });
      let current = new Map(snapshot.items.map((i) => [i.key, i]));
      setItems(current);
      setLoaded(true);
      let resync: Map<string, ConfigItem> | undefined;
      for await (const change of client.config.watch({
        ...(env ? { env } : {}),
        ...(prefix ? { prefix } : {}),
        afterRevision: snapshot.revision,
        signal,
        maxReconnects: Number.POSITIVE_INFINITY,
      })) {
        if (change.type === 'resync') {
          resync ??= new Map();
          for (const item of change.items) resync.set(item.key, item);
          if (!change.more) {
            current = resync;
            resync = undefined;
            setItems(current);
          }
          continue;
        }
        current = new Map(current);
        if (change.type === 'put') {
          // The watch carries the value; the item's other fields come with the next read.
          const before = current.get(change.key);
          current.set(change.key, {
            ...(before ?? {
              key: change.key,
              env,
              updated_by: { type: 'api_key', id: '', name: '' },
              lease: null,
            }),
            key: change.key,
            value: change.value,
            version: change.version,
            revision: change.revision,
            updated_at: new Date().toISOString(),
          } as ConfigItem);
        } else current.delete(change.key);
        setItems(current);
        setChanged((c) => new Set(c).add(change.key));
      }
    })().catch((err: unknown) => {
      if (!signal.aborted) setError(err);
    });
    return () => controller.abort();
  }, [client, env, prefix, generation]);
  return { items, loaded, error, changed, restart: () => setGeneration((g) => g + 1) };
}

type TreeNode = { folders: Map<string, TreeNode>; keys: ConfigItem[] };

function buildTree(items: Iterable<ConfigItem>, prefix: string): TreeNode {
  const root: TreeNode = { folders: new Map(), keys: [] };
  for (const item of items) {
    const rest = item.key.slice(prefix.length);
    const parts = rest.split('/');
    let node = root;
    for (const part of parts.slice(0, -1)) {
      let next = node.folders.get(part);
      if (next === undefined) {
        next = { folders: new Map(), keys: [] };
        node.folders.set(part, next);
      }
      node = next;
    }
    node.keys.push(item);
  }
  return root;
}

function Tree(props: { node: TreeNode; path: string; env: string; changed: Set<string> }) {
  const { node, path, env, changed } = props;
  const folders = [...node.folders.entries()].sort(([a], [b]) => a.localeCompare(b));
  const keys = [...node.keys].sort((a, b) => a.key.localeCompare(b.key));
  return (
    <ul className="tree">
      {folders.map(([name, child]) => (
        <li key={`d:${name}`}>
          <details open>
            <summary>
              <span className="folder">{name}/</span>{' '}
              <Link
                to={configUrl('/config', { env, prefix: `${path}${name}/` })}
                className="muted"
                aria-label={`Only ${path}${name}/`}
              >
                only this
              </Link>
            </summary>
            <Tree node={child} path={`${path}${name}/`} env={env} changed={changed} />
          </details>
        </li>
      ))}
      {keys.map((item) => (
        <li
          key={`k:${item.key}`}
          className={changed.has(item.key) ? 'config-key changed' : 'config-key'}
          data-key={item.key}
        >
          <Link to={configUrl('/config/key', { env, key: item.key })}>
            {item.key.slice(path.length)}
          </Link>
          <code className="value" data-value-of={item.key}>
            {preview(item.value)}
          </code>
          <span className="muted">v{item.version}</span>
        </li>
      ))}
    </ul>
  );
}

/** Environments offered for the environment field: the first page, which is plenty to pick from. */
const ENVIRONMENTS_SHOWN = 200;

export function ConfigPage() {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const env = query.get('env') ?? '';
  const prefix = query.get('prefix') ?? '';
  const live = useLiveConfig(env, prefix);
  // Read again when the shown environment gains its first key or loses its last one.
  const environments = useAsync(
    () => client.config.environments({ limit: ENVIRONMENTS_SHOWN }),
    [client, env, live.items.size === 0],
  );
  const tree = useMemo(() => buildTree(live.items.values(), prefix), [live.items, prefix]);
  const [newKey, setNewKey] = useState('');
  const apply = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const data = new FormData(event.currentTarget);
    navigate(
      configUrl('/config', {
        env: String(data.get('env') ?? '').trim(),
        prefix: String(data.get('prefix') ?? '').trim(),
      }),
      { replace: true },
    );
  };
  const shownEnv = [...live.items.values()][0]?.env;
  return (
    <>
      <PageHeader title="Config" />
      <form
        className="filters"
        aria-label="Environment and prefix"
        onSubmit={apply}
        key={`${env}|${prefix}`}
      >
        <div className="field">
          <label htmlFor="config-env">Environment</label>
          {/* The environments with keys are offered; any other name may still be typed. */}
          <input
            id="config-env"
            name="env"
            list="config-env-options"
            defaultValue={env}
            placeholder="server default"
            autoComplete="off"
          />
          <datalist id="config-env-options">
            {environments.data?.items.map((e) => (
              <option key={e.env} value={e.env} label={keyCount(e.keys)} />
            ))}
          </datalist>
        </div>
        <div className="field">
          <label htmlFor="config-prefix">Prefix</label>
          <input id="config-prefix" name="prefix" defaultValue={prefix} placeholder="app/" />
        </div>
        <div className="field">
          <button type="submit">Show</button>
        </div>
      </form>
      {environments.data !== undefined && environments.data.items.length > 0 && (
        <nav className="env-list" aria-label="Environments with keys">
          <span className="muted">Environments with keys:</span>
          <ul className="env-items">
            {environments.data.items.map((e) => (
              <li key={e.env}>
                <Link
                  to={configUrl('/config', { env: e.env, prefix })}
                  aria-current={e.env === env ? 'page' : undefined}
                >
                  {e.env}
                </Link>{' '}
                <span className="muted">{keyCount(e.keys)}</span>
              </li>
            ))}
          </ul>
          {environments.data.next_cursor !== null && (
            <span className="muted">and more: type a name</span>
          )}
        </nav>
      )}
      {canWrite && (
        <form
          className="filters"
          aria-label="New key"
          onSubmit={(e) => {
            e.preventDefault();
            if (newKey.trim()) navigate(configUrl('/config/key', { env, key: newKey.trim() }));
          }}
        >
          <div className="field">
            <label htmlFor="config-new-key">New key</label>
            <input
              id="config-new-key"
              value={newKey}
              onChange={(e) => setNewKey(e.target.value)}
              placeholder={`${prefix}name`}
            />
          </div>
          <div className="field">
            <button type="submit">Create…</button>
          </div>
        </form>
      )}
      {live.error !== undefined && <ErrorBox error={live.error} onRetry={live.restart} />}
      {!live.loaded ? (
        live.error === undefined && <Loading what="config" />
      ) : live.items.size === 0 ? (
        <Empty>
          No keys {prefix ? `under ${prefix}` : 'yet'}
          {env ? ` in ${env}` : ''}. Keys are set with the API, the SDK's ConfigClient, the CLI (
          <code>orchestra config put</code>) or here.
        </Empty>
      ) : (
        <section className="panel" aria-label="Keys">
          <p className="muted">
            {keyCount(live.items.size)}
            {shownEnv ? ` in ${shownEnv}` : ''}
            {prefix ? ` under ${prefix}` : ''}; changes appear as they happen.
          </p>
          <Tree node={tree} path={prefix} env={env} changed={live.changed} />
        </section>
      )}
    </>
  );
}

export function ConfigKeyPage() {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const env = query.get('env') ?? '';
  const key = query.get('key') ?? '';
  const envOption = env ? { env } : {};
  const [item, setItem] = useState<ConfigItem | null | undefined>(undefined);
  const [loadError, setLoadError] = useState<unknown>();
  const [history, setHistory] = useState<ConfigHistoryEntry[]>([]);
  const [draft, setDraft] = useState('');
  const [dirty, setDirty] = useState(false);
  /** The version the draft started from: a save is compared with it, not with the newest. */
  const [baseVersion, setBaseVersion] = useState<number | undefined>();
  const [reason, setReason] = useState('');
  const [problem, setProblem] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const [selected, setSelected] = useState<number | undefined>();
  const [busy, setBusy] = useState(false);
  const [generation, setGeneration] = useState(0);
  // The editor keeps what the user typed across live reloads; a clean editor follows them.
  const dirtyRef = useRef(false);
  dirtyRef.current = dirty;
  // While this page writes, the watch echoes the write back: not "someone else's" change.
  const writing = useRef(false);
  /** Revisions this page wrote: their echo may also arrive after the write's answer. */
  const ownRevisions = useRef(new Set<number>());

  // biome-ignore lint/correctness/useExhaustiveDependencies: generation reloads
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    (async () => {
      let current: ConfigItem | null;
      try {
        current = await client.config.get(key, envOption);
      } catch (err) {
        if (err instanceof OrchestraError && err.status === 404) current = null;
        else throw err;
      }
      if (signal.aborted) return;
      setItem(current);
      setDraft((d) => (dirtyRef.current ? d : JSON.stringify(current?.value ?? null, null, 2)));
      if (current !== null) {
        const page = await client.config.history(key, { ...envOption, limit: 50 });
        if (!signal.aborted) setHistory(page.items);
      } else setHistory([]);
      // Live: someone else's change shows here as it happens.
      for await (const change of client.config.watch({
        ...envOption,
        prefix: key,
        afterRevision: current?.revision ?? 0,
        signal,
        maxReconnects: Number.POSITIVE_INFINITY,
      })) {
        if (change.type === 'resync' || change.key !== key) continue;
        // This page's own writes reload by themselves.
        if (writing.current || ownRevisions.current.has(change.revision)) continue;
        setNotice(
          change.type === 'put'
            ? `Changed to version ${change.version} while you were here.`
            : 'Deleted while you were here.',
        );
        setGeneration((g) => g + 1);
        return;
      }
    })().catch((err: unknown) => {
      if (!signal.aborted) setLoadError(err);
    });
    return () => controller.abort();
  }, [client, key, env, generation]);

  const editedVersion = dirty ? baseVersion : undefined;

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setProblem(undefined);
    let value: unknown;
    try {
      value = JSON.parse(draft);
    } catch (err) {
      setProblem(
        `The value is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    setBusy(true);
    writing.current = true;
    try {
      const written = await client.config.set(key, value, {
        ...envOption,
        ...(reason.trim() ? { reason: reason.trim() } : {}),
        ...(item ? { ifVersion: editedVersion ?? item.version } : { ifAbsent: true }),
      });
      ownRevisions.current.add(written.revision);
      setDirty(false);
      setReason('');
      setNotice('Saved.');
      setGeneration((g) => g + 1);
    } catch (err) {
      if (err instanceof OrchestraError && err.status === 412) {
        setProblem(
          'Someone else changed this key since you loaded it; your edit was not saved. The current value is shown below your draft: copy what you need, then reload.',
        );
        setDirty(true);
        setGeneration((g) => g + 1);
      } else setProblem(describeError(err));
    } finally {
      writing.current = false;
      setBusy(false);
    }
  };

  const revert = async (version: number) => {
    setProblem(undefined);
    writing.current = true;
    try {
      const written = await client.config.revert(key, version, {
        ...envOption,
        ...(item ? { ifVersion: item.version } : {}),
        reason: `revert to version ${version} from the console`,
      });
      ownRevisions.current.add(written.revision);
      setDirty(false);
      setSelected(undefined);
      setNotice(`Reverted to what version ${version} held.`);
      setGeneration((g) => g + 1);
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      writing.current = false;
    }
  };

  const remove = async () => {
    if (!item) return;
    setProblem(undefined);
    writing.current = true;
    try {
      const deleted = await client.config.delete(key, { ...envOption, ifVersion: item.version });
      ownRevisions.current.add(deleted.revision);
      setDirty(false);
      setNotice('Deleted.');
      setGeneration((g) => g + 1);
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      writing.current = false;
    }
  };

  if (key === '') return <ErrorBox error={new Error('No key given.')} />;
  if (item === undefined) {
    return loadError !== undefined ? (
      <>
        <PageHeader title={key} />
        <ErrorBox error={loadError} onRetry={() => setGeneration((g) => g + 1)} />
      </>
    ) : (
      <Loading what={key} />
    );
  }
  const chosen = history.find((h) => h.version === selected);
  const folder = key.includes('/') ? key.slice(0, key.lastIndexOf('/') + 1) : '';
  return (
    <>
      <PageHeader title={key}>
        <Link to={configUrl('/config', { env, prefix: folder })} className="button">
          {folder ? `All of ${folder}` : 'All keys'}
        </Link>
      </PageHeader>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <section className="panel" aria-label="Value">
        {item === null ? (
          <p className="muted">This key does not exist{env ? ` in ${env}` : ''} yet.</p>
        ) : (
          <dl className="facts">
            <dt>Environment</dt>
            <dd>{item.env}</dd>
            <dt>Version</dt>
            <dd>{item.version}</dd>
            <dt>Changed</dt>
            <dd>
              <Time iso={item.updated_at} /> by {item.updated_by.name || item.updated_by.id}
            </dd>
            <dt>Current value</dt>
            <dd>
              <code id="config-current-value">{JSON.stringify(item.value)}</code>
            </dd>
          </dl>
        )}
        {canWrite && (
          <form onSubmit={save} className="form" aria-label="Edit value" noValidate>
            <div className="field">
              <label htmlFor="config-value">Value (JSON)</label>
              <textarea
                id="config-value"
                rows={6}
                spellCheck={false}
                value={draft}
                onChange={(e) => {
                  setDraft(e.target.value);
                  if (!dirty) setBaseVersion(item?.version);
                  setDirty(true);
                }}
              />
            </div>
            <div className="field">
              <label htmlFor="config-reason">Reason (kept in the history)</label>
              <input
                id="config-reason"
                value={reason}
                onChange={(e) => setReason(e.target.value)}
              />
            </div>
            <Alert message={problem} />
            <div className="actions">
              <button type="submit" className="primary" disabled={busy}>
                {item ? `Save over version ${editedVersion ?? item.version}` : 'Create'}
              </button>
              {item && (
                <button type="button" onClick={remove}>
                  Delete
                </button>
              )}
            </div>
          </form>
        )}
      </section>
      {history.length > 0 && (
        <section className="panel" aria-labelledby="history-title">
          <h2 id="history-title">History</h2>
          <ol className="versions" aria-label="History">
            {history.map((h) => (
              <li key={h.version}>
                <button
                  type="button"
                  className="link"
                  aria-pressed={selected === h.version}
                  onClick={() => setSelected(h.version === selected ? undefined : h.version)}
                >
                  v{h.version}
                </button>
                <span>{h.type === 'delete' ? 'deleted' : preview(h.value)}</span>
                <Time iso={h.at} />
                <span className="muted">
                  {h.by.name || h.by.id}
                  {h.reason ? `: ${h.reason}` : ''}
                </span>
                {canWrite && item && h.version !== item.version && (
                  <button type="button" onClick={() => revert(h.version)}>
                    Revert to v{h.version}
                  </button>
                )}
              </li>
            ))}
          </ol>
          {chosen && (
            <Diff
              before={chosen.type === 'delete' ? null : chosen.value}
              after={item?.value ?? null}
              label={`Changes from v${chosen.version} to the current value`}
            />
          )}
        </section>
      )}
    </>
  );
}
