import type { CreateCatalogEntryInput, InstallCatalogEntryInput } from '@orchestra/sdk';
import {
  CLIENT_OPTIONS,
  client,
  JSON_FILE_OPTION,
  noArguments,
  oneArgument,
  print,
  readJsonObject,
  UsageError,
} from '../common.ts';
import { CATALOG_HEADER, catalogRow } from '../mcp-format.ts';
import { reportStarted, WAIT_OPTION, waitLimit } from '../mcp-wait.ts';
import { command, group as defineGroup } from '../spec.ts';
import { formatTable } from '../table.ts';

/** The install's config: --config '<json>' or --config-file FILE, not both. */
function installConfig(values: {
  config?: string | undefined;
  'config-file'?: string | undefined;
}): Record<string, unknown> | undefined {
  const { config, 'config-file': file } = values;
  if (config !== undefined && file !== undefined) {
    throw new UsageError('use either --config or --config-file, not both');
  }
  if (file !== undefined) return readJsonObject(file, '{"root": "/srv/shared"}');
  if (config === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(config);
  } catch (err) {
    throw new UsageError(`--config is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`--config must be a JSON object, such as '{"root": "/srv/shared"}'`);
  }
  return parsed as Record<string, unknown>;
}

const list = command({
  name: 'ls',
  aliases: ['list'],
  description:
    'Lists the installable MCP servers: Orchestra’s built-in entries, then your tenant’s.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const entries = await client(values).mcpCatalog.list();
    print(values.json, entries, () => formatTable(CATALOG_HEADER, entries.map(catalogRow)));
    return 0;
  },
});

const install = command({
  name: 'install',
  args: 'ENTRY',
  description: [
    'Registers an MCP server from a catalog entry, named after the entry unless --name is given. The config is checked against the entry’s config schema (see "mcp-catalog ls --json"). Example:',
    `  orchestra mcp-catalog install filesystem --name fs --config '{"root": "/srv/shared"}' --wait`,
  ].join('\n'),
  options: {
    name: { type: 'string', value: 'NAME', description: 'The server’s name' },
    config: { type: 'string', value: 'JSON', description: 'The entry’s config, a JSON object' },
    'config-file': {
      type: 'string',
      value: 'FILE',
      description: 'Read the config from a JSON file (- reads standard input)',
    },
    ...WAIT_OPTION,
  },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const entry = oneArgument(invocation, 'catalog entry');
    const config = installConfig(values);
    const limit = waitLimit(values.wait);
    const input: InstallCatalogEntryInput = {
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(config !== undefined ? { config } : {}),
    };
    const api = client(values);
    const server = await api.mcpCatalog.install(entry, input);
    return reportStarted(
      api,
      values.json,
      server,
      `Installed ${entry} as MCP server ${server.name} (${server.id})`,
      limit,
    );
  },
});

const create = command({
  name: 'create',
  description:
    'Adds an entry to your tenant’s catalog from a JSON file: "id", "title", "server" (transport, command or package and bin, args, env, url, headers; strings may hold {{config.FIELD}}), and description, homepage, config_schema.',
  options: { file: JSON_FILE_OPTION },
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    noArguments(invocation);
    const document = readJsonObject(
      values.file,
      '{"id": "notes", "title": "Notes", "server": {"transport": "stdio", …}}',
    );
    const entry = await client(values).mcpCatalog.create(document as CreateCatalogEntryInput);
    print(values.json, entry, () => `Added catalog entry ${entry.id}.`);
    return 0;
  },
});

const remove = command({
  name: 'rm',
  aliases: ['delete'],
  args: 'ENTRY',
  description: 'Removes an entry of your tenant’s catalog; servers installed from it stay.',
  common: CLIENT_OPTIONS,
  async run(invocation) {
    const { values } = invocation;
    const entry = oneArgument(invocation, 'catalog entry');
    await client(values).mcpCatalog.delete(entry);
    print(values.json, { deleted: entry }, () => `Removed catalog entry ${entry}.`);
    return 0;
  },
});

export const group = defineGroup({
  name: 'mcp-catalog',
  summary: 'The catalog of installable MCP servers: list, install, add your own',
  notes: 'Installing, adding and removing entries need an admin credential.',
  subcommands: [list, install, create, remove],
});
