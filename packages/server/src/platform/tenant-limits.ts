import { TENANT_LIMIT_NAMES, type TenantLimitName } from '@orchestra/protocol';
import { PLATFORM_SETTINGS, type Settings } from './settings.ts';

/**
 * The node setting each tenant limit (`TENANT_LIMITS` of @orchestra/protocol, the API's
 * names and bounds) overrides. A tenant without an override gets the setting's value.
 */
export const TENANT_LIMIT_SETTINGS = {
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
  max_secrets: 'tenantMaxSecrets',
  max_sessions: 'tenantMaxSessions',
  monthly_tokens: 'tenantMonthlyTokens',
  monthly_cost_cents: 'tenantMonthlyCostCents',
  max_instances: 'tenantMaxInstances',
  max_running_instances: 'tenantMaxRunningInstances',
  max_running_cpus: 'tenantMaxRunningCpus',
  max_running_memory_bytes: 'tenantMaxRunningMemoryBytes',
  max_storage_bytes: 'tenantMaxStorageBytes',
  max_terminals: 'tenantMaxTerminals',
} as const satisfies Record<TenantLimitName, keyof Settings>;

export { TENANT_LIMIT_NAMES, type TenantLimitName } from '@orchestra/protocol';

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
  return PLATFORM_SETTINGS[TENANT_LIMIT_SETTINGS[name]].env;
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
  for (const name of TENANT_LIMIT_NAMES) out[name] = settings[TENANT_LIMIT_SETTINGS[name]];
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
