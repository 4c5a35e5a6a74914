import type {
  ContentItem,
  Tool,
  ToolApproval,
  ToolCall,
  ToolCaller,
  ToolPolicy,
  ToolResult,
} from '@orchestra/sdk';
import { dash, labelsText } from './common.ts';

// How the tools commands show tools, policies, calls and approvals to a person.

/** `Label:  value` lines, the values aligned. */
export function fieldLines(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return rows.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`).join('\n');
}

/** A JSON value under a heading, indented as JSON is; ` (none)` for null or `{}`. */
export function jsonSection(heading: string, value: unknown): string {
  const empty =
    value === null ||
    value === undefined ||
    (typeof value === 'object' && Object.keys(value as object).length === 0);
  return `${heading}:${empty ? ' (none)' : `\n${JSON.stringify(value, null, 2)}`}`;
}

/** Where a tool's calls go: `POST https://…` or `mcp github/create_issue`. */
export function sourceText(tool: Tool): string {
  const source = tool.source;
  switch (source.type) {
    case 'http':
      return `${source.method} ${source.url}`;
    case 'mcp':
      return `mcp ${source.server}/${source.tool}`;
    case 'agent':
      return `agent task${source.template ? ` of template ${source.template}` : ''}${source.capabilities ? ` with ${source.capabilities.join(', ')}` : ''}`;
    case 'workspace':
      return `built in: ${source.operation} in the calling task's instance`;
  }
}

function sourceShort(tool: Tool): string {
  const source = tool.source;
  return source.type === 'mcp' ? `mcp:${source.server}` : source.type;
}

export const TOOL_HEADER = ['NAME', 'ID', 'VERSION', 'STATE', 'SOURCE', 'LABELS', 'UPDATED'];

export function toolRow(t: Tool): string[] {
  return [
    t.name,
    t.id,
    String(t.latest_version),
    t.pending === null ? t.state : `${t.state} (pending)`,
    sourceShort(t),
    labelsText(t.labels),
    t.updated_at,
  ];
}

export function describeTool(t: Tool): string {
  const hints = Object.entries(t.annotations)
    .filter(([key]) => key !== 'title')
    .map(([key, value]) => `${key}=${String(value)}`);
  const parts = [
    fieldLines([
      ['Name', t.name],
      ['ID', t.id],
      ['Version', `${t.version} (latest ${t.latest_version})`],
      ['State', t.state],
      ['Source', sourceText(t)],
      ['Description', t.description || '-'],
      ['Destructive', t.destructive ? 'yes (callable only with an allow policy)' : 'no'],
      ['Hints', hints.length > 0 ? hints.join(', ') : '-'],
      ['Labels', labelsText(t.labels)],
      [
        'Timeout',
        `${t.timeout_ms} ms${t.retry === null ? '' : `, up to ${t.retry.max_attempts} attempts`}`,
      ],
      ['Flags', t.flags.length > 0 ? t.flags.join('; ') : '-'],
      ['Pinned hash', dash(t.pinned_hash)],
      ['Created', t.created_at],
      ['Updated', t.updated_at],
    ]),
    '',
    jsonSection('Input schema', t.input_schema),
    jsonSection('Output schema', t.output_schema),
  ];
  if (t.pending !== null) parts.push('', pendingText(t));
  return parts.join('\n');
}

/** The definition an MCP server changed or added, as an admin reviews it before approving. */
export function pendingText(t: Tool): string {
  const p = t.pending;
  if (p === null) return `${t.name} has no definition waiting for approval.`;
  return [
    `Pending definition of ${t.name} (detected ${p.detected_at}):`,
    `  hash: ${p.hash}`,
    ...(p.diff.length > 0
      ? ['  changes:', ...p.diff.map((line) => `    ${line}`)]
      : ['  a new tool']),
    ...(p.flags.length > 0 ? ['  flags:', ...p.flags.map((line) => `    ${line}`)] : []),
    `  description: ${p.description || '-'}`,
  ].join('\n');
}

export const POLICY_HEADER = ['NAME', 'ID', 'EFFECT', 'TOOLS', 'APPROVAL', 'ENABLED', 'UPDATED'];

export function policyRow(p: ToolPolicy): string[] {
  return [
    p.name,
    p.id,
    p.effect,
    p.tools.join(','),
    p.approval,
    p.enabled ? 'yes' : 'no',
    p.updated_at,
  ];
}

export function describePolicy(p: ToolPolicy): string {
  return [
    fieldLines([
      ['Name', p.name],
      ['ID', p.id],
      ['Effect', p.effect],
      ['Tools', p.tools.join(', ')],
      ['Description', p.description || '-'],
      ['Enabled', p.enabled ? 'yes' : 'no'],
      [
        'Approval',
        p.approval === 'required' ? `required (expires after ${p.approval_timeout_ms} ms)` : 'none',
      ],
      [
        'Rate limit',
        p.rate_limit === null
          ? '-'
          : `${p.rate_limit.requests} per ${p.rate_limit.per_seconds} s per caller and tool`,
      ],
      ['Concurrency', p.max_concurrency === null ? '-' : String(p.max_concurrency)],
      ['Created', p.created_at],
      ['Updated', p.updated_at],
    ]),
    '',
    jsonSection('Match', p.match),
    jsonSection('Arguments schema', p.arguments_schema),
  ].join('\n');
}

export const CALL_HEADER = ['ID', 'TOOL', 'STATUS', 'ERROR', 'CALLER', 'DURATION', 'CREATED'];

/** The error column: the call's error code, `is_error` for a tool-level error, or `-`. */
function callError(c: ToolCall): string {
  return c.error?.code ?? (c.is_error ? 'is_error' : '-');
}

export function callRow(c: ToolCall): string[] {
  return [
    c.id,
    c.tool,
    c.status,
    callError(c),
    c.caller.agent_id ?? c.caller.credential,
    c.duration_ms === null ? '-' : `${c.duration_ms}ms`,
    c.created_at,
  ];
}

export function describeCall(c: ToolCall): string {
  return [
    fieldLines([
      ['ID', c.id],
      ['Tool', `${c.tool} (${c.tool_id}), version ${c.tool_version}`],
      ['Source', `${c.source} ${c.upstream}`],
      ['Status', c.status],
      [
        'Error',
        c.error === null
          ? c.is_error
            ? 'the tool reported an error'
            : '-'
          : `${c.error.code}: ${c.error.message}`,
      ],
      ['Caller', callerText(c.caller)],
      ['Task', dash(c.caller.task_id)],
      ['Session', dash(c.caller.session_id)],
      ['Approval', dash(c.approval_id)],
      ['Attempts', String(c.attempts)],
      ['Duration', c.duration_ms === null ? '-' : `${c.duration_ms} ms`],
      ['Result', c.result_bytes === null ? '-' : `${c.result_bytes} bytes`],
      ['Created', c.created_at],
      ['Finished', dash(c.finished_at)],
    ]),
    '',
    jsonSection('Arguments', c.arguments),
  ].join('\n');
}

export const APPROVAL_HEADER = ['ID', 'TOOL', 'STATUS', 'POLICY', 'CALLER', 'DEADLINE', 'CREATED'];

export function approvalRow(a: ToolApproval): string[] {
  return [
    a.id,
    a.tool,
    a.status,
    a.policy,
    a.caller.agent_id ?? a.caller.credential,
    a.deadline,
    a.created_at,
  ];
}

export function describeApproval(a: ToolApproval): string {
  return [
    fieldLines([
      ['ID', a.id],
      ['Status', a.status],
      ['Tool', `${a.tool}, version ${a.tool_version}`],
      ['Call', a.call_id],
      ['Policy', a.policy],
      ['Caller', callerText(a.caller)],
      ['Task', dash(a.caller.task_id)],
      ['Deadline', a.deadline],
      ['Decided', a.decided_at === null ? '-' : `${a.decided_at} by ${dash(a.decided_by)}`],
      ['Reason', dash(a.reason)],
      ['Created', a.created_at],
    ]),
    '',
    jsonSection('Arguments', a.arguments),
    `Arguments hash: ${a.arguments_hash}`,
  ].join('\n');
}

/** `key_… (operator), agent a1`: who made a call. */
function callerText(caller: ToolCaller): string {
  return `${caller.credential} (${caller.role})${caller.agent_id === null ? '' : `, agent ${caller.agent_id}`}`;
}

/** One content item as text: text as it is, anything else named in brackets. */
function contentText(item: ContentItem): string {
  switch (item.type) {
    case 'text':
      return item.text;
    case 'image':
    case 'audio':
      return `[${item.type} ${item.mimeType}, ${item.data.length} base64 characters]`;
    case 'resource_link':
      return `[link ${item.name}: ${item.uri}]`;
    case 'resource':
      return JSON.stringify(item.resource);
  }
}

/** A result's content as text, one item after another. */
export function resultText(result: ToolResult): string {
  return result.content.map(contentText).join('\n');
}
