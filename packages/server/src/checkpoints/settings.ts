import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The checkpoints module's settings (its slice of the node's settings). */
export const CHECKPOINTS_SETTINGS = {
  checkpointMaxFileBytes: {
    env: 'ORCHESTRA_CHECKPOINT_MAX_FILE_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 10_737_418_240 }),
    allowed: 'an integer from 1024 to 10737418240',
    description:
      'Files larger than this are left out of checkpoints (the checkpoint lists them in `skipped`); a restore leaves them as they are.',
    default: 10_485_760,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof CHECKPOINTS_SETTINGS> {}
}
