import Type from 'typebox';
import type { SettingSpec, SettingsCheck, SettingsOf } from '../platform/settings.ts';

/** The tasks module's settings (its slice of the node's settings). */
export const TASKS_SETTINGS = {
  taskRetryBaseMs: {
    env: 'ORCHESTRA_TASK_RETRY_BASE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 3_600_000 }),
    allowed: 'an integer from 0 to 3600000',
    description:
      'Delay before the second attempt of a task; it doubles with each further attempt, with jitter, up to the maximum.',
    default: 1000,
  },
  taskRetryMaxMs: {
    env: 'ORCHESTRA_TASK_RETRY_MAX_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
    allowed: 'an integer from 0 to 86400000',
    description: 'Longest delay between two attempts of a task.',
    default: 60000,
  },
  taskCancelGraceMs: {
    env: 'ORCHESTRA_TASK_CANCEL_GRACE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 0, maximum: 3_600_000 }),
    allowed: 'an integer from 0 to 3600000',
    description:
      'How long an agent has to confirm that it stopped a cancelled task; then the task is cancelled without it.',
    default: 10000,
  },
  concurrencyKeyLimit: {
    env: 'ORCHESTRA_CONCURRENCY_KEY_LIMIT',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 10_000 }),
    allowed: 'an integer from 1 to 10000',
    description:
      'Most tasks sharing a `concurrency_key` assigned or running at once, unless their template sets `concurrency_key_limit`. 1 runs them one at a time, in order.',
    default: 1,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof TASKS_SETTINGS> {}
}

export const checkTasksSettings: SettingsCheck = (values) =>
  values.taskRetryMaxMs < values.taskRetryBaseMs
    ? [
        `${TASKS_SETTINGS.taskRetryMaxMs.env} must be at least ${TASKS_SETTINGS.taskRetryBaseMs.env} (${values.taskRetryBaseMs})`,
      ]
    : [];
