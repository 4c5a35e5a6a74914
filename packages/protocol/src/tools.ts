import Type, { type Static } from 'typebox';
import { Capability, Labels, NullableTimestamp, Timestamp } from './common.ts';
import { Role } from './identity.ts';
import { TOOL_APPROVAL_STATUSES, TOOL_CALL_STATUSES, TOOL_STATES } from './states.ts';

export { TOOL_APPROVAL_STATUSES, TOOL_CALL_STATUSES, TOOL_STATES };

// Tools (`/v1/tools`), their policies (`/v1/tool-policies`) and the record of every call
// (`/v1/tool-calls`).

export const ToolName = Type.String({
  pattern: '^(?!tool_)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$',
  description:
    'Letters, digits, "_", "." and "-"; 1 to 128 characters; unique in the tenant. Tools of an MCP server are named `<server>__<tool>`. Cannot start with "tool_".',
});

export const ToolRef = Type.Object({
  tool: Type.String({
    maxLength: 128,
    description: 'The tool’s name or id (`tool_…`).',
  }),
});

/** A JSON Schema written by the user; checked as such by the service. */
const UserSchema = (description: string) =>
  Type.Record(Type.String(), Type.Unknown(), {
    description: `${description} Its patterns run on RE2 with ECMAScript meaning (see the README).`,
  });

/**
 * MCP's tool annotations, with MCP's names and meaning: hints about what a tool does. A tool
 * that is not read-only is destructive unless it says `destructiveHint: false`.
 */
