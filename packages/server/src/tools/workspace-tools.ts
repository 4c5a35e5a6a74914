import type {
  Tool,
  ToolAnnotations,
  ToolResult,
  ToolVersionSummary,
  WorkspaceToolSource,
} from '@orchestra/protocol';
import { WORKSPACE_TOOL_OPERATIONS } from '@orchestra/protocol';
import type { Principal } from '../platform/auth.ts';
import { definitionHash } from './definition.ts';

/** What a workspace tool does: one of `WORKSPACE_TOOL_OPERATIONS`. */
export type WorkspaceOperation = WorkspaceToolSource['operation'];

/** Names of the built-in tools start with this; users' tools cannot. */
export const WORKSPACE_TOOL_PREFIX = 'workspace.';
/**
 * Their ids sort before every stored tool's (`tool_` + 12 hex digits of milliseconds,
 * `tool_01…` until the year 2527), so a page of the registry lists them first.
 */
const WORKSPACE_TOOL_ID_PREFIX = 'tool_00_';
/** They came with this release of the registry: version 1, never changed by users. */
const BUILT_IN_AT = '2026-12-07T00:00:00.000Z';

/** Runs a workspace tool's operation in the instance of the task it is called for. */
export type WorkspaceToolCaller = (options: {
  principal: Principal;
  instanceId: string;
  taskId: string | undefined;
  operation: WorkspaceOperation;
  args: Record<string, unknown>;
  signal: AbortSignal;
}) => Promise<ToolResult>;

const PATH = {
  type: 'string',
  minLength: 1,
  maxLength: 4096,
  description: 'A path relative to the workspace (the instance’s project directory).',
};

interface Definition {
  description: string;
  input_schema: Record<string, unknown>;
  annotations: ToolAnnotations;
  timeout_ms: number;
}

const object = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});

