import Type, { type Static } from 'typebox';
import { Capability, Labels, Timestamp } from './common.ts';
import { HOSTED_CAPABILITY, MAX_VERSION, STRATEGY_NAMES, TEMPLATE_KINDS } from './constants.ts';
import { ModelRef } from './providers.ts';

// Templates (`/v1/templates`): reusable task definitions with versions.

/** Dispatch strategies of the shared load-balancing module (ARCHITECTURE.md). */
export const Strategy = Type.Enum([...STRATEGY_NAMES], {
  description: 'How tasks of this template choose an agent (docs/load-balancing.md).',
});
export type Strategy = Static<typeof Strategy>;

export const TemplateName = Type.String({
  pattern: '^(?!tpl_)[a-z0-9][a-z0-9._-]{0,99}$',
  description:
    'Lowercase letters, digits, ".", "_" and "-"; 1 to 100 characters; unique in the tenant; cannot start with "tpl_".',
});

const PATTERNS_NOTE =
  ' Its patterns run on RE2 with ECMAScript meaning; backreferences and lookaround are refused (see the README).';

/** A JSON Schema written by the user; checked as such by the service. */
const UserSchema = (description: string) =>
  Type.Record(Type.String(), Type.Unknown(), { description: description + PATTERNS_NOTE });

export const TemplateKind = Type.Enum([...TEMPLATE_KINDS], {
  description: `\`agent\` (default): your agents run its tasks. \`llm\`: a hosted agent, run by Orchestra's runners from \`llm\` (its tasks need the \`${HOSTED_CAPABILITY}\` capability, which only hosted runners offer).`,
});
export type TemplateKind = Static<typeof TemplateKind>;

/** Limits of one run of a hosted agent; a run that reaches one fails with BUDGET_EXCEEDED. */
export const LlmLimits = Type.Object(
  {
    max_turns: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1000, description: 'Most model calls. Default 10.' }),
    ),
    max_tool_calls: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 10_000, description: 'Most tool calls. Default 50.' }),
    ),
    max_input_tokens: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000_000,
        description: 'Most input tokens over all model calls.',
      }),
    ),
    max_output_tokens: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000_000,
        description: 'Most output tokens over all model calls.',
      }),
    ),
    max_cost_usd: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1_000_000,
        description: 'Most cost in US dollars, from the providers’ price tables.',
      }),
    ),
    max_wall_time_ms: Type.Optional(
      Type.Integer({
        minimum: 1000,
        maximum: 604_800_000,
        description: 'Longest a run may take, from its first step (across restarts).',
      }),
    ),
  },
  { additionalProperties: false },
);
export type LlmLimits = Static<typeof LlmLimits>;

/**
 * What a hosted agent in a session remembers of the session's earlier tasks: each one's
 * user message, tool calls with their results, and answer (one turn each).
 */
export const LlmMemory = Type.Object(
  {
    strategy: Type.Enum(['last_turns', 'token_window', 'summary', 'none'], {
      description:
        '`last_turns` (default): the last `turns` turns. `token_window`: the most recent turns that fit in `max_tokens` (estimated at 4 characters a token), never a tool call without its result. `summary`: the last `turns` turns as they were, and everything before them as a summary a model wrote (journaled as `llm.summary` in the task that made it, and kept up to date turn by turn). `none`: nothing.',
    }),
    turns: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        description: 'last_turns: default 20. summary: the turns kept as they were, default 6.',
      }),
    ),
    summary_model: Type.Optional(ModelRef),
    max_summary_tokens: Type.Optional(
      Type.Integer({
        minimum: 16,
        maximum: 100_000,
        description: 'summary: the longest summary, in tokens. Default 1000.',
      }),
    ),
    max_tokens: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10_000_000,
        description: 'token_window: default 8000.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'In a session, what the agent sees of the session’s earlier tasks. A task whose input is a conversation (`{"messages": …}`) brings its own and gets none.',
  },
);
export type LlmMemory = Static<typeof LlmMemory>;

