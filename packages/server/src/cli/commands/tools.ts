import { TOOL_STATES } from '@orchestra/protocol/constants';
import type { CreateToolInput, Tool, ToolDefinition, ToolVersionSummary } from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  confirm,
  durationFlag,
  JSON_FILE_OPTION,
  labelFlags,
  oneArgument,
  positiveInteger,
  print,
  readJson,
  readJsonObject,
  UsageError,
  without,
} from '../common.ts';
import { command, group as defineGroup, oneOf } from '../spec.ts';
import { formatTable } from '../table.ts';
import { describeTool, pendingText, resultText, TOOL_HEADER, toolRow } from '../tool-format.ts';

/** Fields of `tools get --json` output that the server sets; an update does not send them. */
const TOOL_READ_ONLY_FIELDS = [
  'id',
  'tenant_id',
  'name',
  'version',
  'latest_version',
  'destructive',
  'state',
  'flags',
  'pinned_hash',
  'pending',
  'created_at',
  'updated_at',
] as const;

const SOURCES = ['http', 'mcp', 'agent', 'workspace'] as const;

/** --wait of invoke: how long the server waits for an approval (at most 5 minutes). */
const WAIT: DurationFormat = { units: ['ms', 's', 'm'], maxDigits: 9, maxMs: 300_000 };

/**
 * How long invoke waits for an answer besides --wait: a tool may take up to 10 minutes an
 * attempt (its `timeout_ms`), longer than the client's usual 30 s.
 */
const INVOKE_ANSWER_MS = 11 * 60_000;

/** Exit code of `tools invoke` when the call waits for an operator's approval. */
export const EXIT_AWAITING_APPROVAL = 3;

const readToolFile = (file: string) =>
  readJsonObject(file, '{"name": "weather", "source": {"type": "http", …}}');

/** A tool file without what the server sets, so `tools get --json` output can be sent back. */
function toolDefinition(document: Record<string, unknown>): ToolDefinition {
  const definition = without(document, TOOL_READ_ONLY_FIELDS);
  if (definition.output_schema === null) delete definition.output_schema;
  // Anything else, typos included, goes to the server, which names unknown fields.
  return definition as ToolDefinition;
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists tools at their latest version, by name.',
  options: {
    search: {
      type: 'string',
      value: 'WORDS',
      description: 'Only tools whose name, description or schema hold every one of WORDS',
    },
    source: {
      type: 'string',
      value: 'SOURCE',
      description: `Only the tools of this source: ${oneOf(SOURCES)}`,
    },
    server: { type: 'string', value: 'NAME', description: 'Only the tools of this MCP server' },
    state: {
      type: 'string',
      value: 'STATE',
      description: `Only tools in this state: ${oneOf(TOOL_STATES)}`,
    },
    label: {
      type: 'string',
      value: 'KEY=VALUE',
      multiple: true,
      description: 'Only the tools with this label; with several, all must match',
    },
    'name-prefix': {
      type: 'string',
      value: 'PREFIX',
      description: 'Only the tools whose name starts with PREFIX',
    },
  },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    if (positionals.length > 0) throw new UsageError('tools ls takes no arguments');
    const tools: Tool[] = [];
    for await (const tool of client(values).tools.listAll({
      limit: 200,
      labels: labelFlags(values.label),
      ...(values.search !== undefined ? { q: values.search } : {}),
      ...(values.source !== undefined
        ? { source: choice('--source', values.source, SOURCES) }
        : {}),
      ...(values.server !== undefined ? { server: values.server } : {}),
      ...(values.state !== undefined
        ? { state: choice('--state', values.state, TOOL_STATES) }
        : {}),
      ...(values['name-prefix'] !== undefined ? { name_prefix: values['name-prefix'] } : {}),
    })) {
      tools.push(tool);
    }
    print(values.json, tools, () => formatTable(TOOL_HEADER, tools.map(toolRow)));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description:
    'Shows a tool: source, state, hints, schemas, and the definition its MCP server changed, if one waits for approval.',
  options: {
    version: { type: 'string', value: 'N', description: 'The version to show' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    const api = client(values).tools;
    const tool =
      values.version === undefined
        ? await api.get(ref)
        : await api.getVersion(ref, positiveInteger('--version', values.version));
    print(values.json, tool, () => describeTool(tool));
    return 0;
  },
});

const create = command({
  name: 'create',
  description:
    'Registers an HTTP tool (version 1) from a JSON file: its "name", "source" ({"type": "http", "method", "url", …}) and description, input_schema, output_schema, annotations, labels, timeout_ms, retry. Tools of MCP servers are registered by their server.',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run({ values, positionals }) {
    if (positionals.length > 0) throw new UsageError('tools create takes no arguments');
    const document = readToolFile(values.file);
    if (typeof document.name !== 'string') {
      throw new UsageError(
        `${values.file === '-' ? 'standard input' : values.file} needs a "name" string`,
      );
    }
    const input = { ...toolDefinition(document), name: document.name } as CreateToolInput;
    const tool = await client(values).tools.create(input);
    print(
      values.json,
      tool,
      () => `Created tool ${tool.name} (${tool.id}), version ${tool.version}.`,
    );
    return 0;
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces an HTTP tool’s definition with the one in FILE, as a new version; fields left out go back to their defaults. FILE may be the output of "tools get --json": what the server sets is not sent.',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    const document = readToolFile(values.file);
    if (typeof document.name === 'string' && !ref.startsWith('tool_') && document.name !== ref) {
      throw new UsageError(
        `${values.file === '-' ? 'standard input' : values.file} is for tool "${document.name}", not "${ref}"; tools cannot be renamed`,
      );
    }
    const tool = await client(values).tools.update(ref, toolDefinition(document));
    print(
      values.json,
      tool,
      () => `Updated tool ${tool.name} (${tool.id}): version ${tool.version} is the latest.`,
    );
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'NAME|ID',
  description: 'Deletes an HTTP tool and its versions; the record of its calls stays.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    await client(values).tools.delete(ref);
    print(values.json, { deleted: ref }, () => `Deleted tool ${ref}.`);
    return 0;
  },
});

