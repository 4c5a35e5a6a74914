import type { CreateMcpServerInput, McpServer, McpServerDefinition } from '@orchestra/sdk';
import type { DurationFormat } from '../../platform/duration.ts';
import {
  CLIENT_OPTIONS,
  choice,
  client,
  durationFlag,
  fileOrFlags,
  nameFromArgumentOrFile,
  noArguments,
  oneArgument,
  print,
  readJsonObject,
  UsageError,
  without,
} from '../common.ts';
import { describeServer, logText, SERVER_HEADER, serverRow } from '../mcp-format.ts';
import { reportStarted, WAIT_OPTION, waitLimit } from '../mcp-wait.ts';
import { command, group as defineGroup, type OptionSpecs } from '../spec.ts';
import { formatTable } from '../table.ts';

const TRANSPORTS = ['stdio', 'streamable_http', 'sse'] as const;

/** --tool-timeout: what a server's `tool_timeout_ms` allows. */
const TOOL_TIMEOUT: DurationFormat = { units: ['ms', 's', 'm'], maxDigits: 9, maxMs: 600_000 };

/** Fields of `mcp-servers get --json` output that the server sets; an update does not send them. */
const SERVER_READ_ONLY_FIELDS = [
  'id',
  'tenant_id',
  'name',
  'env_names',
  'header_names',
  'catalog_entry',
  'status',
  'tools',
  'created_at',
  'updated_at',
] as const;

/** The settings of `add` and `update`, as flags. */
const SERVER_OPTIONS = {
  file: {
    type: 'string',
    value: 'FILE',
    description:
      'Take the settings from a JSON file (- reads standard input) instead of the flags below, such as {"transport": "stdio", "command": "npx", "args": [...]}',
  },
  transport: {
    type: 'string',
    value: 'TRANSPORT',
    description:
      'stdio (Orchestra runs --command), streamable_http or sse (Orchestra connects to --endpoint)',
  },
  command: { type: 'string', value: 'PROGRAM', description: 'stdio: the program to run' },
  arg: {
    type: 'string',
    value: 'ARG',
    multiple: true,
    description: 'stdio: an argument of the program; repeat it for each, in order',
  },
  env: {
    type: 'string',
    value: 'NAME=VALUE',
    multiple: true,
    description:
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
      'stdio: an environment variable; the value may refer to a secret as ${secret:NAME} (quote it for the shell). Values are never shown again, only names',
  },
  cwd: { type: 'string', value: 'DIR', description: 'stdio: an absolute working directory' },
  network: {
    type: 'boolean',
    default: false,
    description: 'stdio, when sandboxed: let the process use the network',
  },
  // Not --url: that is the Orchestra server's, for every command.
  endpoint: {
    type: 'string',
    value: 'URL',
    description: 'streamable_http and sse: the MCP server’s URL',
  },
  header: {
    type: 'string',
    value: 'NAME=VALUE',
    multiple: true,
    description:
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
      'HTTP transports: a header sent with every request; the value may refer to a secret as ${secret:NAME}. Values are never shown again, only names',
  },
  description: { type: 'string', value: 'TEXT', description: 'What the server is for' },
  'tool-timeout': {
    type: 'string',
    value: 'DURATION',
    description: 'Timeout of its tools’ calls, such as 30s (default 30s, at most 10m)',
  },
  'review-initial-tools': {
    type: 'boolean',
    default: false,
    description:
      'Hold even the tools it lists when first connected until an admin approves them (by default they are trusted)',
  },
  disabled: {
    type: 'boolean',
    default: false,
    description: 'Register it disabled: it does not start until "mcp-servers enable"',
  },
} as const satisfies OptionSpecs;

type ServerFlags = {
  file?: string | undefined;
  transport?: string | undefined;
  command?: string | undefined;
  arg?: string[] | undefined;
  env?: string[] | undefined;
  cwd?: string | undefined;
  network: boolean;
  endpoint?: string | undefined;
  header?: string[] | undefined;
  description?: string | undefined;
  'tool-timeout'?: string | undefined;
  'review-initial-tools': boolean;
  disabled: boolean;
};

