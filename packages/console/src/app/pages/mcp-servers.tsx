import { useEffect, useState } from 'react';
import { MCP_POLL_MS, type McpServer, type McpServerLog, mcpApi } from '../mcp-api.ts';
import { Link, navigate } from '../router.tsx';
import { useSession } from '../session.tsx';
import { type Tool, toolsApi } from '../tools-api.ts';
import {
  Alert,
  Badge,
  ConfirmButton,
  Empty,
  ErrorBox,
  Loading,
  NotLoaded,
  PagedTable,
  PageHeader,
  Time,
  useAction,
  useAsync,
  usePager,
} from '../ui.tsx';
import { ToolsTabs } from './tools.tsx';

/** Calls `reload` every `ms` while the page is open: for resources that have no live topic. */
export function usePolling(reload: () => void, ms: number): void {
  useEffect(() => {
    const timer = setInterval(reload, ms);
    return () => clearInterval(timer);
  }, [reload, ms]);
}

/** A server's state with its reason, as the list and its page show it. */
function ServerState({ server }: { server: McpServer }) {
  return (
    <span className="server-state">
      <Badge value={server.status.state} />
      {server.status.reason && <span className="muted"> {server.status.reason}</span>}
    </span>
  );
}

function transportLabel(server: McpServer): string {
  switch (server.transport) {
    case 'stdio':
      return 'stdio';
    case 'streamable_http':
      return 'Streamable HTTP';
    case 'sse':
      return 'HTTP+SSE';
  }
}

const serverPath = (name: string) => `/mcp-servers/${encodeURIComponent(name)}`;

export function McpServersPage() {
  const { client, who } = useSession();
  const pager = usePager('');
  const servers = useAsync(
    () => mcpApi(client).list({ limit: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) }),
    [client, pager.cursor],
  );
  usePolling(servers.reload, MCP_POLL_MS);
  return (
    <>
      <PageHeader title="MCP servers">
        {who.role === 'admin' && (
          <>
            <Link to="/mcp-catalog" className="button primary">
              Add from catalog
            </Link>
            <Link to="/mcp-new" className="button">
              Add server
            </Link>
          </>
        )}
      </PageHeader>
      <ToolsTabs />
      <PagedTable
        result={servers}
        pager={pager}
        what="MCP servers"
        empty="No MCP servers yet. Add one from the catalog, or by hand with its command or URL."
        columns={['Server', 'Transport', 'State', 'Protocol', 'Node', 'Restarts', 'Tools']}
        row={(s: McpServer) => (
          <tr key={s.id} data-server={s.name}>
            <td>
              <Link to={serverPath(s.name)}>
                <code>{s.name}</code>
              </Link>
              {s.description && <div className="muted clamp">{s.description}</div>}
            </td>
            <td>{transportLabel(s)}</td>
            <td>
              <ServerState server={s} />
            </td>
            <td>{s.status.protocol_version ?? '–'}</td>
            <td>{s.status.node ?? '–'}</td>
            <td>{s.status.restarts}</td>
            <td>{s.tools}</td>
          </tr>
        )}
      />
    </>
  );
}

/** Enable or disable, restart, delete: for admins. */
function ServerActions({ server, onChanged }: { server: McpServer; onChanged: () => void }) {
  const { client } = useSession();
  const { busy, problem, run } = useAction();
  const act = (what: () => Promise<unknown>) =>
    run(async () => {
      await what();
      onChanged();
    });
  const api = mcpApi(client);
  return (
    <div className="actions">
      <button
        type="button"
        disabled={busy}
        onClick={() => act(() => api.setEnabled(server.id, !server.enabled))}
      >
        {server.enabled ? 'Disable' : 'Enable'}
      </button>
      <button
        type="button"
        disabled={busy || !server.enabled}
        onClick={() => act(() => api.restart(server.id))}
      >
        Restart
      </button>
      <ConfirmButton
        label="Delete"
        confirmLabel={`Delete ${server.name} and its tools`}
        onConfirm={async () => {
          await api.delete(server.id);
          navigate('/mcp-servers');
        }}
      />
      <Alert message={problem} />
    </div>
  );
}

