import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The terminals module's settings (its slice of the node's settings). */
export const TERMINALS_SETTINGS = {
  terminalMaxPerInstance: {
    env: 'ORCHESTRA_TERMINAL_MAX_PER_INSTANCE',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1000 }),
    allowed: 'an integer from 1 to 1000',
    description:
      'Most terminals running in one instance at once; opening one more is refused with `TENANT_LIMIT_REACHED` (`details.quota` `terminals_per_instance`).',
    default: 10,
  },
  terminalScrollback: {
    env: 'ORCHESTRA_TERMINAL_SCROLLBACK',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 100_000 }),
    allowed: 'an integer from 0 to 100000',
    description:
      'Lines kept above the screen of each terminal, which a viewer that attaches sees (and `GET …/screen?scrollback=` reads).',
    default: 1000,
  },
  terminalMaxViewers: {
    env: 'ORCHESTRA_TERMINAL_MAX_VIEWERS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 1000 }),
    allowed: 'an integer from 1 to 1000',
    description:
      'Most viewers attached to one terminal at once; one more gets `TENANT_LIMIT_REACHED` and its connection is closed with 4429.',
    default: 20,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof TERMINALS_SETTINGS> {}
}
