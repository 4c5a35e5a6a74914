import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The runners module's settings (its slice of the node's settings). */
export const RUNNERS_SETTINGS = {
  hostedRunner: {
    env: 'ORCHESTRA_HOSTED_RUNNER',
    kind: 'bool',
    schema: Type.Boolean(),
    allowed: 'true or false',
    description:
      'Whether this node runs hosted agents (tasks of `llm` templates). Nodes that do not still serve their API; at least one node of a cluster should.',
    default: true,
  },
  hostedRunsPerTenant: {
    env: 'ORCHESTRA_HOSTED_RUNS_PER_TENANT',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 100_000 }),
    allowed: 'an integer from 1 to 100000',
    description:
      'Most hosted runs at once on this node for one tenant (the max_concurrency of its hosted runner there); tenant concurrency limits apply too.',
    default: 200,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof RUNNERS_SETTINGS> {}
}