function Settings({ server: s }: { server: McpServer }) {
  return (
    <section className="panel" aria-labelledby="server-settings-title">
      <h2 id="server-settings-title">Settings</h2>
      <dl className="facts">
        <dt>Transport</dt>
        <dd>{transportLabel(s)}</dd>
        {s.transport === 'stdio' ? (
          <>
            <dt>Command</dt>
            <dd>
              <code>{[s.command ?? '', ...s.args].join(' ')}</code>
            </dd>
            <dt>Directory</dt>
            <dd>{s.cwd ? <code>{s.cwd}</code> : 'its own, in the data directory'}</dd>
            <dt>Environment</dt>
            <dd>{s.env_names.length ? s.env_names.join(', ') : '–'}</dd>
            <dt>Network</dt>
            <dd>{s.network ? 'allowed' : 'not allowed when sandboxed'}</dd>
          </>
        ) : (
          <>
            <dt>URL</dt>
            <dd>
              <code>{s.url}</code>
            </dd>
            <dt>Headers</dt>
            <dd>{s.header_names.length ? s.header_names.join(', ') : '–'}</dd>
          </>
        )}
        <dt>Tool timeout</dt>
        <dd>{s.tool_timeout_ms} ms</dd>
        <dt>First tools</dt>
        <dd>{s.trust_initial_tools ? 'approved as listed' : 'held for approval'}</dd>
        <dt>From the catalog</dt>
        <dd>{s.catalog_entry ?? '–'}</dd>
        <dt>Created</dt>
        <dd>
          <Time iso={s.created_at} />
        </dd>
      </dl>
      <p className="muted">Values of environment variables and headers are never shown.</p>
    </section>
  );
}

function Status({ server: s }: { server: McpServer }) {
  return (
    <section className="panel" aria-labelledby="server-status-title">
      <h2 id="server-status-title">Status</h2>
      <dl className="facts" aria-label="Status">
        <dt>State</dt>
        <dd>
          <ServerState server={s} />
        </dd>
        <dt>Since</dt>
        <dd>
          <Time iso={s.status.since} />
        </dd>
        <dt>Protocol</dt>
        <dd>{s.status.protocol_version ?? '–'}</dd>
        <dt>Server</dt>
        <dd>
          {s.status.server_info
            ? `${s.status.server_info.name} ${s.status.server_info.version}`
            : '–'}
        </dd>
        <dt>Node</dt>
        <dd>{s.status.node ?? '–'}</dd>
        <dt>Restarts</dt>
        <dd>{s.status.restarts}</dd>
        <dt>Sandboxed</dt>
        <dd>{s.status.sandboxed === null ? '–' : s.status.sandboxed ? 'yes' : 'no'}</dd>
        <dt>Health check</dt>
        <dd>
          <Time iso={s.status.last_health_check} />
        </dd>
      </dl>
    </section>
  );
}