/** `--env NAME=VALUE` or `--header NAME=VALUE` flags as an object; the value may hold `=`. */
function pairs(flag: string, given: string[] | undefined): Record<string, string> | undefined {
  if (given === undefined || given.length === 0) return undefined;
  const result: Record<string, string> = {};
  for (const pair of given) {
    const at = pair.indexOf('=');
    // The value is not echoed: it may be a secret typed on the command line.
    if (at < 1) throw new UsageError(`${flag} must be NAME=VALUE (got one without "=" or name)`);
    result[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return result;
}

/** The settings from the flags; the server checks that they fit the transport. */
function settingsFromFlags(values: ServerFlags, path: string): McpServerDefinition {
  if (values.transport === undefined) {
    throw new UsageError(`${path} needs --transport stdio|streamable_http|sse, or --file FILE`);
  }
  const transport = choice('--transport', values.transport, TRANSPORTS);
  if (transport === 'stdio' && values.command === undefined) {
    throw new UsageError(`${path} --transport stdio needs --command PROGRAM`);
  }
  if (transport !== 'stdio' && values.endpoint === undefined) {
    throw new UsageError(`${path} --transport ${transport} needs --endpoint URL`);
  }
  const env = pairs('--env', values.env);
  const headers = pairs('--header', values.header);
  return {
    transport,
    ...(values.description !== undefined ? { description: values.description } : {}),
    ...(values.command !== undefined ? { command: values.command } : {}),
    ...(values.arg !== undefined && values.arg.length > 0 ? { args: values.arg } : {}),
    ...(env !== undefined ? { env } : {}),
    ...(values.cwd !== undefined ? { cwd: values.cwd } : {}),
    ...(values.network ? { network: true } : {}),
    ...(values.endpoint !== undefined ? { url: values.endpoint } : {}),
    ...(headers !== undefined ? { headers } : {}),
    ...(values['tool-timeout'] !== undefined
      ? {
          tool_timeout_ms: durationFlag(
            '--tool-timeout',
            values['tool-timeout'],
            TOOL_TIMEOUT,
            '30s',
          ),
        }
      : {}),
    ...(values['review-initial-tools'] ? { trust_initial_tools: false } : {}),
    ...(values.disabled ? { enabled: false } : {}),
  };
}

/**
 * The settings in a file, such as `get --json` output: what the server sets is dropped, and
 * so are the empty fields of the other transport that `get` shows (`args: []`, `url: null`).
 */
function settingsFromFile(file: string): { name: unknown; definition: McpServerDefinition } {
  const document = readJsonObject(
    file,
    '{"name": "fs", "transport": "stdio", "command": "npx", "args": ["-y", "…"]}',
  );
  const source = file === '-' ? 'standard input' : file;
  for (const [names, values] of [
    ['env_names', 'env'],
    ['header_names', 'headers'],
  ] as const) {
    const listed = document[names];
    if (Array.isArray(listed) && listed.length > 0 && document[values] === undefined) {
      // `get --json` shows only the names: sending it back would drop the values.
      throw new UsageError(
        `${source} names ${values} ${listed.join(', ')} but holds no values (they are never shown); add "${values}": {"NAME": "value"} to the file`,
      );
    }
  }
  const definition = without(document, SERVER_READ_ONLY_FIELDS);
  for (const [field, value] of Object.entries(definition)) {
    const empty =
      value === null ||
      (Array.isArray(value) && value.length === 0) ||
      (field === 'network' && value === false && definition.transport !== 'stdio');
    if (empty) delete definition[field];
  }
  return { name: document.name, definition: definition as McpServerDefinition };
}

/** The settings of `add` or `update`: from --file or from the flags, not both. */
function settings(values: ServerFlags, path: string) {
  if (values.file === undefined) {
    return { name: undefined, definition: settingsFromFlags(values, path) };
  }
  fileOrFlags(values, SERVER_OPTIONS, path, 'the settings');
  return settingsFromFile(values.file);
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description: 'Lists the tenant’s MCP servers with their state and how many tools they serve.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const servers: McpServer[] = [];
    for await (const s of client(values).mcpServers.listAll({ limit: 200 })) servers.push(s);
    print(values.json, servers, () => formatTable(SERVER_HEADER, servers.map(serverRow)));
    return 0;
  },
});

const get = command({
  name: 'get',
  args: 'NAME|ID',
  description:
    'Shows a server: what it runs or connects to, the names of its env variables or headers (never their values), its state and why, protocol version, node and restarts.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const server = await client(values).mcpServers.get(oneArgument(invocation, 'server name'));
    print(values.json, server, () => describeServer(server));
    return 0;
  },
});

const add = command({
  name: 'add',
  aliases: ['create'],
  args: '[NAME]',
  description: [
    'Registers an MCP server. A node of the cluster starts it (stdio) or connects to it at once; "mcp-servers get NAME" shows how that went. Its tools join the registry as NAME__<tool>. NAME may instead come from the file. Examples:',
    '  orchestra mcp-servers add fs --transport stdio --command npx --arg -y \\',
    '    --arg @modelcontextprotocol/server-filesystem --arg /srv/shared',
    '  orchestra mcp-servers add github --transport streamable_http \\',
    '    --endpoint https://mcp.example.com/mcp \\',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
    "    --header 'authorization=Bearer ${secret:GITHUB_TOKEN}'",
    '  orchestra mcp-servers add --file server.json --wait',
  ].join('\n'),
  options: { ...SERVER_OPTIONS, ...WAIT_OPTION },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const { name: fromFile, definition } = settings(values, invocation.path);
    const name = nameFromArgumentOrFile(invocation, fromFile, 'server');
    const limit = waitLimit(values.wait);
    const input: CreateMcpServerInput = { ...definition, name };
    const api = client(values);
    const server = await api.mcpServers.create(input);
    return reportStarted(
      api,
      values.json,
      server,
      `Added MCP server ${server.name} (${server.id})`,
      limit,
    );
  },
});

