import Type from 'typebox';
import type { SettingSpec, SettingsCheck, SettingsOf } from '../platform/settings.ts';
import { HistoryRules } from './topics.ts';

/** The realtime module's settings (its slice of the node's settings). */
export const REALTIME_SETTINGS = {
  realtimeMaxFrameBytes: {
    env: 'ORCHESTRA_REALTIME_MAX_FRAME_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 16_777_216 }),
    allowed: 'an integer from 1024 to 16777216',
    description:
      'Largest frame a realtime client may send (a published message included); a larger one closes its connection with 1009.',
    default: 65536,
  },
  realtimeMaxSubscriptions: {
    env: 'ORCHESTRA_REALTIME_MAX_SUBSCRIPTIONS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 100_000 }),
    allowed: 'an integer from 1 to 100000',
    description: 'Most topic and pattern subscriptions one realtime connection may hold.',
    default: 100,
  },
  realtimeSubscribesPerSecond: {
    env: 'ORCHESTRA_REALTIME_SUBSCRIBES_PER_SECOND',
    kind: 'number',
    schema: Type.Number({ minimum: 0 }),
    allowed: 'a number >= 0 (0 turns the limit off)',
    description:
      'Sustained `subscribe` frames per second per realtime connection, after a burst of `ORCHESTRA_REALTIME_MAX_SUBSCRIPTIONS`; more are answered with `RATE_LIMITED`.',
    default: 10,
  },
  realtimeMaxQueueBytes: {
    env: 'ORCHESTRA_REALTIME_MAX_QUEUE_BYTES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1024, maximum: 1_073_741_824 }),
    allowed: 'an integer from 1024 to 1073741824',
    description:
      'Bytes waiting to be sent to one realtime connection before it is closed as a slow consumer (4507).',
    default: 4_194_304,
  },
  realtimePingIntervalMs: {
    env: 'ORCHESTRA_REALTIME_PING_INTERVAL_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 100, maximum: 3_600_000 }),
    allowed: 'an integer from 100 to 3600000',
    description:
      'How often each realtime connection is pinged and its credential rechecked; one without a pong by the next ping is dropped, one whose key was revoked is closed with 4401.',
    default: 30_000,
  },
  realtimeCompression: {
    env: 'ORCHESTRA_REALTIME_COMPRESSION',
    kind: 'bool',
    schema: Type.Boolean(),
    allowed: 'true or false',
    description:
      'Accept permessage-deflate on WebSockets; a broadcast is then compressed once for all subscribers.',
    default: false,
  },
  topicHistoryMaxMessages: {
    env: 'ORCHESTRA_TOPIC_HISTORY_MAX_MESSAGES',
    kind: 'int',
    schema: Type.Integer({ minimum: 1, maximum: 100_000_000 }),
    allowed: 'an integer from 1 to 100000000',
    description:
      'Messages a user topic (and `agents`) keeps for replay, unless a rule says otherwise.',
    default: 1000,
  },
  topicHistoryMaxAgeMs: {
    env: 'ORCHESTRA_TOPIC_HISTORY_MAX_AGE_MS',
    kind: 'int',
    schema: Type.Integer({ minimum: 1000, maximum: 31_536_000_000 }),
    allowed: 'an integer from 1000 to 31536000000',
    description:
      'How long a user topic keeps a message for replay, unless a rule says otherwise; capped by ORCHESTRA_EVENT_RETENTION_MS.',
    default: 86_400_000,
  },
  topicHistory: {
    env: 'ORCHESTRA_TOPIC_HISTORY',
    kind: 'string',
    schema: Type.String({
      pattern: '^\\s*[^=,\\s]+=\\d{1,9}/\\d{1,12}\\s*(,\\s*[^=,\\s]+=\\d{1,9}/\\d{1,12}\\s*)*$',
    }),
    allowed: 'comma-separated rules pattern=max_messages/max_age_ms, such as chat.>=500/3600000',
    description:
      'History bounds per topic pattern, first match first; topics no rule matches use the two settings above.',
  },
} as const satisfies Record<string, SettingSpec>;

declare module '../platform/settings.ts' {
  interface ModuleSettings extends SettingsOf<typeof REALTIME_SETTINGS> {}
}

/** The history rules parse, so that a start with bad ones fails before it changes anything. */
export const checkRealtimeSettings: SettingsCheck = (values) => {
  try {
    HistoryRules.parse(values.topicHistory ?? '');
    return [];
  } catch (err) {
    return [`${REALTIME_SETTINGS.topicHistory.env}: ${(err as Error).message}`];
  }
};
