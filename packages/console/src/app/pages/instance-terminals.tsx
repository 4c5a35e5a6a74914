import type { Instance, Terminal as TerminalRecord } from '@orchestra/sdk';
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'react';
import { setQueryParam, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import {
  Alert,
  Badge,
  ConfirmButton,
  Empty,
  ErrorBox,
  Loading,
  Time,
  useAction,
  useAsync,
} from '../ui.tsx';

// An instance's terminals: the list, and one attached in xterm.js. The server keeps the
// screen, so a reload, another tab or another person attaching sees it as it is.

/** One terminal in xterm.js, attached while shown; it keeps running when the page goes. */
function TerminalView({
  instance,
  terminal,
  onExit,
}: {
  instance: string;
  terminal: string;
  onExit: () => void;
}) {
  const { client } = useSession();
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('Attaching…');
  const [viewers, setViewers] = useState(1);
  const exited = useRef(onExit);
  exited.current = onExit;
  useEffect(() => {
    const element = host.current;
    if (element === null) return;
    const xterm = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
    });
    const fit = new FitAddon();
    xterm.loadAddon(fit);
    xterm.open(element);
    const connection = client.instances.terminals.attach(instance, terminal, {
      onOutput: (data) => xterm.write(data),
      onScreen: (screen, record) => {
        // On every (re)attach: the screen the server kept, on a cleared terminal.
        xterm.reset();
        xterm.resize(record.cols, record.rows);
        xterm.write(screen);
        setStatus('Attached');
        // This browser's size wins once it attached.
        fitToPage();
      },
      onResize: (cols, rows) => {
        if (cols !== xterm.cols || rows !== xterm.rows) xterm.resize(cols, rows);
      },
      onTitle: (title) => setStatus(`Attached: ${title}`),
      onViewers: setViewers,
    });
    const fitToPage = () => {
      const size = fit.proposeDimensions();
      if (size === undefined || !Number.isFinite(size.cols) || !Number.isFinite(size.rows)) return;
      const cols = Math.max(20, Math.min(1000, size.cols));
      const rows = Math.max(5, Math.min(500, size.rows));
      if (cols !== xterm.cols || rows !== xterm.rows) {
        xterm.resize(cols, rows);
        connection.resize(cols, rows);
      }
    };
    const typed = xterm.onData((data) => connection.write(data));
    const binary = xterm.onBinary((data) =>
      connection.write(Uint8Array.from(data, (c) => c.charCodeAt(0))),
    );
    const observer = new ResizeObserver(() => fitToPage());
    observer.observe(element);
    connection.exited.then(
      (exit) => {
        setStatus(`Exited: ${exit.reason}`);
        xterm.options.disableStdin = true;
        exited.current();
      },
      (err: unknown) => {
        if (err instanceof Error && err.message !== 'Detached') setStatus(err.message);
      },
    );
    xterm.focus();
    return () => {
      observer.disconnect();
      typed.dispose();
      binary.dispose();
      void connection.close();
      xterm.dispose();
    };
  }, [client, instance, terminal]);
  return (
    <section className="panel terminal-panel" aria-label={`Terminal ${terminal}`}>
      <p className="muted" role="status" aria-live="polite">
        {status}
        {viewers > 1 && ` · ${viewers} viewers`}
      </p>
      <div className="terminal-host" ref={host} data-terminal={terminal} />
    </section>
  );
}

export function TerminalsTab({ instance }: { instance: Instance }) {
  const { client, canWrite } = useSession();
  const { query } = useLocation();
  const selected = query.get('terminal') ?? '';
  const terminals = useAsync(
    () => client.instances.terminals.list(instance.id, { limit: 100 }),
    [client, instance.id],
  );
  const open = useAction();
  if (terminals.error !== undefined) {
    return <ErrorBox error={terminals.error} onRetry={terminals.reload} />;
  }
  if (terminals.data === undefined) return <Loading what="terminals" />;
  const items: TerminalRecord[] = terminals.data.items;
  const running = instance.state === 'running';
  const shown = items.find((t) => t.id === selected && t.state === 'running');
  return (
    <>
      {canWrite && (
        <div className="actions-row">
          <button
            type="button"
            disabled={!running || open.busy}
            title={running ? undefined : 'Start the instance to open a terminal'}
            onClick={() =>
              void open.run(async () => {
                const created = await client.instances.terminals.open(instance.id, {
                  cols: 100,
                  rows: 30,
                });
                terminals.reload();
                setQueryParam('terminal', created.id);
              })
            }
          >
            {open.busy ? 'Opening…' : 'Open a terminal'}
          </button>
          <Alert message={open.problem} />
        </div>
      )}
      {items.length === 0 ? (
        <Empty>
          {running
            ? 'No terminal yet. Open one: it runs in the instance’s sandbox.'
            : 'The instance is not running: start it to open a terminal.'}
        </Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Terminals">
            <thead>
              <tr>
                <th scope="col">Terminal</th>
                <th scope="col">State</th>
                <th scope="col">Command</th>
                <th scope="col">Viewers</th>
                <th scope="col">Opened</th>
                {canWrite && (
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {items.map((t) => (
                <tr key={t.id} data-terminal-row={t.id}>
                  <td>
                    {t.state === 'running' ? (
                      <a
                        href={`?terminal=${t.id}`}
                        aria-current={t.id === selected ? 'true' : undefined}
                        onClick={(event) => {
                          event.preventDefault();
                          setQueryParam('terminal', t.id);
                        }}
                      >
                        {t.title ?? t.id}
                      </a>
                    ) : (
                      (t.title ?? t.id)
                    )}
                  </td>
                  <td>
                    <Badge value={t.state} />
                    {t.state_reason && <div className="muted">{t.state_reason}</div>}
                  </td>
                  <td>
                    <code>{t.command.join(' ')}</code>
                  </td>
                  <td>{t.viewers}</td>
                  <td>
                    <Time iso={t.created_at} />
                  </td>
                  {canWrite && (
                    <td>
                      <ConfirmButton
                        label={t.state === 'running' ? 'Close' : 'Forget'}
                        ariaLabel={`Close ${t.id}`}
                        confirmLabel={`Close ${t.id}`}
                        onConfirm={async () => {
                          await client.instances.terminals.close(instance.id, t.id);
                          if (t.id === selected) setQueryParam('terminal', '');
                          terminals.reload();
                        }}
                      />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {shown && canWrite && (
        <TerminalView
          key={shown.id}
          instance={instance.id}
          terminal={shown.id}
          onExit={terminals.reload}
        />
      )}
    </>
  );
}
