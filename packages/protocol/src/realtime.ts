import Type, { type Static, type TSchema } from 'typebox';
import {
  EVENT_NAME_PATTERN,
  TOPIC_MAX_LENGTH,
  TOPIC_OR_PATTERN_PATTERN,
  TOPIC_PATTERN,
} from './constants.ts';

/**
 * The realtime protocol (docs/protocol.md, "Realtime protocol"): what a client may send on
 * `/v1/realtime`. Every client frame is a REQUEST.
 */
const TopicName = Type.String({ maxLength: TOPIC_MAX_LENGTH, pattern: TOPIC_PATTERN });
const TopicOrPattern = Type.String({
  maxLength: TOPIC_MAX_LENGTH,
  pattern: TOPIC_OR_PATTERN_PATTERN,
});
const Offset = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** Presence info: a small object shown to other members. */
export const PresenceInfo = Type.Record(Type.String({ maxLength: 100 }), Type.Unknown(), {
  maxProperties: 20,
});

export const REALTIME_FRAMES = {
  auth: { token: Type.String({ minLength: 1, maxLength: 8192 }) },
  subscribe: {
    topic: TopicOrPattern,
    from: Type.Optional(Offset),
    // "": the epoch a subscription got before the topic's first message; no check.
    epoch: Type.Optional(Type.String({ maxLength: 64 })),
    presence: Type.Optional(Type.Boolean()),
    info: Type.Optional(PresenceInfo),
  },
  unsubscribe: { topic: TopicOrPattern },
  publish: {
    topic: TopicName,
    data: Type.Unknown(),
    event: Type.Optional(Type.String({ pattern: EVENT_NAME_PATTERN })),
    ack: Type.Optional(Type.Boolean()),
  },
  history: {
    topic: TopicName,
    after: Type.Optional(Offset),
    last: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  presence: { topic: TopicName },
  ping: {},
} as const satisfies Record<string, Record<string, TSchema>>;

/** The kind (`payload.kind`) of a frame a realtime client sends. */
export type RealtimeFrameKind = keyof typeof REALTIME_FRAMES;

/** The payload of a valid frame of kind `K` from a realtime client. */
export type RealtimeFramePayload<K extends RealtimeFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof REALTIME_FRAMES)[K]>>
>;