export const ToolAnnotations = Type.Object(
  {
    title: Type.Optional(Type.String({ maxLength: 200 })),
    readOnlyHint: Type.Optional(
      Type.Boolean({ description: 'The tool changes nothing. Default false.' }),
    ),
    destructiveHint: Type.Optional(
      Type.Boolean({
        description:
          'A tool that is not read-only may destroy or overwrite things. Default true, as in MCP.',
      }),
    ),
    idempotentHint: Type.Optional(
      Type.Boolean({
        description:
          'Calling it again with the same arguments has no further effect. Default false.',
      }),
    ),
    openWorldHint: Type.Optional(
      Type.Boolean({
        description: 'It reaches things outside Orchestra (the internet). Default true.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ToolAnnotations = Static<typeof ToolAnnotations>;

export const RetryPolicy = Type.Object(
  {
    max_attempts: Type.Integer({ minimum: 1, maximum: 10, description: 'Attempts in all.' }),
    initial_delay_ms: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 60_000, description: 'Default 200.' }),
    ),
    max_delay_ms: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 300_000, description: 'Default 5000.' }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Retries with exponential backoff and jitter; only for tools that are read-only or idempotent.',
  },
);
export type RetryPolicy = Static<typeof RetryPolicy>;

const HeaderValues = Type.Record(
  Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$" }),
  Type.String({ maxLength: 8192, pattern: '^[^\\u0000-\\u001f\\u007f]*$' }),
  {
    maxProperties: 50,
    additionalProperties: false,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
    description: 'Values may refer to secrets as `${secret:NAME}`; they are resolved at each call.',
  },
);

export const HttpToolSource = Type.Object(
  {
    type: Type.Literal('http'),
    method: Type.Enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
    url: Type.String({
      maxLength: 2048,
      pattern: '^https?://',
      description:
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the secret reference syntax
        'An http(s) URL; `{name}` is replaced by the URL-encoded argument `name` (which then is not sent again). `${secret:NAME}` refers to a secret.',
    }),
    headers: Type.Optional(HeaderValues),
    body: Type.Optional(
      Type.Enum(['arguments', 'none'], {
        description:
          '`arguments` (default for POST, PUT and PATCH): the arguments not used in the URL, as a JSON body. `none`: they go into the query string (default for GET and DELETE).',
      }),
    ),
    result_pointer: Type.Optional(
      Type.String({
        maxLength: 500,
        pattern: '^(/.*)?$',
        description: 'A JSON Pointer into a JSON response: the part that becomes the result.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type HttpToolSource = Static<typeof HttpToolSource>;

export const McpToolSource = Type.Object(
  {
    type: Type.Literal('mcp'),
    server: Type.String({ description: 'The MCP server’s name.' }),
    tool: Type.String({ description: 'The tool’s name on that server.' }),
  },
  { additionalProperties: false },
);
export type McpToolSource = Static<typeof McpToolSource>;

export const AgentToolSource = Type.Object(
  {
    type: Type.Literal('agent'),
    template: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 120,
        description: 'The template of the task (id or name).',
      }),
    ),
    capabilities: Type.Optional(
      Type.Array(Capability, {
        minItems: 1,
        maxItems: 50,
        uniqueItems: true,
        description: 'Capabilities the agent that serves the call must have.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'A capability served by connected agents: each call becomes a task (input: the arguments) dispatched through the pool, so leases, cancellation and failover apply. Its output is the result. Give a template, capabilities, or both.',
  },
);
export type AgentToolSource = Static<typeof AgentToolSource>;

/**
 * A tool an agent serves, declared in its `register` frame: it becomes the agent tool
 * `name`, whose calls are tasks with the capability `tool:<name>` (added to the agent's).
 */
export const DeclaredTool = Type.Object(
  {
    name: Type.String({
      pattern: '^[a-z0-9][a-z0-9_.-]{0,94}$',
      description: 'Lowercase letters, digits, "_", "." and "-"; 1 to 95 characters.',
    }),
    description: Type.Optional(Type.String({ maxLength: 10_000 })),
    input_schema: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    output_schema: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    annotations: Type.Optional(ToolAnnotations),
    timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 600_000 })),
  },
  { additionalProperties: false },
);
export type DeclaredTool = Static<typeof DeclaredTool>;

/** What a built-in workspace tool does in the instance of the task it is called for. */
export const WORKSPACE_TOOL_OPERATIONS = [
  'read_file',
  'write_file',
  'list_files',
  'search',
  'exec',
  'terminal',
  'checkpoint',
] as const;

export const WorkspaceToolSource = Type.Object(
  {
    type: Type.Literal('workspace'),
    operation: Type.Enum([...WORKSPACE_TOOL_OPERATIONS]),
  },
  {
    additionalProperties: false,
    description:
      'A built-in tool (`workspace.<operation>`) that works in the instance of the task it is called for: only for tasks submitted with an `instance`. Not created, changed or deleted by users.',
  },
);
export type WorkspaceToolSource = Static<typeof WorkspaceToolSource>;

/**
 * Where a tool's calls go. MCP tools are registered by their server, never by hand; the
 * workspace tools are built in.
 */
export const ToolSource = Type.Union([
  HttpToolSource,
  McpToolSource,
  AgentToolSource,
  WorkspaceToolSource,
]);
export type ToolSource = Static<typeof ToolSource>;

/** Everything a version of a tool defines. */
export const ToolSpecFields = {
  description: Type.Optional(Type.String({ maxLength: 10_000 })),
  input_schema: Type.Optional(
    UserSchema('JSON Schema the arguments must match; default: any object.'),
  ),
  output_schema: Type.Optional(UserSchema('JSON Schema of `structured_content`.')),
  annotations: Type.Optional(ToolAnnotations),
  labels: Type.Optional(Labels),
  timeout_ms: Type.Optional(
    Type.Integer({ minimum: 100, maximum: 600_000, description: 'Per attempt; default 30000.' }),
  ),
  retry: Type.Optional(Type.Union([RetryPolicy, Type.Null()])),
};

export const CreateTool = Type.Object(
  { name: ToolName, ...ToolSpecFields, source: Type.Union([HttpToolSource, AgentToolSource]) },
  { additionalProperties: false },
);
export type CreateTool = Static<typeof CreateTool>;

export const UpdateTool = Type.Object(
  { ...ToolSpecFields, source: Type.Union([HttpToolSource, AgentToolSource]) },
  { additionalProperties: false },
);
export type UpdateTool = Static<typeof UpdateTool>;

export const ToolState = Type.Enum([...TOOL_STATES], {
  description:
    '`active`: served. `held`: its server changed or added it; not served until approved. `unavailable`: its server no longer lists it. `disabled`: its server is disabled.',
});
export type ToolState = Static<typeof ToolState>;

const NullableSchema = Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]);

/** A definition an MCP server changed or added, waiting for an admin's approval. */
export const PendingDefinition = Type.Object({
  hash: Type.String(),
  detected_at: Timestamp,
  description: Type.String(),
  input_schema: Type.Record(Type.String(), Type.Unknown()),
  output_schema: NullableSchema,
  annotations: ToolAnnotations,
  /** What changed, one line a field, against the pinned definition (empty for a new tool). */
  diff: Type.Array(Type.String()),
  flags: Type.Array(Type.String()),
});
export type PendingDefinition = Static<typeof PendingDefinition>;

export const Tool = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    version: Type.Integer({ description: 'The version these fields come from.' }),
    latest_version: Type.Integer(),
    description: Type.String(),
    input_schema: Type.Record(Type.String(), Type.Unknown()),
    output_schema: NullableSchema,
    annotations: ToolAnnotations,
    /** Destructive by MCP's defaults: not read-only and not `destructiveHint: false`. */
    destructive: Type.Boolean({
      description:
        'Not read-only and not `destructiveHint: false`: callable only with an explicit allow.',
    }),
    labels: Type.Record(Type.String(), Type.String()),
    timeout_ms: Type.Integer(),
    retry: Type.Union([RetryPolicy, Type.Null()]),
    source: ToolSource,
    state: ToolState,
    /** Why the description looks like it instructs the model, if it does. */
    flags: Type.Array(Type.String(), {
      description: 'Why the description looks like it tries to instruct the model; empty if not.',
    }),
    /** SHA-256 of the approved name, description and schemas. */
    pinned_hash: Type.Union([Type.String(), Type.Null()]),
    pending: Type.Union([PendingDefinition, Type.Null()]),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'Tool' },
);
export type Tool = Static<typeof Tool>;

