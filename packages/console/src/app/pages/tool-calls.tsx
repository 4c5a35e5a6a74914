import { Fragment, useState } from 'react';
import { useTopic } from '../live.ts';
import { Link, setQueryParam, useLocation } from '../router.tsx';
import { useSession } from '../session.tsx';
import {
  TOOL_CALL_STATUSES,
  TOOL_CALLS_TOPIC,
  type ToolCall,
  type ToolCallStatus,
  toolsApi,
} from '../tools-api.ts';
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
import { CallRecord } from './tool-try.tsx';
import { ToolsTabs } from './tools.tsx';

const PAGE_SIZE = 50;

/** The record of every tool call of the tenant, newest first, live. */
export function ToolCallsPage() {
  const { client, topics } = useSession();
  const { query } = useLocation();
  const tool = query.get('tool') ?? '';
  const status = query.get('status') ?? '';
  const pager = usePager(`${tool}|${status}`);
  const [open, setOpen] = useState<ReadonlySet<string>>(new Set());
  const calls = useAsync(
    () =>
      toolsApi(client).calls.list({
        limit: PAGE_SIZE,
        ...(pager.cursor ? { cursor: pager.cursor } : {}),
        ...(tool ? { tool } : {}),
        ...(status ? { status: status as ToolCallStatus } : {}),
      }),
    [client, pager.cursor, tool, status],
  );
  // Live: a call that starts, waits or ends reloads the page shown (at most thrice a second).
  const reload = useThrottled(calls.reload, 300);
  useTopic(topics, TOOL_CALLS_TOPIC, reload, reload);
  const toggle = (id: string) =>
    setOpen((o) => {
      const next = new Set(o);
      if (!next.delete(id)) next.add(id);
      return next;
    });

  return (
    <>
      <PageHeader title="Tool calls" />
      <ToolsTabs />
      <form className="filters" aria-label="Filter tool calls" onSubmit={(e) => e.preventDefault()}>
        <FilterField
          id="filter-call-tool"
          label="Tool"
          value={tool}
          placeholder="name or id"
          maxLength={128}
          onApply={(value) => setQueryParam('tool', value)}
        />
        <FilterSelect
          id="filter-call-status"
          label="Status"
          name="status"
          value={status}
          options={TOOL_CALL_STATUSES}
        />
      </form>
      <PagedTable
        result={calls}
        pager={pager}
        what="tool calls"
        empty={
          tool || status
            ? 'No call matches these filters.'
            : 'No tool calls yet. Agents call tools over MCP or the API; try one from its page.'
        }
        columns={['', 'Tool', 'Status', 'Caller', 'Duration', 'Started']}
        row={(call: ToolCall) => {
          const expanded = open.has(call.id);
          return (
            <Fragment key={call.id}>
              <tr data-call={call.id}>
                <td>
                  <button
                    type="button"
                    className="link"
                    aria-expanded={expanded}
                    aria-controls={`record-${call.id}`}
                    aria-label={`Record of ${call.id}`}
                    onClick={() => toggle(call.id)}
                  >
                    {expanded ? '▾' : '▸'}
                  </button>
                </td>
                <td>
                  <Link to={`/tools/${encodeURIComponent(call.tool)}`}>
                    <code>{call.tool}</code>
                  </Link>
                </td>
                <td>
                  <Badge value={call.status} />
                  {call.status === 'succeeded' && call.is_error && (
                    <span className="badge badge-error">tool error</span>
                  )}
                </td>
                <td>
                  {call.caller.agent_id ?? call.caller.credential}{' '}
                  <span className="muted">({call.caller.role})</span>
                </td>
                <td>{call.duration_ms === null ? '–' : `${call.duration_ms} ms`}</td>
                <td>
                  <Time iso={call.created_at} />
                </td>
              </tr>
              {expanded && (
                <tr id={`record-${call.id}`}>
                  <td colSpan={6} className="record-cell">
                    <CallRecord call={call} />
                  </td>
                </tr>
              )}
            </Fragment>
          );
        }}
      />
    </>
  );
}
