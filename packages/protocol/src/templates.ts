import Type, { type Static } from 'typebox';
import { Capability, Labels, Timestamp } from './common.ts';
import { MAX_VERSION, STRATEGY_NAMES } from './constants.ts';

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

/** Everything a version of a template defines. */
export const TemplateSpecFields = {
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