export const ToolVersionSummary = Type.Object({
  version: Type.Integer(),
  hash: Type.String(),
  created_at: Timestamp,
  created_by: Type.String(),
  latest: Type.Boolean(),
});
export type ToolVersionSummary = Static<typeof ToolVersionSummary>;

export const ApproveToolDefinition = Type.Object(
  {
    hash: Type.String({
      maxLength: 64,
      description:
        'The `pending.hash` you reviewed: refused (409) if the server changed it again since.',
    }),
  },
  { additionalProperties: false },
);
export type ApproveToolDefinition = Static<typeof ApproveToolDefinition>;

// Results, in MCP's content format.

export const TextContent = Type.Object({
  type: Type.Literal('text'),
  text: Type.String(),
});
export const ImageContent = Type.Object({
  type: Type.Literal('image'),
  data: Type.String({ description: 'Base64.' }),
  mimeType: Type.String(),
});
export const AudioContent = Type.Object({
  type: Type.Literal('audio'),
  data: Type.String({ description: 'Base64.' }),
  mimeType: Type.String(),
});
export const ResourceLinkContent = Type.Object({
  type: Type.Literal('resource_link'),
  uri: Type.String(),
  name: Type.String(),
  description: Type.Optional(Type.String()),
  mimeType: Type.Optional(Type.String()),
});
export const EmbeddedResourceContent = Type.Object({
  type: Type.Literal('resource'),
  resource: Type.Record(Type.String(), Type.Unknown()),
});
export const ContentItem = Type.Union([
  TextContent,
  ImageContent,
  AudioContent,
  ResourceLinkContent,
  EmbeddedResourceContent,
]);
export type ContentItem = Static<typeof ContentItem>;

export const ToolResult = Type.Object({
  content: Type.Array(ContentItem),
  structured_content: Type.Optional(Type.Unknown()),
  /** True when the tool ran and reports a failure (a tool-level error, not a refused call). */
  is_error: Type.Boolean({
    description: 'The tool ran and reports a failure (MCP’s `isError`).',
  }),
});
export type ToolResult = Static<typeof ToolResult>;

export const InvokeTool = Type.Object(
  {
    arguments: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'Default {}.' }),
    ),
    session_id: Type.Optional(
      Type.String({ maxLength: 64, description: 'The session the call is made for, if any.' }),
    ),
    wait_ms: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 300_000,
        description:
          'For a call that needs an approval: how long to wait for the decision before answering 202 with the call awaiting it. Default 0.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type InvokeTool = Static<typeof InvokeTool>;

