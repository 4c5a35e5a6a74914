import Type from 'typebox';
import type { SettingSpec, SettingsOf } from '../platform/settings.ts';

/** The events module's settings (its slice of the node's settings). */
export const EVENTS_SETTINGS = {
  eventRetentionMs: {
    env: 'ORCHESTRA_EVENT_RETENTION_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 60_000, maximum: 31_536_000_000 }),
    allowed: 'an integer from 60000 (1 minute) to 31536000000 (365 days)',
    description:
      'How long task events stay replayable. Older events are deleted; a reader that asks for them gets a stream.gap.',
    default: 604_800_000,
  },
  natsExportEvents: {
    env: 'ORCHESTRA_NATS_EXPORT_EVENTS',
    kind: 'bool',
    schema: Type.Boolean(),
    allowed: 'true or false',
    description:
      'With NATS: copy every task, session and topic event into the JetStream stream `<prefix>-events` (subjects `<prefix>.export.<tenant>.<kind>.<id>`, message id `<stream>:<offset>`), for consumers outside Orchestra. Needs JetStream on the NATS server.',
    default: true,
  },
  natsStreamReplicas: {
    env: 'ORCHESTRA_NATS_STREAM_REPLICAS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 5 }),
    allowed: 'an integer from 1 to 5',
    description:
      'Replicas of the JetStream stream of exported events; more than 1 needs a NATS cluster of at least that many servers.',
    default: 1,
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof EVENTS_SETTINGS> {}
}
