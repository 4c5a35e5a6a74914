import Type, { type TSchema } from 'typebox';
import { PLATFORM_SETTINGS, type Settings } from './settings.ts';

/**
 * The limits a system admin may set per tenant, by their API name, and the node setting
 * each one overrides. A tenant without an override gets the setting's value.
 */
export const TENANT_LIMITS = {
  task_input_max_bytes: 'taskInputMaxBytes',
  task_output_max_bytes: 'taskOutputMaxBytes',
  task_event_max_bytes: 'taskEventMaxBytes',
  topic_message_max_bytes: 'topicMessageMaxBytes',
  config_value_max_bytes: 'configMaxValueBytes',
  max_concurrency: 'tenantMaxConcurrency',
  max_queued_tasks: 'tenantMaxQueuedTasks',
  max_topics: 'tenantMaxTopics',
  max_config_keys: 'tenantMaxConfigKeys',
  max_templates: 'tenantMaxTemplates',
  max_sessions: 'tenantMaxSessions',
} as const satisfies Record<string, keyof Settings>;

export type TenantLimitName = keyof typeof TENANT_LIMITS;
export const TENANT_LIMIT_NAMES = Object.keys(TENANT_LIMITS) as TenantLimitName[];

/** A tenant's overrides: only the limits set for it. */
export type TenantLimitOverrides = Partial<Record<TenantLimitName, number>>;

/** One limit as it applies to one tenant. */
export interface LimitValue {
  name: TenantLimitName;
  value: number;
  /** True when the value is the tenant's own, false when it is the node's setting. */
  overridden: boolean;
}

/** Where services read the limits that apply to a tenant. */
export interface TenantLimitSource {
  get(tenantId: string, name: TenantLimitName): Promise<LimitValue>;
}

/** The environment variable of the setting a limit overrides. */
export function limitSetting(name: TenantLimitName): string {
  return PLATFORM_SETTINGS[TENANT_LIMITS[name]].env;
}

/** What set a limit's value, for error messages: the tenant's limit or the setting. */
export function limitOrigin(limit: LimitValue): string {
  return limit.overridden ? `the tenant's limit ${limit.name}` : limitSetting(limit.name);
}

/** Error details naming a limit: its API name, its setting, and where the value came from. */
export function limitDetails(limit: LimitValue): Record<string, unknown> {
  return {
    limit: limit.name,
    setting: limitSetting(limit.name),
    source: limit.overridden ? 'tenant' : 'setting',
  };
}

/** The node's settings for every limit. */
export function limitDefaults(settings: Settings): Record<TenantLimitName, number> {
  const out = {} as Record<TenantLimitName, number>;
  for (const name of TENANT_LIMIT_NAMES) out[name] = settings[TENANT_LIMITS[name]];
  return out;
}

/** The values that apply: the overrides over the node's settings. */
export function effectiveLimits(
  defaults: Record<TenantLimitName, number>,
  overrides: TenantLimitOverrides,
): Record<TenantLimitName, number> {
  return { ...defaults, ...overrides };
}

/** The limits of the node's settings only, for tools that run without tenants' overrides. */
export class SettingsLimits implements TenantLimitSource {
  readonly #defaults: Record<TenantLimitName, number>;

  constructor(settings: Settings) {
    this.#defaults = limitDefaults(settings);
  }

  async get(_tenantId: string, name: TenantLimitName): Promise<LimitValue> {
    return { name, value: this.#defaults[name], overridden: false };
  }
}

/**
 * The JSON schema of one override: the bounds of the setting it overrides, or `null` to
 * remove the override.
 */
function overrideSchema(name: TenantLimitName): TSchema {
  const spec = PLATFORM_SETTINGS[TENANT_LIMITS[name]];
  return Type.Union([spec.schema, Type.Null()], {
    description: `Overrides ${spec.env} for this tenant: ${spec.allowed}. \`null\` removes the override. ${spec.description}`,
  });
}

/** The body of a limits change: any of the limits, each a value or `null`. */
export const TenantLimitsPatch = Type.Object(
  Object.fromEntries(TENANT_LIMIT_NAMES.map((n) => [n, Type.Optional(overrideSchema(n))])),
  {
    additionalProperties: false,
    description: 'Limits to set (a number) or remove (`null`); limits not named keep their value.',
  },
);

/** Every limit with its value, in responses. */
export const TenantLimitValues = Type.Object(
  Object.fromEntries(
    TENANT_LIMIT_NAMES.map((n) => [
      n,
      Type.Integer({ description: `${PLATFORM_SETTINGS[TENANT_LIMITS[n]].description}` }),
    ]),
  ),
  {
    description:
      "Every limit as it applies to the tenant: its own value where one is set (`limit_overrides`), else the node's setting.",
  },
);

/** The limits set for a tenant, in responses. */
export const TenantLimitOverridesSchema = Type.Object(
  Object.fromEntries(TENANT_LIMIT_NAMES.map((n) => [n, Type.Optional(Type.Integer())])),
  {
    description:
      "The limits a system admin set for the tenant; the others follow the node's settings.",
  },
);