export const ToolCallStatus = Type.Enum([...TOOL_CALL_STATUSES], {
  description:
    '`awaiting_approval`: a policy requires an approval, not given yet. `running`: approved, at its source. `succeeded`: the tool answered (its result may still be a tool-level error, `is_error`). `failed`: the call did not complete (timeout, upstream down, breaker open). `denied`: the policy or validation refused it. `rejected`: an operator rejected it. `expired`: nobody decided before its deadline.',
});
export type ToolCallStatus = Static<typeof ToolCallStatus>;

export const ToolCaller = Type.Object({
  credential: Type.String({ description: 'The API key id, or `jwt:<tenant>:<subject>`.' }),
  role: Role,
  agent_id: Type.Union([Type.String(), Type.Null()]),
  task_id: Type.Union([Type.String(), Type.Null()]),
  session_id: Type.Union([Type.String(), Type.Null()]),
});
export type ToolCaller = Static<typeof ToolCaller>;

/** The audit record of one call. */
export const ToolCall = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    tool: Type.String(),
    tool_id: Type.String(),
    tool_version: Type.Integer(),
    source: Type.String({ description: '`http`, `mcp` or `agent`.' }),
    upstream: Type.String({
      description: 'The MCP server’s name, the HTTP host, or `agents` for an agent tool.',
    }),
    caller: ToolCaller,
    arguments: Type.Unknown({
      description: 'As called, with secrets redacted and values over 1 KiB truncated.',
    }),
    status: ToolCallStatus,
    is_error: Type.Boolean(),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
    attempts: Type.Integer(),
    duration_ms: Type.Union([Type.Integer(), Type.Null()]),
    result_bytes: Type.Union([Type.Integer(), Type.Null()]),
    approval_id: Type.Union([Type.String(), Type.Null()], {
      description: 'The approval the call waited for, if a policy required one.',
    }),
    created_at: Timestamp,
    finished_at: NullableTimestamp,
  },
  { $id: 'ToolCall' },
);
export type ToolCall = Static<typeof ToolCall>;

/** `POST /v1/tools/{tool}/invoke`: the call's record and, once it ran, its result. */
export const ToolInvocation = Type.Object({
  call: Type.Ref('ToolCall'),
  result: Type.Union([ToolResult, Type.Null()], {
    description: 'Null while the call awaits an approval (202), or when it was not run.',
  }),
});
export type ToolInvocation = { call: ToolCall; result: ToolResult | null };

// Approvals.

export const ToolApprovalStatus = Type.Enum([...TOOL_APPROVAL_STATUSES]);
export type ToolApprovalStatus = Static<typeof ToolApprovalStatus>;

/** A call that waits for an operator's decision. */
export const ToolApproval = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    call_id: Type.String(),
    tool: Type.String(),
    tool_version: Type.Integer(),
    policy: Type.String({ description: 'The policy that requires the approval.' }),
    caller: ToolCaller,
    arguments: Type.Unknown({ description: 'The exact arguments the call will run with.' }),
    arguments_hash: Type.String({
      description:
        'SHA-256 of the arguments (canonical JSON): an approval names it, so it is bound to them.',
    }),
    status: ToolApprovalStatus,
    deadline: Timestamp,
    decided_by: Type.Union([Type.String(), Type.Null()]),
    decided_at: NullableTimestamp,
    reason: Type.Union([Type.String(), Type.Null()]),
    created_at: Timestamp,
  },
  { $id: 'ToolApproval' },
);
export type ToolApproval = Static<typeof ToolApproval>;

export const ToolApprovalRef = Type.Object({
  approval: Type.String({ maxLength: 64, description: 'The approval’s id (`apr_…`).' }),
});

export const ApproveToolCall = Type.Object(
  {
    arguments_hash: Type.String({
      maxLength: 64,
      description: 'The `arguments_hash` of the arguments you reviewed.',
    }),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
export type ApproveToolCall = Static<typeof ApproveToolCall>;

export const RejectToolCall = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 1000 })) },
  { additionalProperties: false },
);
export type RejectToolCall = Static<typeof RejectToolCall>;

/** What deciding an approval did: the approval, the call's record, and its result once run. */
export const ToolApprovalDecision = Type.Object({
  approval: Type.Ref('ToolApproval'),
  call: Type.Ref('ToolCall'),
  result: Type.Union([ToolResult, Type.Null()]),
});
export type ToolApprovalDecision = {
  approval: ToolApproval;
  call: ToolCall;
  result: ToolResult | null;
};

