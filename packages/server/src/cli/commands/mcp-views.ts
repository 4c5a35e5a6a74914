import type { CreateMcpViewInput, McpView, McpViewDefinition } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  fileOrFlags,
  nameFromArgumentOrFile,
  noArguments,
  oneArgument,
  print,
  readJsonObject,
  UsageError,
  without,
} from '../common.ts';
import { describeView, VIEW_HEADER, viewRow } from '../mcp-format.ts';
import { command, group as defineGroup, type OptionSpecs } from '../spec.ts';
import { formatTable } from '../table.ts';

/** Fields of `mcp-views get --json` output that the server sets. */
const VIEW_READ_ONLY_FIELDS = ['id', 'tenant_id', 'name', 'created_at', 'updated_at'] as const;

const EXPOSURES = ['all', 'search'] as const;

/** What a view offers, as flags; --file instead for renames, descriptions, hidden arguments. */
const VIEW_OPTIONS = {
  file: {
    type: 'string',
    value: 'FILE',
    description:
      'Take the view from a JSON file (- reads standard input) instead of the flags below: "tools" ([{"tool", "name", "description", "hidden_arguments"}]), "servers", "tool_exposure", "instructions", "description"',
  },
  tool: {
    type: 'string',
    value: 'TOOL',
    multiple: true,
    description: 'A registry tool the view offers under its own name; repeat it for each',
  },
  server: {
    type: 'string',
    value: 'SERVER',
    multiple: true,
    description: 'An MCP server whose every tool the view offers under the server’s own names',
  },
  exposure: {
    type: 'string',
    value: 'MODE',
    description:
      'all (tools/list lists every tool; the default) or search (search_tools and call_tool only)',
  },
  instructions: {
    type: 'string',
    value: 'TEXT',
    description: 'Sent to clients as the server’s instructions',
  },
  description: { type: 'string', value: 'TEXT', description: 'What the view is for' },
} as const satisfies OptionSpecs;

type ViewFlags = {
  file?: string | undefined;
  tool?: string[] | undefined;
  server?: string[] | undefined;
  exposure?: string | undefined;
  instructions?: string | undefined;
  description?: string | undefined;
};

/** The view from --file (such as `get --json` output) or from the flags, not both. */
function viewDefinition(
  values: ViewFlags,
  path: string,
): { name: unknown; definition: McpViewDefinition } {
  fileOrFlags(values, VIEW_OPTIONS, path, 'the view');
  if (values.file !== undefined) {
    const document = readJsonObject(values.file, '{"name": "support", "tools": [{"tool": "…"}]}');
    const definition = without(document, VIEW_READ_ONLY_FIELDS);
    if (definition.instructions === null) delete definition.instructions;
    return { name: document.name, definition: definition as McpViewDefinition };
  }
  return {
    name: undefined,
    definition: {
      ...(values.tool !== undefined ? { tools: values.tool.map((tool) => ({ tool })) } : {}),
      ...(values.server !== undefined ? { servers: values.server } : {}),
      ...(values.exposure !== undefined
        ? { tool_exposure: choice('--exposure', values.exposure, EXPOSURES) }
        : {}),
      ...(values.instructions !== undefined ? { instructions: values.instructions } : {}),
      ...(values.description !== undefined ? { description: values.description } : {}),
    },
  };
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the tenant’s views: the virtual MCP servers served at /mcp/{view}.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const views: McpView[] = [];
    for await (const v of client(values).mcpViews.listAll({ limit: 200 })) views.push(v);
    print(values.json, views, () => formatTable(VIEW_HEADER, views.map(viewRow)));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description:
    'Shows a view: its tools (with the names, descriptions and arguments it sets), servers, exposure and instructions.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const view = await client(values).mcpViews.get(oneArgument(invocation, 'view name'));
    print(values.json, view, () => describeView(view));
    return 0;
  },
});

const create = command({
  name: 'create',
  args: '[NAME]',
  description: [
    'Creates a view, served at /mcp/NAME; NAME may instead come from the file. The policy still decides what each caller sees and may call. Examples:',
    '  orchestra mcp-views create support --tool github__search_issues --server docs',
    '  orchestra mcp-views create --file support-view.json',
  ].join('\n'),
  options: VIEW_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const { name: fromFile, definition } = viewDefinition(values, invocation.path);
    const name = nameFromArgumentOrFile(invocation, fromFile, 'view');
    const input: CreateMcpViewInput = { ...definition, name };
    const view = await client(values).mcpViews.create(input);
    print(values.json, view, () => `Created view ${view.name} (${view.id}), at /mcp/${view.name}.`);
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces the whole view with the flags or the file (such as the output of "mcp-views get --json"); what is left out takes its default.',
  options: VIEW_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'view name');
    const { name: fromFile, definition } = viewDefinition(values, invocation.path);
    if (typeof fromFile === 'string' && !ref.startsWith('mcpv_') && fromFile !== ref) {
      throw new UsageError(
        `the file is for view "${fromFile}", not "${ref}"; views cannot be renamed`,
      );
    }
    const view = await client(values).mcpViews.update(ref, definition);
    print(values.json, view, () => `Updated view ${view.name}.`);
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'NAME|ID',
  description: 'Deletes a view; /mcp/NAME no longer serves it.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'view name');
    await client(values).mcpViews.delete(ref);
    print(values.json, { deleted: ref }, () => `Deleted view ${ref}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'mcp-views',
  summary: 'Manage views: virtual MCP servers at /mcp/{view} with chosen tools',
  notes: 'Creating, updating and deleting need an admin credential.',
  subcommands: [list, get, create, update, remove],
});