const PromptText = (description: string) =>
  Type.String({ maxLength: 100_000, pattern: '^[^\\u0000]*$', description });

/** What a hosted agent is: its model, prompt, tools and limits. */
export const LlmSpec = Type.Object(
  {
    model: ModelRef,
    fallbacks: Type.Optional(
      Type.Array(ModelRef, {
        maxItems: 5,
        description:
          'Tried in order when the model fails after its provider’s retries. Default: the provider’s own fallbacks.',
      }),
    ),
    system_prompt: Type.Optional(
      PromptText(
        'The system prompt. `{{input}}` is the task input as JSON, `{{input.a.b}}` a field of it (JSON unless it is a string); an unknown field is empty.',
      ),
    ),
    prompt: Type.Optional(
      PromptText(
        'The user message, with the same placeholders. Default: the input’s `prompt` field when it is a string, else the input as JSON.',
      ),
    ),
    tools: Type.Optional(
      Type.Array(
        Type.String({
          pattern: '^[A-Za-z0-9_.*-]{1,128}$',
          description: 'A tool name; `*` matches any run of characters (`github__*`).',
        }),
        {
          maxItems: 100,
          uniqueItems: true,
          description:
            'The tools the model may call, by name or pattern, from the registry. Policies and approvals apply to every call.',
        },
      ),
    ),
    temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
    top_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    max_tokens: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000,
        description: 'Most output tokens of one model call.',
      }),
    ),
    limits: Type.Optional(LlmLimits),
    memory: Type.Optional(LlmMemory),
  },
  { additionalProperties: false },
);
export type LlmSpec = Static<typeof LlmSpec>;

/** Everything a version of a template defines. */
export const TemplateSpecFields = {
  kind: Type.Optional(TemplateKind),
  llm: Type.Optional(
    Type.Union([LlmSpec, Type.Null()], {
      description: 'For `kind: llm`: the hosted agent. Not allowed for other kinds.',
    }),
  ),
  /** Up to 2000 characters; default empty. */
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  /** Up to 50 `key: value` pairs to find templates by; keys are lowercase `[a-z0-9._/-]`. */
  labels: Type.Optional(Labels),
  /** Capabilities an agent must have to run tasks of this template; no duplicates. */
  capabilities: Type.Optional(
    Type.Array(Capability, {
      maxItems: 50,
      uniqueItems: true,
      description: 'Capabilities an agent must have to run tasks of this template.',
    }),
  ),
  /** JSON Schema (draft-07, or 2020-12 by `$schema`) that task input must match. */
  input_schema: Type.Optional(
    UserSchema('JSON Schema (draft-07, or 2020-12 by $schema) that task input must match.'),
  ),
  /** JSON Schema that task results should match. */
  output_schema: Type.Optional(UserSchema('JSON Schema that task results should match.')),
  /** JSON Schema that `config` must match. */
  config_schema: Type.Optional(UserSchema('JSON Schema that `config` must match.')),
  /** Free configuration handed to agents. */
  config: Type.Optional(
    Type.Record(Type.String(), Type.Unknown(), {
      description: 'Free configuration handed to agents.',
    }),
  ),
  /** 1000 ms to 7 days; default 300000 (5 minutes). */
  default_timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 604_800_000 })),
  /** 1 to 100; default 3. */
  default_max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  /** -1000 to 1000; default 0. */
  default_priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
  /** Default `least_connections`. */
  strategy: Type.Optional(Strategy),
  /**
   * 1 to 10000: how many tasks of this template that share a `concurrency_key` may be
   * assigned or running at once. Null or left out: the server's
   * ORCHESTRA_CONCURRENCY_KEY_LIMIT setting applies.
   */
  concurrency_key_limit: Type.Optional(
    Type.Union([Type.Integer({ minimum: 1, maximum: 10_000 }), Type.Null()], {
      description:
        'How many tasks of this template that share a `concurrency_key` may run at once. Null or absent: the ORCHESTRA_CONCURRENCY_KEY_LIMIT setting.',
    }),
  ),
};

