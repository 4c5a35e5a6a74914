import Type, { type Static } from 'typebox';
import { NullableTimestamp, Timestamp } from './common.ts';

// The MCP hub (`/v1/mcp/servers`, `/v1/mcp/catalog`): MCP servers Orchestra connects to,
// whose tools join the tool registry.

export const McpServerName = Type.String({
  pattern: '^(?!mcp_)[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$',
  description:
    'Lowercase letters, digits, "-" and single "_"; 1 to 63 characters; unique in the tenant. Its tools are named `<server>__<tool>`.',
});

export const McpServerRef = Type.Object({
  server: Type.String({ maxLength: 64, description: 'The server’s name or id (`mcp_…`).' }),
});

const SecretValue = Type.String({
  maxLength: 8192,
  pattern: '^[^\\u0000]*$',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
  description: 'May refer to secrets as `${secret:NAME}`; resolved when the server starts.',
});

export const McpTransport = Type.Enum(['stdio', 'streamable_http', 'sse'], {
  description:
    '`stdio`: Orchestra runs the command and speaks MCP on its stdin/stdout. `streamable_http`: MCP’s Streamable HTTP at `url`. `sse`: the legacy HTTP+SSE transport at `url`.',
});
export type McpTransport = Static<typeof McpTransport>;

export const McpServerSpecFields = {
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  transport: McpTransport,
  command: Type.Optional(
    Type.String({ minLength: 1, maxLength: 1024, description: 'stdio: the program to run.' }),
  ),
  args: Type.Optional(
    Type.Array(Type.String({ maxLength: 4096, pattern: '^[^\\u0000]*$' }), {
      maxItems: 100,
      description: 'stdio: its arguments.',
    }),
  ),
  cwd: Type.Optional(
    Type.String({
      maxLength: 1024,
      pattern: '^/',
      description:
        'stdio: an absolute working directory. Default: a directory of its own in the data directory. It is the only place the process may write when it runs sandboxed.',
    }),
  ),
  env: Type.Optional(
    Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), SecretValue, {
      maxProperties: 100,
      additionalProperties: false,
      description:
        'stdio: environment variables (nothing else of the server’s environment is passed on but PATH and HOME).',
    }),
  ),
  network: Type.Optional(
    Type.Boolean({
      description: 'stdio, when sandboxed: whether the process may use the network. Default false.',
    }),
  ),
  url: Type.Optional(
    Type.String({
      maxLength: 2048,
      pattern: '^https?://',
      description: 'HTTP transports: the endpoint.',
    }),
  ),
  headers: Type.Optional(
    Type.Record(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$" }), SecretValue, {
      maxProperties: 50,
      additionalProperties: false,
      description: 'HTTP transports: headers sent with every request.',
    }),
  ),
  tool_timeout_ms: Type.Optional(
    Type.Integer({
      minimum: 100,
      maximum: 600_000,
      description: 'Timeout of its tools’ calls; default 30000.',
    }),
  ),
  trust_initial_tools: Type.Optional(
    Type.Boolean({
      description:
        'Default true: the tools it lists when first connected are approved as they are (unless flagged). Tools it adds or changes later are held until an admin approves them.',
    }),
  ),
  enabled: Type.Optional(Type.Boolean({ description: 'Default true.' })),
};

export const CreateMcpServer = Type.Object(
  { name: McpServerName, ...McpServerSpecFields },
  { additionalProperties: false },
);
export type CreateMcpServer = Static<typeof CreateMcpServer>;

export const UpdateMcpServer = Type.Object(McpServerSpecFields, { additionalProperties: false });
export type UpdateMcpServer = Static<typeof UpdateMcpServer>;

export const MCP_SERVER_STATES = ['connecting', 'ready', 'degraded', 'failed', 'disabled'] as const;
export const McpServerState = Type.Enum([...MCP_SERVER_STATES]);
export type McpServerState = Static<typeof McpServerState>;

