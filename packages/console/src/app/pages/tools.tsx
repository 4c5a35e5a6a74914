import { Diff } from '../diff.tsx';
import { Link, setQueryParam, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import { TOOL_STATES, type Tool, type ToolState, toolsApi } from '../tools-api.ts';
import {
  Alert,
  Badge,
  FilterField,
  FilterSelect,
  Json,
  NotLoaded,
  PagedTable,
  PageHeader,
  Time,
  useAction,
  useAsync,
  usePager,
} from '../ui.tsx';
import { TryTool } from './tool-try.tsx';

/**
 * The pages of the tools section, as tabs under its title. The MCP servers tab also stands
 * for its catalog and its form (`/mcp-catalog`, `/mcp-new`).
 */
const TOOLS_TABS = [
  { to: '/tools', label: 'Catalogue' },
  { to: '/mcp-servers', label: 'MCP servers', also: ['/mcp-catalog', '/mcp-new'] },
  { to: '/tool-policies', label: 'Policies' },
  { to: '/tool-approvals', label: 'Approvals', writeOnly: true },
  { to: '/tool-calls', label: 'Call log' },
] as const satisfies readonly {
  to: string;
  label: string;
  writeOnly?: boolean;
  /** Other pages the tab is current on. */
  also?: readonly string[];
}[];

/** The roots of a tab's pages. */
const rootsOf = (t: (typeof TOOLS_TABS)[number]): readonly string[] =>
  'also' in t ? [t.to, ...t.also] : [t.to];

/** Where the section's top-level navigation entry stays current. */
export const TOOLS_SECTION_PATHS: readonly string[] = TOOLS_TABS.flatMap(rootsOf);

export function ToolsTabs() {
  const { path } = useLocation();
  const { canWrite } = useSession();
  return (
    <nav className="tabs" aria-label="Tools section">
      <ul className="tabs-list">
        {TOOLS_TABS.filter((t) => canWrite || !('writeOnly' in t)).map((t) => {
          const current =
            t.to === '/tools'
              ? path === '/tools'
              : rootsOf(t).some((root) => path === root || path.startsWith(`${root}/`));
          return (
            <li key={t.to}>
              <Link to={t.to} className="tab" aria-current={current ? 'page' : undefined}>
                {t.label}
              </Link>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}

/** What a tool's hints say, in words. */
export function hintsOf(tool: Tool): string[] {
  const a = tool.annotations;
  const hints: string[] = [];
  if (a.readOnlyHint) hints.push('read-only');
  else if (tool.destructive) hints.push('destructive');
  if (a.idempotentHint) hints.push('idempotent');
  if (a.openWorldHint === false) hints.push('closed world');
  return hints;
}

/** What an approval pins: the fields a model reads. */
function definitionOf(
  d: Pick<Tool, 'description' | 'input_schema' | 'output_schema' | 'annotations'>,
) {
  return {
    description: d.description,
    input_schema: d.input_schema,
    output_schema: d.output_schema,
    annotations: d.annotations,
  };
}

function upstreamOf(tool: Tool): string {
  const s = tool.source;
  switch (s.type) {
    case 'http':
      return `${s.method} ${s.url}`;
    case 'mcp':
      return `MCP server ${s.server}, tool ${s.tool}`;
    case 'agent':
      return `A task for an agent${s.template ? ` (template ${s.template})` : ''}${s.capabilities ? ` with ${s.capabilities.join(', ')}` : ''}`;
    case 'workspace':
      return `Built in: ${s.operation} in the instance of the calling task`;
  }
}

function sourceLabel(tool: Tool): string {
  const s = tool.source;
  return s.type === 'http'
    ? 'HTTP'
    : s.type === 'mcp'
      ? `MCP: ${s.server}`
      : s.type === 'workspace'
        ? 'Workspace'
        : 'Agent';
}

export function ToolsPage() {
  const { client } = useSession();
  const { query } = useLocation();
  const q = query.get('q') ?? '';
  const source = query.get('source') ?? '';
  const state = query.get('state') ?? '';
  const pager = usePager(`${q}|${source}|${state}`);
  const tools = useAsync(
    () =>
      toolsApi(client).list({
        limit: 50,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
        ...(q ? { q } : {}),
        ...(source ? { source: source as 'http' | 'mcp' } : {}),
        ...(state ? { state: state as ToolState } : {}),
      }),
    [client, pager.cursor, q, source, state],
  );
  return (
    <>
      <PageHeader title="Tools" />
      <ToolsTabs />
      <form className="filters" aria-label="Filter tools" onSubmit={(e) => e.preventDefault()}>
        <FilterField
          id="filter-q"
          label="Search"
          value={q}
          placeholder="words in the name, description or schema"
          maxLength={200}
          onApply={(value) => setQueryParam('q', value)}
        />
        <FilterSelect
          id="filter-source"
          label="Source"
          name="source"
          value={source}
          options={['http', 'mcp', 'agent', 'workspace']}
        />
        <FilterSelect
          id="filter-tool-state"
          label="State"
          name="state"
          value={state}
          options={TOOL_STATES}
        />
      </form>
      <PagedTable
        result={tools}
        pager={pager}
        what="tools"
        empty={
          q || source || state
            ? 'No tool matches these filters.'
            : 'No tools yet. Register an HTTP tool with POST /v1/tools; the tools of MCP servers appear when a server is added.'
        }
        columns={['Tool', 'State', 'Source', 'Hints', 'Version', 'Changed']}
        row={(tool: Tool) => (
          <tr key={tool.id}>
            <td>
              <Link to={`/tools/${encodeURIComponent(tool.name)}`}>
                <code>{tool.name}</code>
              </Link>
              {tool.description && <div className="muted clamp">{tool.description}</div>}
            </td>
            <td>
              <Badge value={tool.state} />
              {tool.pending && <span className="badge badge-held">pending change</span>}
              {tool.flags.length > 0 && <span className="badge badge-error">flagged</span>}
            </td>
            <td>{sourceLabel(tool)}</td>
            <td>{hintsOf(tool).join(', ') || '–'}</td>
            <td>v{tool.version}</td>
            <td>
              <Time iso={tool.updated_at} />
            </td>
          </tr>
        )}
      />
    </>
  );
}

/** The definition an MCP server changed or added, with what changed, for an admin to approve. */
function PendingDefinition({ tool, onApproved }: { tool: Tool; onApproved: () => void }) {
  const { client, who } = useSession();
  const { busy, problem, run } = useAction();
  const pending = tool.pending;
  if (!pending) return null;
  const approve = () =>
    run(async () => {
      await toolsApi(client).approveDefinition(tool.id, pending.hash);
      onApproved();
    });
  return (
    <section className="panel notice-panel" aria-labelledby="pending-title">
      <h2 id="pending-title">
        {tool.pinned_hash
          ? 'Changed definition, waiting for approval'
          : 'New tool, waiting for approval'}
      </h2>
      <p>
        Its server {tool.pinned_hash ? 'changed this tool' : 'added this tool'}{' '}
        <Time iso={pending.detected_at} />. Calls are not served{' '}
        {tool.pinned_hash ? 'the new definition' : 'at all'} until an admin approves it.
      </p>
      {pending.flags.length > 0 && (
        <ul className="flags" aria-label="Warnings about the new definition">
          {pending.flags.map((f) => (
            <li key={f}>{f}</li>
          ))}
        </ul>
      )}
      {pending.diff.length > 0 && (
        <ul className="changes" aria-label="What changed">
          {pending.diff.map((line, index) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: the server's lines, in its order
            <li key={index}>
              <code>{line}</code>
            </li>
          ))}
        </ul>
      )}
      <Diff
        before={tool.pinned_hash ? definitionOf(tool) : {}}
        after={definitionOf(pending)}
        label="The served definition against the new one"
      />
      <p className="muted">
        Definition hash <code>{pending.hash}</code>
      </p>
      <Alert message={problem} />
      {who.role === 'admin' ? (
        <div className="actions">
          <button type="button" className="primary" disabled={busy} onClick={approve}>
            Approve this definition
          </button>
        </div>
      ) : (
        <p className="muted">Only an admin can approve it.</p>
      )}
    </section>
  );
}

export function ToolDetailPage({ name }: { name: string }) {
  const { client, canWrite } = useSession();
  const tool = useAsync(() => toolsApi(client).get(name), [client, name]);
  if (tool.data === undefined) {
    return <NotLoaded result={tool} title={`Tool ${name}`} what="the tool" />;
  }
  const t = tool.data;
  return (
    <>
      <PageHeader title={`Tool ${t.name}`} />
      <ToolsTabs />
      <PendingDefinition tool={t} onApproved={tool.reload} />
      <section className="panel" aria-label="Tool">
        <dl className="facts">
          <dt>State</dt>
          <dd>
            <Badge value={t.state} />
          </dd>
          <dt>Description</dt>
          <dd className="prose">{t.description || '–'}</dd>
          <dt>Source</dt>
          <dd>
            <code>{upstreamOf(t)}</code>
          </dd>
          <dt>Hints</dt>
          <dd>{hintsOf(t).join(', ') || '–'}</dd>
          <dt>Flags</dt>
          <dd>
            {t.flags.length === 0 ? (
              'none'
            ) : (
              <ul className="flags" aria-label="Flags">
                {t.flags.map((f) => (
                  <li key={f}>{f}</li>
                ))}
              </ul>
            )}
          </dd>
          <dt>Version</dt>
          <dd>
            v{t.version}
            {t.latest_version !== t.version && (
              <span className="muted"> (latest v{t.latest_version})</span>
            )}
          </dd>
          <dt>Limits</dt>
          <dd>
            timeout {t.timeout_ms} ms ·{' '}
            {t.retry ? `up to ${t.retry.max_attempts} attempts` : 'no retries'}
          </dd>
          <dt>Labels</dt>
          <dd>
            {Object.entries(t.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ') || '–'}
          </dd>
          <dt>Calls</dt>
          <dd>
            <Link to={`/tool-calls?tool=${encodeURIComponent(t.name)}`}>Its call log</Link>
          </dd>
          <dt>Changed</dt>
          <dd>
            <Time iso={t.updated_at} />
          </dd>
        </dl>
      </section>
      <div className="columns">
        <section className="panel" aria-labelledby="tool-input-title">
          <h2 id="tool-input-title">Input schema</h2>
          <Json value={t.input_schema} label="Input schema" />
        </section>
        <section className="panel" aria-labelledby="tool-annotations-title">
          <h2 id="tool-annotations-title">Annotations</h2>
          <Json value={t.annotations} label="Annotations" />
          {t.output_schema && (
            <>
              <h3>Output schema</h3>
              <Json value={t.output_schema} label="Output schema" />
            </>
          )}
        </section>
      </div>
      {canWrite && t.state === 'active' && <TryTool key={t.version} tool={t} />}
    </>
  );
}