const update = command({
  name: 'update',
  args: 'NAME|ID',
  description:
    'Replaces all of a server’s settings, with the flags or with the file (such as the output of "mcp-servers get --json"), and restarts it. Settings left out take their defaults, env variables and headers included: give their values again, since they are never shown.',
  options: SERVER_OPTIONS,
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'server name');
    const { name: fromFile, definition } = settings(values, invocation.path);
    if (typeof fromFile === 'string' && !ref.startsWith('mcp_') && fromFile !== ref) {
      throw new UsageError(
        `the file is for server "${fromFile}", not "${ref}"; servers cannot be renamed`,
      );
    }
    const server = await client(values).mcpServers.update(ref, definition);
    print(
      values.json,
      server,
      () => `Updated MCP server ${server.name}; it is ${server.status.state}.`,
    );
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'NAME|ID',
  description: 'Stops a server and removes it and its tools (the record of their calls stays).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const ref = oneArgument(invocation, 'server name');
    await client(values).mcpServers.delete(ref);
    print(values.json, { deleted: ref }, () => `Removed MCP server ${ref}.`);
    return 0;
  },
});

/** enable, disable and restart: one call, then the server's name and state. */
function action(
  name: 'enable' | 'disable' | 'restart',
  description: string,
  done: string,
): ReturnType<typeof command> {
  return command({
    name,
    args: 'NAME|ID',
    description,
    common: CLIENT_OPTIONS,
    async run(invocation) {
      const { values } = invocation;
      const ref = oneArgument(invocation, 'server name');
      const server = await client(values).mcpServers[name](ref);
      print(
        values.json,
        server,
        () => `${done} MCP server ${server.name}; it is ${server.status.state}.`,
      );
      return 0;
    },
  });
}

const enable = action(
  'enable',
  'Enables a server: it starts, and its tools are served again.',
  'Enabled',
);
const disable = action(
  'disable',
  'Disables a server: it stops, and its tools are not served until it is enabled.',
  'Disabled',
);
const restart = action(
  'restart',
  'Restarts a server (reconnects, for HTTP) with a fresh backoff.',
  'Restarted',
);

const logs = command({
  name: 'logs',
  args: 'NAME|ID',
  description:
    'Prints the last lines of a server’s stderr and of what happened to it (started, connected, crashed…), oldest first. Asks the node that runs it: in a cluster, give that node’s --url.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const log = await client(values).mcpServers.logs(oneArgument(invocation, 'server name'));
    print(values.json, log, () => logText(log));
    return 0;
  },
});

const resources = command({
  name: 'resources',
  args: 'NAME|ID',
  description: 'Lists the resources a running server offers.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const items = await client(values).mcpServers.resources(oneArgument(invocation, 'server name'));
    print(values.json, items, () =>
      formatTable(
        ['URI', 'NAME', 'MIME TYPE', 'DESCRIPTION'],
        items.map((r) => [r.uri, r.title ?? r.name, r.mimeType ?? '-', r.description ?? '-']),
      ),
    );
    return 0;
  },
});

const prompts = command({
  name: 'prompts',
  args: 'NAME|ID',
  description: 'Lists the prompts a running server offers, with their arguments (* required).',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const items = await client(values).mcpServers.prompts(oneArgument(invocation, 'server name'));
    print(values.json, items, () =>
      formatTable(
        ['NAME', 'ARGUMENTS', 'DESCRIPTION'],
        items.map((p) => [
          p.name,
          (p.arguments ?? []).map((a) => `${a.name}${a.required ? '*' : ''}`).join(',') || '-',
          p.description ?? '-',
        ]),
      ),
    );
    return 0;
  },
});

export const group = defineGroup({
  name: 'mcp-servers',
  summary: 'Manage MCP servers: add, follow their state and logs, enable, disable, restart',
  notes:
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
    'Env and header values may refer to secrets as ${secret:NAME}; they are never shown, only their names. Adding, changing, enabling, disabling, restarting and removing need an admin credential.',
  subcommands: [list, get, add, update, remove, enable, disable, restart, logs, resources, prompts],
});
