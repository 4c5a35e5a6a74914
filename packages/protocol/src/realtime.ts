import Type, { type Static, type TSchema } from 'typebox';
import { ErrorFramePayload } from './agents.ts';
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

// The REST side of realtime: `/v1/topics` and `/v1/realtime/tokens`.

/** One message of a topic, as history and subscriptions deliver it. */
export const TopicMessage = Type.Object(
  {
    topic: Type.String(),
    offset: Type.Integer(),
    event: Type.String(),
    data: Type.Unknown(),
    time: Type.String({ format: 'date-time' }),
  },
  { $id: 'TopicMessage' },
);
export type TopicMessage = Static<typeof TopicMessage>;

/** A connection present on a topic. */
export const PresenceMember = Type.Object(
  {
    connection_id: Type.String(),
    client_id: Type.String(),
    info: Type.Record(Type.String(), Type.Unknown()),
    joined_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'PresenceMember' },
);
export type PresenceMember = Static<typeof PresenceMember>;

/** A topic of the tenant. `epoch` changes when the topic is deleted and created again. */
export const Topic = Type.Object(
  {
    name: Type.String(),
    epoch: Type.String(),
    last_offset: Type.Integer(),
    created_at: Type.String({ format: 'date-time' }),
  },
  { $id: 'Topic' },
);
export type Topic = Static<typeof Topic>;

/** An item of `GET /v1/topics/{topic}/events`: one message. */
export const TopicStreamEvent = Type.Object({
  offset: Type.Integer({ description: 'The message’s offset; also the SSE id.' }),
  type: Type.String({ description: 'The message’s event name.' }),
  time: Type.String({ format: 'date-time' }),
  data: Type.Unknown(),
});
export type TopicStreamEvent = Static<typeof TopicStreamEvent>;

/** The body of `POST /v1/realtime/tokens`. */
export const CreateRealtimeToken = Type.Object(
  {
    topics: Type.Array(TopicOrPattern, { minItems: 1, maxItems: 20, uniqueItems: true }),
    publish: Type.Optional(Type.Boolean({ default: false })),
    client_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    info: Type.Optional(PresenceInfo),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400, default: 3600 })),
  },
  { additionalProperties: false },
);
export type CreateRealtimeToken = Static<typeof CreateRealtimeToken>;

/** A realtime token, as issued: the secret is shown this once. */
export const RealtimeToken = Type.Object({
  token: Type.String(),
  expires_at: Type.String({ format: 'date-time' }),
  topics: Type.Array(Type.String()),
  publish: Type.Boolean(),
  client_id: Type.String(),
});
export type RealtimeToken = Static<typeof RealtimeToken>;

/** The body of `POST /v1/topics/{topic}/messages`. */
export const PublishMessage = Type.Object(
  {
    data: Type.Unknown(),
    event: Type.Optional(Type.String({ pattern: EVENT_NAME_PATTERN })),
  },
  { additionalProperties: false, required: ['data'] },
);
export type PublishMessage = Static<typeof PublishMessage>;

/** Where a published message was stored. */
export const Published = Type.Object({
  topic: Type.String(),
  epoch: Type.String(),
  offset: Type.Integer(),
});
export type Published = Static<typeof Published>;

/** A page of a topic's history. */
export const TopicHistory = Type.Object({
  topic: Type.String(),
  epoch: Type.String(),
  first_offset: Type.Integer(),
  last_offset: Type.Integer(),
  next_after: Type.Union([Type.Integer(), Type.Null()], {
    description:
      'Pass as `after` to read the messages that follow; null when `messages` reach `last_offset`.',
  }),
  messages: Type.Array(Type.Ref('TopicMessage')),
});
export type TopicHistory = Omit<Static<typeof TopicHistory>, 'messages'> & {
  messages: TopicMessage[];
};

/**
 * What the server sends a realtime client (docs/protocol.md), by `payload.kind`: the fields
 * of each payload besides `kind`. The server's `send` is typed by it; a test checks the
 * frames a client really receives against it.
 */
export const REALTIME_SERVER_FRAMES = {
  authenticated: {
    tenant_id: Type.String(),
    role: Type.Optional(Type.String()),
    client_id: Type.Optional(Type.String()),
    connection_id: Type.String(),
    limits: Type.Object({
      max_frame_bytes: Type.Integer(),
      max_subscriptions: Type.Integer(),
      max_queue_bytes: Type.Integer(),
    }),
  },
  subscribed: {
    topic: Type.String(),
    /** A pattern's subscription: live messages of every matching topic. */
    pattern: Type.Optional(Type.Literal(true)),
    epoch: Type.Optional(Type.String()),
    offset: Type.Optional(Type.Integer()),
    /** Whether a resume (`from`, `epoch`) continues without a gap. */
    recovered: Type.Optional(Type.Boolean()),
  },
  unsubscribed: { topic: Type.String(), reason: Type.Optional(Type.String()) },
  published: { topic: Type.String(), epoch: Type.String(), offset: Type.Integer() },
  history: { ...TopicHistory.properties, messages: Type.Array(TopicMessage) },
  presence: { topic: Type.String(), members: Type.Array(PresenceMember) },
  'presence.join': { topic: Type.String(), member: PresenceMember },
  'presence.leave': { topic: Type.String(), member: PresenceMember },
  message: TopicMessage.properties,
  pong: {},
  error: ErrorFramePayload,
} as const satisfies Record<string, Record<string, TSchema>>;

export type RealtimeServerFrameKind = keyof typeof REALTIME_SERVER_FRAMES;

/** The payload of a frame of kind `K` that the server sends a realtime client. */
export type RealtimeServerFramePayload<K extends RealtimeServerFrameKind> = { kind: K } & Static<
  ReturnType<typeof Type.Object<(typeof REALTIME_SERVER_FRAMES)[K]>>
>;