function ServerTools({ server, tools }: { server: McpServer; tools: Tool[] | undefined }) {
  return (
    <section className="panel" aria-labelledby="server-tools-title">
      <h2 id="server-tools-title">Tools</h2>
      {tools === undefined ? (
        <Loading what="its tools" />
      ) : tools.length === 0 ? (
        <Empty>
          {server.status.state === 'ready' ? 'It lists no tools.' : 'None yet: it is not ready.'}
        </Empty>
      ) : (
        <ul className="server-tools" aria-label="Its tools">
          {tools.map((t) => (
            <li key={t.id} className="server-tool" data-tool={t.name}>
              <Link to={`/tools/${encodeURIComponent(t.name)}`}>
                <code>{t.name}</code>
              </Link>{' '}
              <Badge value={t.state} />
              {t.pending && <span className="badge badge-held">pending change</span>}
              {t.description && <div className="muted clamp">{t.description}</div>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** Resources and prompts: asked of the server itself, so only once it is ready. */
function ResourcesAndPrompts({ server }: { server: McpServer }) {
  const { client } = useSession();
  const ready = server.status.state === 'ready' || server.status.state === 'degraded';
  const listed = useAsync(
    async () =>
      ready
        ? Promise.all([mcpApi(client).resources(server.id), mcpApi(client).prompts(server.id)])
        : undefined,
    [client, server.id, ready],
  );
  const [resources, prompts] = listed.data ?? [];
  return (
    <section className="panel" aria-labelledby="server-resources-title">
      <h2 id="server-resources-title">Resources and prompts</h2>
      {!ready ? (
        <p className="muted">Listed once the server is ready.</p>
      ) : listed.error !== undefined ? (
        <ErrorBox error={listed.error} onRetry={listed.reload} />
      ) : resources === undefined || prompts === undefined ? (
        <Loading what="its resources and prompts" />
      ) : (
        <>
          <h3>Resources</h3>
          {resources.items.length === 0 ? (
            <p className="muted">None.</p>
          ) : (
            <ul aria-label="Its resources">
              {resources.items.map((r) => (
                <li key={r.uri}>
                  <code>{r.uri}</code> {r.title ?? r.name}
                  {r.mimeType && <span className="muted"> ({r.mimeType})</span>}
                  {r.description && <div className="muted clamp">{r.description}</div>}
                </li>
              ))}
            </ul>
          )}
          <h3>Prompts</h3>
          {prompts.items.length === 0 ? (
            <p className="muted">None.</p>
          ) : (
            <ul aria-label="Its prompts">
              {prompts.items.map((p) => (
                <li key={p.name}>
                  <code>{p.name}</code>
                  {p.arguments?.length ? (
                    <span className="muted">
                      {' '}
                      ({p.arguments.map((a) => `${a.name}${a.required ? '' : '?'}`).join(', ')})
                    </span>
                  ) : null}
                  {p.description && <div className="muted clamp">{p.description}</div>}
                </li>
              ))}
            </ul>
          )}
        </>
      )}
    </section>
  );
}

/** The last lines of its stderr and of what happened to it, read on demand. */
function ServerLogs({ server }: { server: McpServer }) {
  const { client } = useSession();
  const [log, setLog] = useState<McpServerLog | undefined>();
  const { busy, problem, run } = useAction();
  const read = () => run(async () => setLog(await mcpApi(client).logs(server.id)));
  return (
    <section className="panel" aria-labelledby="server-logs-title">
      <h2 id="server-logs-title">Logs</h2>
      <div className="actions">
        <button type="button" disabled={busy} onClick={read}>
          {log ? 'Refresh the logs' : 'Show the logs'}
        </button>
      </div>
      <Alert message={problem} />
      {log && (
        <>
          {log.dropped > 0 && (
            <p className="muted">{log.dropped} earlier lines were dropped from the bounded log.</p>
          )}
          {log.lines.length === 0 ? (
            <p className="muted">Nothing logged yet.</p>
          ) : (
            <ol className="server-log" aria-label="Log lines">
              {log.lines.map((line, index) => (
                // biome-ignore lint/suspicious/noArrayIndexKey: the log's lines, in its order
                <li key={index} data-stream={line.stream}>
                  {line.time === null ? <span className="muted">–</span> : <Time iso={line.time} />}{' '}
                  <span className="muted">{line.stream}</span> <code>{line.text}</code>
                </li>
              ))}
            </ol>
          )}
        </>
      )}
    </section>
  );
}

export function McpServerPage({ name }: { name: string }) {
  const { client, who } = useSession();
  const server = useAsync(() => mcpApi(client).get(name), [client, name]);
  const tools = useAsync(
    async () => (await toolsApi(client).list({ server: name, limit: 200 })).items,
    [client, name],
  );
  usePolling(server.reload, MCP_POLL_MS);
  usePolling(tools.reload, MCP_POLL_MS);
  if (server.data === undefined) {
    return <NotLoaded result={server} title={`MCP server ${name}`} what="the server" />;
  }
  const s = server.data;
  return (
    <>
      <PageHeader title={`MCP server ${s.name}`} />
      <ToolsTabs />
      {s.description && <p className="prose">{s.description}</p>}
      {who.role === 'admin' && (
        <ServerActions
          server={s}
          onChanged={() => {
            server.reload();
            tools.reload();
          }}
        />
      )}
      <div className="columns">
        <Status server={s} />
        <Settings server={s} />
      </div>
      <ServerTools server={s} tools={tools.data} />
      <ResourcesAndPrompts server={s} />
      <ServerLogs server={s} />
    </>
  );
}