export const McpServerStatus = Type.Object({
  state: McpServerState,
  reason: Type.Union([Type.String(), Type.Null()]),
  since: Timestamp,
  /** The MCP protocol version agreed with the server. */
  protocol_version: Type.Union([Type.String(), Type.Null()]),
  server_info: Type.Union([
    Type.Object({ name: Type.String(), version: Type.String() }),
    Type.Null(),
  ]),
  /** The node that runs or connects to it. */
  node: Type.Union([Type.String(), Type.Null()]),
  restarts: Type.Integer(),
  sandboxed: Type.Union([Type.Boolean(), Type.Null()]),
  last_health_check: NullableTimestamp,
});
export type McpServerStatus = Static<typeof McpServerStatus>;

export const McpServer = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    description: Type.String(),
    transport: McpTransport,
    command: Type.Union([Type.String(), Type.Null()]),
    args: Type.Array(Type.String()),
    cwd: Type.Union([Type.String(), Type.Null()]),
    /** Names only: values may hold secrets. */
    env_names: Type.Array(Type.String(), {
      description: 'The names of its environment variables; values are never shown.',
    }),
    network: Type.Boolean(),
    url: Type.Union([Type.String(), Type.Null()]),
    header_names: Type.Array(Type.String(), {
      description: 'The names of its headers; values are never shown.',
    }),
    tool_timeout_ms: Type.Integer(),
    trust_initial_tools: Type.Boolean(),
    enabled: Type.Boolean(),
    catalog_entry: Type.Union([Type.String(), Type.Null()]),
    status: McpServerStatus,
    tools: Type.Integer({ description: 'How many of its tools are in the registry.' }),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'McpServer' },
);
export type McpServer = Static<typeof McpServer>;

export const McpServerLog = Type.Object({
  lines: Type.Array(
    Type.Object({ time: Timestamp, stream: Type.Enum(['stderr', 'event']), text: Type.String() }),
  ),
  dropped: Type.Integer({ description: 'Lines dropped from the bounded log before these.' }),
});
export type McpServerLog = Static<typeof McpServerLog>;

export const McpResource = Type.Object({
  uri: Type.String(),
  name: Type.String(),
  title: Type.Optional(Type.String()),
  description: Type.Optional(Type.String()),
  mimeType: Type.Optional(Type.String()),
});
export const McpPrompt = Type.Object({
  name: Type.String(),
  title: Type.Optional(Type.String()),
  description: Type.Optional(Type.String()),
  arguments: Type.Optional(
    Type.Array(
      Type.Object({
        name: Type.String(),
        description: Type.Optional(Type.String()),
        required: Type.Optional(Type.Boolean()),
      }),
    ),
  ),
});

// The catalog.

export const CatalogEntryId = Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' });

export const CatalogEntrySpec = {
  title: Type.String({ minLength: 1, maxLength: 200 }),
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  homepage: Type.Optional(Type.String({ maxLength: 500, pattern: '^https?://' })),
  /** How the server is registered; `{{config.x}}` in strings is replaced by the install's config. */
  server: Type.Object(
    {
      transport: McpTransport,
      package: Type.Optional(
        Type.String({
          maxLength: 214,
          description: 'stdio: the npm package that provides the command.',
        }),
      ),
      bin: Type.Optional(
        Type.String({ maxLength: 214, description: 'stdio: the package’s bin to run.' }),
      ),
      command: Type.Optional(Type.String({ maxLength: 1024 })),
      args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 100 })),
      env: Type.Optional(
        Type.Record(Type.String(), Type.String({ maxLength: 8192 }), { maxProperties: 100 }),
      ),
      network: Type.Optional(Type.Boolean()),
      url: Type.Optional(Type.String({ maxLength: 2048 })),
      headers: Type.Optional(
        Type.Record(Type.String(), Type.String({ maxLength: 8192 }), { maxProperties: 50 }),
      ),
    },
    {
      additionalProperties: false,
      description:
        'The server to register. Strings may hold `{{config.<field>}}`, filled from the install’s config.',
    },
  ),
  config_schema: Type.Optional(
    Type.Record(Type.String(), Type.Unknown(), {
      description: 'JSON Schema of the install’s config.',
    }),
  ),
};

