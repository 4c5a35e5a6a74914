import Type, { type Static, type TInteger, type TNull, type TOptional, type TUnion } from 'typebox';
import { NullableTimestamp, Timestamp } from './common.ts';
import { ROLES } from './constants.ts';

// Identity (`/v1/tenants`, `/v1/api-keys`, `/v1/whoami`): tenants, their limits, API keys.

/** Roles a credential can hold. `agent` is for agent processes; it reads and writes nothing else. */
export const Role = Type.Enum([...ROLES]);
export type Role = Static<typeof Role>;

/**
 * The limits a system admin may set per tenant, by their API name: each overrides, for that
 * tenant, the node setting `env` (the same bounds and meaning; a server test holds the two in
 * step). The `*_max_bytes` ones bound one stored value (as JSON text; larger ones get 413
 * `VALUE_TOO_LARGE`), the `max_*` ones how many of a kind the tenant may hold (one more gets
 * 409 `TENANT_LIMIT_REACHED`; 0 means no limit), and `max_concurrency` how many of its tasks
 * run at once.
 */
export const TENANT_LIMITS = {
  task_input_max_bytes: {
    env: 'ORCHESTRA_TASK_INPUT_MAX_BYTES',
    minimum: 1024,
    maximum: 104_857_600,
    allowed: 'an integer from 1024 to 104857600',
    description: 'Largest task `input`, as JSON text; a larger one gets 413 VALUE_TOO_LARGE.',
  },
  task_output_max_bytes: {
    env: 'ORCHESTRA_TASK_OUTPUT_MAX_BYTES',
    minimum: 1024,
    maximum: 104_857_600,
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest task `result` (or `error`) an agent may report, as JSON text; a larger one is refused with VALUE_TOO_LARGE and nothing is stored.',
  },
  task_event_max_bytes: {
    env: 'ORCHESTRA_TASK_EVENT_MAX_BYTES',
    minimum: 1024,
    maximum: 104_857_600,
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest task event an agent may report (its `event` object, as JSON text); a larger one is refused with VALUE_TOO_LARGE and not stored.',
  },
  topic_message_max_bytes: {
    env: 'ORCHESTRA_TOPIC_MESSAGE_MAX_BYTES',
    minimum: 1024,
    maximum: 104_857_600,
    allowed: 'an integer from 1024 to 104857600',
    description:
      'Largest `data` of one topic message, as JSON text (REST or WebSocket); a larger one is refused with VALUE_TOO_LARGE and nothing is stored.',
  },
  config_value_max_bytes: {
    env: 'ORCHESTRA_CONFIG_MAX_VALUE_BYTES',
    minimum: 1024,
    maximum: 1_048_576,
    allowed: 'an integer from 1024 to 1048576',
    description: 'Largest config value, as JSON text.',
  },
  max_concurrency: {
    env: 'ORCHESTRA_TENANT_MAX_CONCURRENCY',
    minimum: 0,
    maximum: 10_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description: 'Most tasks of one tenant assigned or running at once, across all its agents.',
  },
  max_queued_tasks: {
    env: 'ORCHESTRA_TENANT_MAX_QUEUED_TASKS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most tasks of one tenant waiting in `queued`; submitting one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_topics: {
    env: 'ORCHESTRA_TENANT_MAX_TOPICS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most realtime topics one tenant may hold; the publish that would create one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_config_keys: {
    env: 'ORCHESTRA_TENANT_MAX_CONFIG_KEYS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most config keys one tenant may hold, all environments together; the put that would create one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_templates: {
    env: 'ORCHESTRA_TENANT_MAX_TEMPLATES',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most templates one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_secrets: {
    env: 'ORCHESTRA_TENANT_MAX_SECRETS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most named secrets one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_sessions: {
    env: 'ORCHESTRA_TENANT_MAX_SESSIONS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most sessions one tenant may hold; creating one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  monthly_tokens: {
    env: 'ORCHESTRA_TENANT_MONTHLY_TOKENS',
    minimum: 0,
    maximum: 1_000_000_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most model tokens (input and output) one tenant’s hosted agents may use in a UTC calendar month; a run that would pass it ends with `BUDGET_EXCEEDED`.',
  },
  monthly_cost_cents: {
    env: 'ORCHESTRA_TENANT_MONTHLY_COST_CENTS',
    minimum: 0,
    maximum: 100_000_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most cost, in US cents from the providers’ price tables, of one tenant’s hosted agents’ model calls in a UTC calendar month; a run that would pass it ends with `BUDGET_EXCEEDED`.',
  },
  max_instances: {
    env: 'ORCHESTRA_TENANT_MAX_INSTANCES',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most workspace instances one tenant may hold, in any state; creating one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_running_instances: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_INSTANCES',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most workspace instances of one tenant running (or being created or started) at once; creating or starting one more is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_running_cpus: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_CPUS',
    minimum: 0,
    maximum: 1_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most CPUs (the sum of their templates’ `resources.cpus`) of one tenant’s running workspace instances; a create or start that would pass it is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_running_memory_bytes: {
    env: 'ORCHESTRA_TENANT_MAX_RUNNING_MEMORY_BYTES',
    minimum: 0,
    maximum: 1_099_511_627_776_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most memory (the sum of their `resources.memory_bytes`) of one tenant’s running workspace instances; a create or start that would pass it is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_storage_bytes: {
    env: 'ORCHESTRA_TENANT_MAX_STORAGE_BYTES',
    minimum: 0,
    maximum: 1_099_511_627_776_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most storage (the sum of their `resources.storage_bytes`) of all one tenant’s workspace instances; a create that would pass it is refused with `TENANT_LIMIT_REACHED`.',
  },
  max_terminals: {
    env: 'ORCHESTRA_TENANT_MAX_TERMINALS',
    minimum: 0,
    maximum: 100_000_000,
    allowed: 'an integer >= 0 (0: no limit)',
    description:
      'Most terminals of one tenant running at once, all instances together; opening one more is refused with `TENANT_LIMIT_REACHED`.',
  },
} as const satisfies Record<
  string,
  { env: string; minimum: number; maximum: number; allowed: string; description: string }
>;

export type TenantLimitName = keyof typeof TENANT_LIMITS;
export const TENANT_LIMIT_NAMES = Object.keys(TENANT_LIMITS) as TenantLimitName[];

/** Every limit as it applies to a tenant. */
export type TenantLimits = Record<TenantLimitName, number>;

/**
 * The JSON schema of one override: the bounds of the setting it overrides, or `null` to
 * remove the override.
 */
function overrideSchema(name: TenantLimitName): TUnion<[TInteger, TNull]> {
  const limit = TENANT_LIMITS[name];
  return Type.Union(
    [Type.Integer({ minimum: limit.minimum, maximum: limit.maximum }), Type.Null()],
    {
      description: `Overrides ${limit.env} for this tenant: ${limit.allowed}. \`null\` removes the override. ${limit.description}`,
    },
  );
}

/** The body of a limits change: any of the limits, each a value or `null`. */
export const TenantLimitsPatch = Type.Object(
  Object.fromEntries(
    TENANT_LIMIT_NAMES.map((n) => [n, Type.Optional(overrideSchema(n))]),
  ) as Record<TenantLimitName, TOptional<TUnion<[TInteger, TNull]>>>,
  {
    additionalProperties: false,
    description: 'Limits to set (a number) or remove (`null`); limits not named keep their value.',
  },
);

/** Every limit with its value, in responses. */
export const TenantLimitValues = Type.Object(
  Object.fromEntries(
    TENANT_LIMIT_NAMES.map((n) => [n, Type.Integer({ description: TENANT_LIMITS[n].description })]),
  ) as Record<TenantLimitName, TInteger>,
  {
    description:
      "Every limit as it applies to the tenant: its own value where one is set (`limit_overrides`), else the node's setting.",
  },
);

/** The limits set for a tenant, in responses. */
export const TenantLimitOverridesSchema = Type.Object(
  Object.fromEntries(TENANT_LIMIT_NAMES.map((n) => [n, Type.Optional(Type.Integer())])) as Record<
    TenantLimitName,
    TOptional<TInteger>
  >,
  {
    description:
      "The limits a system admin set for the tenant; the others follow the node's settings.",
  },
);

export const TenantId = Type.String({
  pattern: '^[a-z0-9][a-z0-9-]{1,62}$',
  description: 'Lowercase letters, digits and dashes; 2 to 63 characters.',
});

export const Tenant = Type.Object(
  {
    id: TenantId,
    name: Type.String(),
    kind: Type.Enum(['system', 'standard'], {
      description: '`system` is the tenant created at first start; its admins manage all tenants.',
    }),
    created_at: Timestamp,
    /** Every limit as it applies to this tenant: its own where set, else the node's setting. */
    limits: TenantLimitValues,
    /** The limits set for this tenant. */
    limit_overrides: TenantLimitOverridesSchema,
  },
  { $id: 'Tenant' },
);
export type Tenant = Static<typeof Tenant>;

export const ApiKey = Type.Object(
  {
    id: Type.String(),
    tenant_id: Type.String(),
    name: Type.String(),
    role: Role,
    prefix: Type.String({ description: 'First characters of the secret, to tell keys apart.' }),
    status: Type.Enum(['active', 'revoked', 'expired']),
    created_at: Timestamp,
    created_by: Type.Union([Type.String(), Type.Null()]),
    expires_at: NullableTimestamp,
    revoked_at: NullableTimestamp,
    last_used_at: Type.Union([Timestamp, Type.Null()], {
      description: 'When the key last authenticated a request, to within a minute.',
    }),
  },
  { $id: 'ApiKey' },
);
export type ApiKey = Static<typeof ApiKey>;

export const ApiKeyWithSecret = Type.Object(
  {
    ...ApiKey.properties,
    secret: Type.String({ description: 'The key itself. Shown only in this response.' }),
  },
  { $id: 'ApiKeyWithSecret' },
);
export type ApiKeyWithSecret = Static<typeof ApiKeyWithSecret>;

/** Printable text: names end up in terminals and logs, where control characters misbehave. */
const DisplayName = (maxLength: number) =>
  Type.String({ minLength: 1, maxLength, pattern: '^[^\\u0000-\\u001f\\u007f]*$' });

export const CreateApiKey = Type.Object(
  {
    name: DisplayName(100),
    role: Role,
    /** ISO-8601 date-time in the future, or a Date. Omit for a key that never expires. */
    expires_at: Type.Optional(
      Type.String({ format: 'date-time', description: 'When the key stops working. Omit: never.' }),
    ),
  },
  { additionalProperties: false },
);
export type CreateApiKey = Static<typeof CreateApiKey>;

export const CreateTenant = Type.Object(
  {
    /** Lowercase letters, digits and dashes; 2 to 63 characters. */
    id: TenantId,
    name: Type.Optional(DisplayName(200)),
  },
  { additionalProperties: false },
);
export type CreateTenant = Static<typeof CreateTenant>;

export const UpdateTenant = Type.Object(
  {
    name: Type.Optional(DisplayName(200)),
    limits: Type.Optional(TenantLimitsPatch),
  },
  { additionalProperties: false },
);
export type UpdateTenant = Static<typeof UpdateTenant>;

export const CreatedTenant = Type.Object({
  tenant: Type.Ref('Tenant'),
  admin_key: Type.Ref('ApiKeyWithSecret'),
});

/** A newly created tenant and its first admin key. */
export type CreatedTenant = Static<
  typeof CreatedTenant,
  { Tenant: typeof Tenant; ApiKeyWithSecret: typeof ApiKeyWithSecret }
>;

export const WhoAmI = Type.Object({
  tenant: Type.Object({ id: Type.String(), name: Type.String(), kind: Type.String() }),
  role: Role,
  credential: Type.Union([
    Type.Object({
      type: Type.Literal('api_key'),
      id: Type.String(),
      name: Type.String(),
      prefix: Type.String(),
      expires_at: NullableTimestamp,
    }),
    Type.Object({
      type: Type.Literal('jwt'),
      subject: Type.String(),
      issuer: Type.Union([Type.String(), Type.Null()]),
      expires_at: NullableTimestamp,
    }),
  ]),
});
export type WhoAmI = Static<typeof WhoAmI>;
