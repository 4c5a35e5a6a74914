import type { CatalogEntry, McpServer, McpServerLog, McpView } from '@orchestra/sdk';
import { dash } from './common.ts';
import { fieldLines } from './tool-format.ts';

// How the mcp-servers, mcp-catalog and mcp-views commands show them to a person. Env and
// header values are never shown: the server returns only their names.

export const SERVER_HEADER = ['NAME', 'TRANSPORT', 'STATE', 'TOOLS', 'NODE', 'UPDATED'];

export function serverRow(s: McpServer): string[] {
  return [s.name, s.transport, s.status.state, String(s.tools), dash(s.status.node), s.updated_at];
}

/** What it runs or connects to: `node server.js --flag` or the URL. */
function target(s: McpServer): string {
  if (s.transport !== 'stdio') return dash(s.url);
  return [s.command ?? '', ...s.args.map(quoted)].join(' ').trim() || '-';
}

/** An argument as a shell would need it, so the command line reads unambiguously. */
function quoted(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

const names = (list: readonly string[]) => (list.length > 0 ? list.join(', ') : '-');

export function describeServer(s: McpServer): string {
  const { status } = s;
  const rows: [string, string][] = [
    ['Name', s.name],
    ['ID', s.id],
    ['Description', s.description || '-'],
    ['Transport', s.transport],
    [s.transport === 'stdio' ? 'Command' : 'URL', target(s)],
  ];
  if (s.transport === 'stdio') {
    rows.push(
      ['Working dir', dash(s.cwd)],
      ['Env', names(s.env_names)],
      ['Network', s.network ? 'yes' : 'no'],
    );
  } else {
    rows.push(['Headers', names(s.header_names)]);
  }
  rows.push(
    ['Enabled', s.enabled ? 'yes' : 'no'],
    ['State', status.reason === null ? status.state : `${status.state} (${status.reason})`],
    ['Since', status.since],
    ['Tools', String(s.tools)],
    [
      'Server',
      status.server_info === null
        ? '-'
        : `${status.server_info.name} ${status.server_info.version}`,
    ],
    ['Protocol', dash(status.protocol_version)],
    ['Node', dash(status.node)],
    ['Restarts', String(status.restarts)],
    ['Sandboxed', status.sandboxed === null ? '-' : status.sandboxed ? 'yes' : 'no'],
    ['Tool timeout', `${s.tool_timeout_ms} ms`],
    ['Trust initial', s.trust_initial_tools ? 'yes' : 'no'],
    ['Catalog entry', dash(s.catalog_entry)],
    ['Created', s.created_at],
    ['Updated', s.updated_at],
  );
  return fieldLines(rows);
}

/** One line per log line: time, stream, text; a note first when older lines were dropped. */
export function logText(log: McpServerLog): string {
  const lines = log.lines.map((l) => `${l.time ?? '-'.padEnd(24)} ${l.stream.padEnd(6)} ${l.text}`);
  if (log.dropped > 0) lines.unshift(`(${log.dropped} earlier lines dropped)`);
  return lines.length > 0 ? lines.join('\n') : '(no lines)';
}

export const CATALOG_HEADER = ['ID', 'TRANSPORT', 'ORIGIN', 'TITLE'];

export function catalogRow(e: CatalogEntry): string[] {
  return [e.id, e.server.transport, e.origin, e.title];
}

export const VIEW_HEADER = ['NAME', 'TOOLS', 'SERVERS', 'EXPOSURE', 'UPDATED'];

export function viewRow(v: McpView): string[] {
  return [v.name, String(v.tools.length), names(v.servers), v.tool_exposure, v.updated_at];
}

export function describeView(v: McpView): string {
  const head = fieldLines([
    ['Name', v.name],
    ['ID', v.id],
    ['Description', v.description || '-'],
    ['Served at', `/mcp/${v.name}`],
    ['Exposure', v.tool_exposure],
    ['Servers', names(v.servers)],
    ['Instructions', v.instructions ?? '-'],
    ['Created', v.created_at],
    ['Updated', v.updated_at],
  ]);
  const tools = v.tools.map((t) => {
    const hidden = Object.keys(t.hidden_arguments ?? {});
    return [
      `  ${t.name !== undefined && t.name !== t.tool ? `${t.name} (${t.tool})` : t.tool}`,
      ...(t.description !== undefined ? [`    description: ${t.description}`] : []),
      ...(hidden.length > 0 ? [`    set by the view: ${hidden.join(', ')}`] : []),
    ].join('\n');
  });
  return `${head}\nTools:${tools.length > 0 ? `\n${tools.join('\n')}` : ' (none)'}`;
}