export const CreateCatalogEntry = Type.Object(
  { id: CatalogEntryId, ...CatalogEntrySpec },
  { additionalProperties: false },
);
export type CreateCatalogEntry = Static<typeof CreateCatalogEntry>;

export const CatalogEntry = Type.Object(
  {
    id: Type.String(),
    title: Type.String(),
    description: Type.String(),
    homepage: Type.Union([Type.String(), Type.Null()]),
    server: CreateCatalogEntry.properties.server,
    config_schema: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    /** `builtin`: from Orchestra's catalog file; `tenant`: added by the tenant. */
    origin: Type.Enum(['builtin', 'tenant']),
  },
  { $id: 'McpCatalogEntry' },
);
export type CatalogEntry = Static<typeof CatalogEntry>;

export const CatalogEntryRef = Type.Object({ entry: Type.String({ maxLength: 64 }) });

export const InstallCatalogEntry = Type.Object(
  {
    name: Type.Optional(McpServerName),
    config: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    tool_timeout_ms: McpServerSpecFields.tool_timeout_ms,
    trust_initial_tools: McpServerSpecFields.trust_initial_tools,
  },
  { additionalProperties: false },
);
export type InstallCatalogEntry = Static<typeof InstallCatalogEntry>;

// Views (virtual servers): `/mcp/{view}` serves a chosen set of tools.

export const McpViewName = Type.String({
  pattern: '^[a-z0-9][a-z0-9_-]{0,62}$',
  description:
    'Lowercase letters, digits, "_" and "-"; 1 to 63 characters. Served at `/mcp/{view}`.',
});

export const McpViewRef = Type.Object({ view: Type.String({ maxLength: 64 }) });

export const McpViewTool = Type.Object(
  {
    tool: Type.String({ maxLength: 128, description: 'The tool’s name in the registry.' }),
    name: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.-]{1,128}$',
        description: 'The name the view gives it; default its registry name.',
      }),
    ),
    description: Type.Optional(
      Type.String({
        maxLength: 10_000,
        description: 'Replaces the tool’s description in the view.',
      }),
    ),
    hidden_arguments: Type.Optional(
      Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), {
        maxProperties: 50,
        description:
          'Arguments the view sets itself: removed from the schema clients see, and always sent with these values.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type McpViewTool = Static<typeof McpViewTool>;

export const McpViewSpecFields = {
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  tools: Type.Optional(Type.Array(McpViewTool, { maxItems: 500 })),
  servers: Type.Optional(
    Type.Array(Type.String({ maxLength: 64 }), {
      maxItems: 50,
      uniqueItems: true,
      description:
        'MCP servers whose every served tool the view offers under the server’s own (unprefixed) names, with their resources and prompts.',
    }),
  ),
  tool_exposure: Type.Optional(
    Type.Enum(['all', 'search'], {
      description:
        '`all` (default): tools/list lists every tool. `search`: it lists only `search_tools` and `call_tool`, for catalogues too large for a model’s context.',
    }),
  ),
  instructions: Type.Optional(
    Type.String({
      maxLength: 10_000,
      description: 'Sent to clients as the server’s instructions.',
    }),
  ),
};

export const CreateMcpView = Type.Object(
  { name: McpViewName, ...McpViewSpecFields },
  { additionalProperties: false },
);
export type CreateMcpView = Static<typeof CreateMcpView>;

export const UpdateMcpView = Type.Object(McpViewSpecFields, { additionalProperties: false });
export type UpdateMcpView = Static<typeof UpdateMcpView>;

export const McpView = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    description: Type.String(),
    tools: Type.Array(McpViewTool),
    servers: Type.Array(Type.String()),
    tool_exposure: Type.Enum(['all', 'search']),
    instructions: Type.Union([Type.String(), Type.Null()]),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'McpView' },
);
export type McpView = Static<typeof McpView>;
