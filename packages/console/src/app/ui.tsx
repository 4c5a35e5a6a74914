import type { Page } from '@orchestra/sdk';
import {
  type DependencyList,
  type ReactNode,
  useCallback,
  useEffect,
  useRef,
  useState,
} from 'react';
import { setQueryParam } from './router.tsx';
import { describeError } from './session.tsx';

export interface Async<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  /** Loads again; the current data stays on screen meanwhile. */
  reload: () => void;
}

/** Runs `load` when `deps` change (and on `reload`); only the latest call's outcome is kept. */
export function useAsync<T>(
  load: (signal: AbortSignal) => Promise<T>,
  deps: DependencyList,
): Async<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({
    data: undefined,
    error: undefined,
    loading: true,
  });
  const [generation, setGeneration] = useState(0);
  // biome-ignore lint/correctness/useExhaustiveDependencies: the caller's deps decide
  useEffect(() => {
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(controller.signal).then(
      (data) => {
        if (!controller.signal.aborted) setState({ data, error: undefined, loading: false });
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setState((s) => ({ data: s.data, error, loading: false }));
      },
    );
    return () => controller.abort();
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { ...state, reload };
}

/** Calls `fn` at most once per `ms`, trailing: bursts of live events cause one reload. */
export function useThrottled(fn: () => void, ms: number): () => void {
  const latest = useRef(fn);
  latest.current = fn;
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    if (timer.current !== undefined) return;
    timer.current = setTimeout(() => {
      timer.current = undefined;
      latest.current();
    }, ms);
  }, [ms]);
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function ErrorBox({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  return (
    <div className="error-box" role="alert">
      <span>{describeError(error)}</span>
      {onRetry && (
        <button type="button" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** A coloured label for a task or agent state. */
export function Badge({ value }: { value: string }) {
  return <span className={`badge badge-${value}`}>{value.replace('_', ' ')}</span>;
}

/** A timestamp shown in local time, with the exact ISO time on hover. */
export function Time({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span className="muted">–</span>;
  const date = new Date(iso);
  return (
    <time dateTime={iso} title={iso}>
      {date.toLocaleString(undefined, {
        month: 'short',
        day: 'numeric',
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
      })}
    </time>
  );
}

/** JSON, pretty-printed in a scrollable block (Chromium lets the keyboard scroll it). */
export function Json({ value, label }: { value: unknown; label: string }) {
  return (
    <figure className="json-figure" aria-label={label}>
      <pre className="json">{JSON.stringify(value, null, 2)}</pre>
    </figure>
  );
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="page-header">
      <h1>{title}</h1>
      {children && <div className="actions">{children}</div>}
    </div>
  );
}

/**
 * Cursor pagination: the cursors of the pages before this one are kept, so that the user
 * can go back; the API itself only goes forward.
 */
export function usePager(resetKey: string) {
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new filter starts at page 1
  useEffect(() => setCursors([undefined]), [resetKey]);
  const cursor = cursors[cursors.length - 1];
  return {
    cursor,
    page: cursors.length,
    next: (nextCursor: string) => setCursors((c) => [...c, nextCursor]),
    previous: () => setCursors((c) => (c.length > 1 ? c.slice(0, -1) : c)),
  };
}

export function Pager(props: {
  page: number;
  nextCursor: string | null | undefined;
  onNext: (cursor: string) => void;
  onPrevious: () => void;
}) {
  const { page, nextCursor } = props;
  if (page === 1 && !nextCursor) return null;
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" disabled={page === 1} onClick={props.onPrevious}>
        ← Previous
      </button>
      <span className="muted">Page {page}</span>
      <button
        type="button"
        disabled={!nextCursor}
        onClick={() => nextCursor && props.onNext(nextCursor)}
      >
        Next →
      </button>
    </nav>
  );
}

/** A message about an action that failed (nothing when there is none). */
export function Alert({ message }: { message: string | undefined }) {
  if (!message) return null;
  return (
    <p className="error-box" role="alert">
      {message}
    </p>
  );
}

/**
 * A page of a list from the API as a table: its error, loading and empty states, and the
 * pager.
 */
export function PagedTable<T>(props: {
  result: Async<Page<T>>;
  pager: ReturnType<typeof usePager>;
  what: string;
  empty: ReactNode;
  columns: string[];
  row: (item: T) => ReactNode;
}) {
  const { result, pager } = props;
  return (
    <>
      {result.error !== undefined && <ErrorBox error={result.error} onRetry={result.reload} />}
      {result.data === undefined ? (
        result.error === undefined && <Loading what={props.what} />
      ) : result.data.items.length === 0 ? (
        <Empty>{props.empty}</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label={props.what.charAt(0).toUpperCase() + props.what.slice(1)}>
            <thead>
              <tr>
                {props.columns.map((c) => (
                  <th scope="col" key={c}>
                    {c || <span className="sr-only">Actions</span>}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>{result.data.items.map(props.row)}</tbody>
          </table>
        </div>
      )}
      <Pager
        page={pager.page}
        nextCursor={result.data?.next_cursor}
        onNext={pager.next}
        onPrevious={pager.previous}
      />
    </>
  );
}

/**
 * What a detail page shows before its record arrives: the loading state, or the error
 * (404, 403, unreachable) under the page's title, with a retry.
 */
export function NotLoaded(props: { result: Async<unknown>; title: string; what: string }) {
  const { result } = props;
  if (result.error === undefined) return <Loading what={props.what} />;
  return (
    <>
      <PageHeader title={props.title} />
      <ErrorBox error={result.error} onRetry={result.reload} />
    </>
  );
}

/**
 * A button for what cannot be undone: the first click asks, the second acts. The action's
 * error is shown next to it.
 */
export function ConfirmButton(props: {
  label: string;
  /** The button that acts, shown after the first click. */
  confirmLabel: string;
  /** The first button's accessible name, when `label` alone is ambiguous in a list. */
  ariaLabel?: string;
  title?: string;
  onConfirm: () => Promise<void>;
}) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | undefined>();
  const trigger = useRef<HTMLButtonElement>(null);
  const keep = useRef<HTMLButtonElement>(null);
  const focusTrigger = useRef(false);
  // Keep takes the focus when asked (a double click lands on it, not on the action), and
  // the trigger gets it back afterwards.
  useEffect(() => {
    if (confirming) keep.current?.focus();
    else if (focusTrigger.current) {
      focusTrigger.current = false;
      trigger.current?.focus();
    }
  }, [confirming]);
  const close = () => {
    focusTrigger.current = true;
    setConfirming(false);
  };
  const act = async () => {
    setProblem(undefined);
    setBusy(true);
    try {
      await props.onConfirm();
    } catch (err) {
      setProblem(describeError(err));
    }
    setBusy(false);
    close();
  };
  return (
    <>
      {confirming ? (
        <span className="confirm">
          <button type="button" ref={keep} onClick={close} disabled={busy}>
            Keep
          </button>
          <button type="button" className="danger" onClick={act} disabled={busy}>
            {props.confirmLabel}
          </button>
        </span>
      ) : (
        <button
          type="button"
          ref={trigger}
          onClick={() => setConfirming(true)}
          aria-label={props.ariaLabel}
          title={props.title}
        >
          {props.label}
        </button>
      )}
      <Alert message={problem} />
    </>
  );
}

/** A labelled select of fixed options. */
export function SelectField<V extends string | number>(props: {
  id: string;
  label: string;
  value: V;
  options: readonly { value: V; label: string }[];
  onChange: (value: V) => void;
}) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <select
        id={props.id}
        value={props.value}
        onChange={(e) => {
          const chosen = props.options.find((o) => String(o.value) === e.target.value);
          if (chosen) props.onChange(chosen.value);
        }}
      >
        {props.options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
    </div>
  );
}

/**
 * A labelled text input (a textarea with `rows`) with its help and its error under it, tied
 * to it for assistive technology (`aria-invalid`, `aria-describedby` → `<id>-help`,
 * `<id>-error`).
 */
export function TextField(props: {
  id: string;
  label: string;
  value: string;
  onChange: (value: string) => void;
  error?: string | undefined;
  help?: string | undefined;
  placeholder?: string;
  maxLength?: number;
  /** `password`: the value is masked, and browsers neither keep nor offer it. */
  type?: 'text' | 'number' | 'password';
  /** A textarea of this many rows. */
  rows?: number | undefined;
  disabled?: boolean | undefined;
  spellCheck?: boolean;
}) {
  const errorId = `${props.id}-error`;
  const helpId = `${props.id}-help`;
  const describedBy =
    [props.help && helpId, props.error && errorId].filter(Boolean).join(' ') || undefined;
  const common = {
    id: props.id,
    value: props.value,
    placeholder: props.placeholder,
    maxLength: props.maxLength,
    spellCheck: props.spellCheck,
    disabled: props.disabled,
    'aria-invalid': props.error ? true : undefined,
    'aria-describedby': describedBy,
  } as const;
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      {props.rows ? (
        <textarea {...common} rows={props.rows} onChange={(e) => props.onChange(e.target.value)} />
      ) : (
        <input
          {...common}
          type={props.type ?? 'text'}
          {...(props.type === 'number' ? { step: 1 } : {})}
          {...(props.type === 'password' ? { autoComplete: 'new-password' } : {})}
          onChange={(e) => props.onChange(e.target.value)}
        />
      )}
      {props.help && (
        <small id={helpId} className="muted">
          {props.help}
        </small>
      )}
      {props.error && (
        <small id={errorId} className="field-error">
          {props.error}
        </small>
      )}
    </div>
  );
}

/** A select of a list page's filter, kept in the address as the query parameter `name`. */
export function FilterSelect(props: {
  id: string;
  label: string;
  /** The query parameter. */
  name: string;
  value: string;
  options: readonly string[];
}) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <select
        id={props.id}
        value={props.value}
        onChange={(e) => setQueryParam(props.name, e.target.value)}
      >
        <option value="">Any</option>
        {props.options.map((o) => (
          <option key={o} value={o}>
            {o.replace('_', ' ')}
          </option>
        ))}
      </select>
    </div>
  );
}

/** A labelled text filter of a list, applied when the field is left or on Enter. */
export function FilterField(props: {
  id: string;
  label: string;
  value: string;
  placeholder: string;
  maxLength?: number;
  onApply: (value: string) => void;
}) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <input
        id={props.id}
        defaultValue={props.value}
        placeholder={props.placeholder}
        maxLength={props.maxLength}
        onBlur={(e) => props.onApply(e.target.value.trim())}
        onKeyDown={(e) => {
          if (e.key === 'Enter') props.onApply(e.currentTarget.value.trim());
        }}
      />
    </div>
  );
}