const DEFINITIONS: Record<WorkspaceOperation, Definition> = {
  read_file: {
    description:
      'Reads a text file of the workspace, whole or a byte range (at most 256 KiB a call). Returns its content, size and SHA-256 (give that hash to write_file to avoid overwriting someone else’s change).',
    input_schema: object(
      {
        path: PATH,
        offset: { type: 'integer', minimum: 0, description: 'First byte; default 0.' },
        length: {
          type: 'integer',
          minimum: 1,
          maximum: 262_144,
          description: 'Bytes to read; default (and most) 262144.',
        },
      },
      ['path'],
    ),
    annotations: {
      title: 'Read a workspace file',
      readOnlyHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    timeout_ms: 60_000,
  },
  write_file: {
    description:
      'Writes a text file of the workspace, atomically (readers see the old content or the new). Creates missing parent directories. With expected_sha256, refuses if the file changed since it was read.',
    input_schema: object(
      {
        path: PATH,
        content: { type: 'string', maxLength: 4_194_304, description: 'The whole new content.' },
        expected_sha256: {
          type: 'string',
          pattern: '^[0-9a-f]{64}$',
          description: 'The SHA-256 read_file returned: the write fails if the file changed.',
        },
      },
      ['path', 'content'],
    ),
    annotations: { title: 'Write a workspace file', openWorldHint: false },
    timeout_ms: 60_000,
  },
  list_files: {
    description:
      'Lists a directory of the workspace (default: its top): names, types and sizes, up to 1000 entries.',
    input_schema: object({ path: { ...PATH, minLength: 0 } }),
    annotations: {
      title: 'List workspace files',
      readOnlyHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    timeout_ms: 60_000,
  },
  search: {
    description:
      'Searches the contents of the workspace’s files (ripgrep; .gitignore respected). Returns matching lines with their path, line and column.',
    input_schema: object(
      {
        query: { type: 'string', minLength: 1, maxLength: 1000 },
        path: { ...PATH, description: 'Search under this path only.' },
        regex: { type: 'boolean', description: 'The query is a regular expression.' },
        case_sensitive: { type: 'boolean', description: 'Default true.' },
        glob: {
          type: 'array',
          items: { type: 'string', minLength: 1, maxLength: 200 },
          maxItems: 20,
          description: 'File globs to include (or exclude with a leading "!").',
        },
        max_results: { type: 'integer', minimum: 1, maximum: 1000, description: 'Default 100.' },
      },
      ['query'],
    ),
    annotations: {
      title: 'Search the workspace',
      readOnlyHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    timeout_ms: 60_000,
  },
  exec: {
    description:
      'Runs a shell command (sh -c) in the instance’s sandbox, in the workspace or cwd, and returns its exit code and the end of its stdout and stderr (the last 65536 characters of each). The instance must be running.',
    input_schema: object(
      {
        command: { type: 'string', minLength: 1, maxLength: 65_536 },
        cwd: { ...PATH, description: 'A directory of the workspace to run in.' },
        stdin: { type: 'string', maxLength: 1_048_576 },
        timeout_ms: {
          type: 'integer',
          minimum: 100,
          maximum: 590_000,
          description: 'Default 120000.',
        },
      },
      ['command'],
    ),
    annotations: { title: 'Run a command in the workspace', openWorldHint: false },
    timeout_ms: 600_000,
  },
  terminal: {
    description:
      'Types into a terminal of the instance and returns its screen a moment later. Without terminal_id, opens a new shell terminal first (its id is in the result); with close, closes it. Use "\\n" for Enter and "\\u0003" for Ctrl-C.',
    input_schema: object({
      terminal_id: { type: 'string', maxLength: 64, description: 'A terminal this task opened.' },
      input: { type: 'string', maxLength: 65_536, description: 'What to type.' },
      wait_ms: {
        type: 'integer',
        minimum: 0,
        maximum: 30_000,
        description: 'How long to let it run before the screen is read; default 1000.',
      },
      close: { type: 'boolean', description: 'Close the terminal (after typing input).' },
    }),
    annotations: { title: 'Use a terminal in the workspace', openWorldHint: false },
    timeout_ms: 60_000,
  },
  checkpoint: {
    description:
      'Saves the workspace as a checkpoint of the task (a user can look at what changed since, and go back to it). Returns its id.',
    input_schema: object({ message: { type: 'string', maxLength: 1000 } }),
    annotations: {
      title: 'Checkpoint the workspace',
      destructiveHint: false,
      openWorldHint: false,
    },
    timeout_ms: 300_000,
  },
};

/** A built-in workspace tool as the registry shows it to a tenant. */
function builtIn(tenantId: string, operation: WorkspaceOperation): Tool {
  const name = `${WORKSPACE_TOOL_PREFIX}${operation}`;
  const d = DEFINITIONS[operation];
  const annotations = d.annotations;
  const hash = definitionHash({
    name,
    description: d.description,
    input_schema: d.input_schema,
    output_schema: null,
    annotations,
  });
  return {
    id: `${WORKSPACE_TOOL_ID_PREFIX}${name}`,
    tenant_id: tenantId,
    name,
    version: 1,
    latest_version: 1,
    description: d.description,
    input_schema: d.input_schema,
    output_schema: null,
    annotations,
    destructive: annotations.readOnlyHint !== true && annotations.destructiveHint !== false,
    labels: {},
    timeout_ms: d.timeout_ms,
    retry: null,
    source: { type: 'workspace', operation },
    state: 'active',
    flags: [],
    pinned_hash: hash,
    pending: null,
    created_at: BUILT_IN_AT,
    updated_at: BUILT_IN_AT,
  };
}

/** Every workspace tool of a tenant, in id (and so listing) order. */
export function workspaceTools(tenantId: string): Tool[] {
  return [...WORKSPACE_TOOL_OPERATIONS]
    .map((operation) => builtIn(tenantId, operation))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** The workspace tool `ref` (name or id) of a tenant, or undefined when it is not one. */
export function workspaceTool(tenantId: string, ref: string): Tool | undefined {
  const name = ref.startsWith(WORKSPACE_TOOL_ID_PREFIX)
    ? ref.slice(WORKSPACE_TOOL_ID_PREFIX.length)
    : ref;
  if (!name.startsWith(WORKSPACE_TOOL_PREFIX)) return undefined;
  const operation = name.slice(WORKSPACE_TOOL_PREFIX.length);
  return (WORKSPACE_TOOL_OPERATIONS as readonly string[]).includes(operation)
    ? builtIn(tenantId, operation as WorkspaceOperation)
    : undefined;
}

/** A built-in tool's one version. */
export function workspaceToolVersion(tool: Tool): ToolVersionSummary {
  return {
    version: 1,
    hash: tool.pinned_hash ?? '',
    created_at: BUILT_IN_AT,
    created_by: 'orchestra',
    latest: true,
  };
}
