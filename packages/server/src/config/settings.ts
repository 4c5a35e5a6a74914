import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The config module's settings (its slice of the node's settings). */
export const CONFIG_SETTINGS = {
  configDefaultEnv: {
    env: 'ORCHESTRA_CONFIG_DEFAULT_ENV',
    kind: 'string',
    schema: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}$' }),
    allowed: '1 to 32 of a-z 0-9 _ -, starting with a letter or digit',
    description: 'The config environment of requests that give no `env`.',
    default: 'default',
  },
  configHistoryMaxVersions: {
    env: 'ORCHESTRA_CONFIG_HISTORY_MAX_VERSIONS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    allowed: 'an integer from 1 to 1000000',
    description:
      'Changes kept in the history of each config key; a write drops the oldest beyond this.',
    default: 1000,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof CONFIG_SETTINGS> {}
}