const versions = command({
  name: 'versions',
  args: 'NAME|ID',
  description:
    'Lists the versions of a tool, newest first, with the hash of each definition; * marks the latest.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    const items: ToolVersionSummary[] = [];
    for await (const version of client(values).tools.versionsAll(ref, { limit: 200 })) {
      items.push(version);
    }
    print(values.json, items, () =>
      formatTable(
        ['VERSION', 'LATEST', 'HASH', 'CREATED', 'CREATED BY'],
        items.map((v) => [
          String(v.version),
          v.latest ? '*' : '',
          v.hash.slice(0, 12),
          v.created_at,
          v.created_by,
        ]),
      ),
    );
    return 0;
  },
});

/** The arguments of `tools invoke`: --args, --args-file, or none ({}). */
function invokeArguments(values: { args?: string | undefined; 'args-file'?: string | undefined }) {
  if (values.args !== undefined && values['args-file'] !== undefined) {
    throw new UsageError('use either --args or --args-file, not both');
  }
  let parsed: unknown = {};
  let source = '--args';
  if (values.args !== undefined) {
    try {
      parsed = JSON.parse(values.args);
    } catch (err) {
      throw new UsageError(`--args is not valid JSON: ${(err as Error).message}`);
    }
  } else if (values['args-file'] !== undefined) {
    source = values['args-file'] === '-' ? 'standard input' : values['args-file'];
    parsed = readJson(values['args-file']);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`${source} must be a JSON object of arguments, such as {"city": "Oslo"}`);
  }
  return parsed as Record<string, unknown>;
}

const invoke = command({
  name: 'invoke',
  aliases: ['call'],
  args: 'NAME|ID',
  description:
    'Calls a tool and prints the text of its result (--json: the call’s record and the whole result). Exit code 0 when the tool answered without an error; 1 when the result is a tool-level error (is_error), the call failed (timeout, upstream down) or was refused (denied by a policy, invalid arguments, rejected, expired); 3 when the call waits for an operator’s approval ("orchestra approvals --help").',
  options: {
    args: {
      type: 'string',
      value: 'JSON',
      description: 'The arguments, a JSON object (default {})',
    },
    'args-file': {
      type: 'string',
      value: 'FILE',
      description: 'Reads the arguments from FILE (- reads standard input)',
    },
    wait: {
      type: 'string',
      value: 'DURATION',
      description:
        'When a policy requires an approval: waits up to DURATION (at most 5m, like 30s) for the decision before exiting 3',
    },
    session: { type: 'string', value: 'ID', description: 'The session the call is made for' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    const args = invokeArguments(values);
    const waitMs =
      values.wait === undefined ? undefined : durationFlag('--wait', values.wait, WAIT, '30s');
    const { call, result } = await client(values).tools.invoke(ref, args, {
      ...(waitMs !== undefined ? { waitMs } : {}),
      ...(values.session !== undefined ? { sessionId: values.session } : {}),
      timeoutMs: (waitMs ?? 0) + INVOKE_ANSWER_MS,
    });
    if (values.json) {
      print(true, { call, result }, () => '');
    } else if (result !== null) {
      const text = resultText(result);
      if (text !== '') process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
    if (call.status === 'awaiting_approval') {
      process.stderr.write(
        `Call ${call.id} waits for an approval: orchestra approvals approve ${call.approval_id ?? ''}\n`,
      );
      return EXIT_AWAITING_APPROVAL;
    }
    if (call.error !== null) {
      process.stderr.write(
        `error: call ${call.id} ${call.status}: ${call.error.message} (${call.error.code})\n`,
      );
      return 1;
    }
    if (call.is_error || result?.is_error === true) {
      process.stderr.write(`error: the tool reported an error (call ${call.id})\n`);
      return 1;
    }
    return 0;
  },
});

const approve = command({
  name: 'approve',
  args: 'NAME|ID',
  description:
    'Approves the definition an MCP server changed or added (held): shows what changed and its hash, asks, then approves that hash. It becomes a new version, pinned and served. Needs an admin credential.',
  options: {
    hash: {
      type: 'string',
      value: 'HASH',
      description: 'Approves only if the pending definition still has this hash; does not ask',
    },
    yes: { type: 'boolean', short: 'y', description: 'Does not ask' },
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'tool name or id');
    const api = client(values).tools;
    let hash = values.hash;
    if (hash === undefined) {
      const tool = await api.get(ref);
      if (tool.pending === null) {
        process.stderr.write(`error: ${pendingText(tool)}\n`);
        return 1;
      }
      process.stderr.write(`${pendingText(tool)}\n`);
      if (!values.yes && !(await confirm(`Approve this definition of ${tool.name}?`))) {
        process.stderr.write('Not approved.\n');
        return 1;
      }
      hash = tool.pending.hash;
    }
    const approved = await api.approveDefinition(ref, hash);
    print(
      values.json,
      approved,
      () => `Approved ${approved.name}: version ${approved.version} is pinned and served.`,
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'tools',
  summary: 'Manage and call tools (HTTP, and those of MCP servers)',
  notes:
    'Creating, updating, deleting and invoking need an admin or operator credential (invoking also an agent one); approve needs an admin. Policies, the record of calls and approvals of calls have groups of their own: "orchestra tool-policies", "orchestra tool-calls", "orchestra approvals".',
  subcommands: [list, get, create, update, remove, versions, invoke, approve],
});