export const ToolCallRef = Type.Object({
  call: Type.String({ maxLength: 64, description: 'The call’s id (`tc_…`).' }),
});

// Policies.

export const ToolPattern = Type.String({
  pattern: '^[A-Za-z0-9_.*-]{1,128}$',
  description: 'A tool name; `*` matches any run of characters (`github__*`).',
});

export const PolicyMatch = Type.Object(
  {
    roles: Type.Optional(Type.Array(Role, { maxItems: 4, uniqueItems: true })),
    api_keys: Type.Optional(
      Type.Array(Type.String({ maxLength: 64 }), {
        maxItems: 100,
        uniqueItems: true,
        description: 'API key ids (`key_…`).',
      }),
    ),
    agents: Type.Optional(
      Type.Array(Type.String({ maxLength: 128 }), { maxItems: 100, uniqueItems: true }),
    ),
    templates: Type.Optional(
      Type.Array(Type.String({ maxLength: 100 }), {
        maxItems: 100,
        uniqueItems: true,
        description: 'Template names: calls made by an agent for a task of one of them.',
      }),
    ),
    session_labels: Type.Optional(Labels),
  },
  {
    additionalProperties: false,
    description: 'Who the policy is about; every field given must match. Empty: everyone.',
  },
);
export type PolicyMatch = Static<typeof PolicyMatch>;

export const PolicyName = Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,99}$' });

export const ToolPolicySpecFields = {
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  effect: Type.Enum(['allow', 'deny']),
  tools: Type.Array(ToolPattern, { minItems: 1, maxItems: 100, uniqueItems: true }),
  match: Type.Optional(PolicyMatch),
  arguments_schema: Type.Optional(
    UserSchema(
      'Allow policies only: a JSON Schema the arguments must also match (a path prefix, an allow-list of hosts).',
    ),
  ),
  rate_limit: Type.Optional(
    Type.Object(
      {
        requests: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
        per_seconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
      },
      {
        additionalProperties: false,
        description: 'Allow policies only: calls per window, per caller and tool.',
      },
    ),
  ),
  max_concurrency: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 10_000,
      description:
        'Allow policies only: calls of one tool under this policy running at once on a node.',
    }),
  ),
  approval: Type.Optional(
    Type.Enum(['none', 'required'], {
      description:
        'Allow policies only: `required` makes each call it allows wait for an operator’s approval (bound to the exact arguments) before it runs. Default `none`.',
    }),
  ),
  approval_timeout_ms: Type.Optional(
    Type.Integer({
      minimum: 1000,
      maximum: 7 * 24 * 3_600_000,
      description:
        'How long a call waits for an approval before it expires. Default 3600000 (1 hour).',
    }),
  ),
  enabled: Type.Optional(Type.Boolean({ description: 'Default true.' })),
};

export const CreateToolPolicy = Type.Object(
  { name: PolicyName, ...ToolPolicySpecFields },
  { additionalProperties: false },
);
export type CreateToolPolicy = Static<typeof CreateToolPolicy>;

export const UpdateToolPolicy = Type.Object(ToolPolicySpecFields, {
  additionalProperties: false,
});
export type UpdateToolPolicy = Static<typeof UpdateToolPolicy>;

export const ToolPolicy = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    description: Type.String(),
    effect: Type.Enum(['allow', 'deny']),
    tools: Type.Array(Type.String()),
    match: PolicyMatch,
    arguments_schema: NullableSchema,
    rate_limit: Type.Union([
      Type.Object({ requests: Type.Integer(), per_seconds: Type.Integer() }),
      Type.Null(),
    ]),
    max_concurrency: Type.Union([Type.Integer(), Type.Null()]),
    approval: Type.Enum(['none', 'required']),
    approval_timeout_ms: Type.Integer(),
    enabled: Type.Boolean(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { $id: 'ToolPolicy' },
);
export type ToolPolicy = Static<typeof ToolPolicy>;

export const PolicyRef = Type.Object({
  policy: Type.String({ maxLength: 100, description: 'The policy’s name or id (`tpol_…`).' }),
});