export const CreateTemplate = Type.Object(
  { name: TemplateName, ...TemplateSpecFields },
  { additionalProperties: false },
);
export type CreateTemplate = Static<typeof CreateTemplate>;

/** An update replaces the whole definition; the name stays. */
export const UpdateTemplate = Type.Object(TemplateSpecFields, { additionalProperties: false });
export type UpdateTemplate = Static<typeof UpdateTemplate>;

/** The stored definition, with defaults filled in. */
export interface TemplateSpec {
  /** Versions stored before the field existed lack it: `agent`. */
  kind?: TemplateKind;
  /** For `llm` templates; null (or absent, in older versions) otherwise. */
  llm?: LlmSpec | null;
  description: string;
  labels: Record<string, string>;
  capabilities: string[];
  input_schema: Record<string, unknown> | null;
  output_schema: Record<string, unknown> | null;
  config_schema: Record<string, unknown> | null;
  config: Record<string, unknown>;
  default_timeout_ms: number;
  default_max_attempts: number;
  default_priority: number;
  strategy: Static<typeof Strategy>;
  /** Null: the setting applies. Versions stored before the field existed lack it. */
  concurrency_key_limit: number | null;
}

const NullableSchema = Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]);

export const Template = Type.Object(
  {
    /** `tpl_…`; usable wherever a name is. */
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    /** The version the definition fields come from. */
    version: Type.Integer({ description: 'The version these fields come from.' }),
    /** The version `latest` points to: the newest, unless rolled back. */
    latest_version: Type.Integer({ description: 'The version `latest` points to.' }),
    /** The newest version ever created; the next update creates this + 1. */
    highest_version: Type.Integer({ description: 'The newest version ever created.' }),
    kind: TemplateKind,
    llm: Type.Union([LlmSpec, Type.Null()]),
    description: Type.String(),
    labels: Type.Record(Type.String(), Type.String()),
    capabilities: Type.Array(Type.String()),
    input_schema: NullableSchema,
    output_schema: NullableSchema,
    config_schema: NullableSchema,
    config: Type.Record(Type.String(), Type.Unknown()),
    default_timeout_ms: Type.Integer(),
    default_max_attempts: Type.Integer(),
    default_priority: Type.Integer(),
    strategy: Strategy,
    /** Null: the server's ORCHESTRA_CONCURRENCY_KEY_LIMIT setting applies. */
    concurrency_key_limit: Type.Union([Type.Integer(), Type.Null()], {
      description: 'Null: the ORCHESTRA_CONCURRENCY_KEY_LIMIT setting applies.',
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
    /** When `version` was created. */
    version_created_at: Timestamp,
    /** The credential that created `version`. */
    version_created_by: Type.String(),
  },
  { $id: 'Template' },
);
/** A template at one version, with every default filled in. */
export type Template = Static<typeof Template>;

export const TemplateVersionSummary = Type.Object({
  version: Type.Integer(),
  created_at: Timestamp,
  /** The credential that created the version. */
  created_by: Type.String(),
  /** Whether `latest` points to this version. */
  latest: Type.Boolean({ description: 'Whether `latest` points to this version.' }),
});
export type TemplateVersionSummary = Static<typeof TemplateVersionSummary>;

export const Rollback = Type.Object(
  {
    version: Type.Integer({
      minimum: 1,
      maximum: MAX_VERSION,
      description: 'The version `latest` should point to.',
    }),
  },
  { additionalProperties: false },
);
export type Rollback = Static<typeof Rollback>;

export const TemplateRef = Type.Object({
  template: Type.String({
    minLength: 1,
    maxLength: 120,
    description: 'Template id (`tpl_…`) or name.',
  }),
});
export type TemplateRef = Static<typeof TemplateRef>;
