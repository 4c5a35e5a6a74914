import type { ValidateFunction } from 'ajv';
import Type, { type Static, type TSchema } from 'typebox';
import {
  describeSchemaError,
  frameAjv,
  type Header,
  invalidField,
  parseEnvelope,
} from '../platform/envelope.ts';
import { TOPIC_MAX_LENGTH, TOPIC_OR_PATTERN_PATTERN, TOPIC_PATTERN } from './topics.ts';

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
export const EVENT_NAME_PATTERN = '^[A-Za-z0-9._-]{1,100}$';
/** Presence info: a small object shown to other members. */
export const PresenceInfo = Type.Record(Type.String({ maxLength: 100 }), Type.Unknown(), {
  maxProperties: 20,
});
export const MAX_INFO_BYTES = 1024;

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

export type RealtimeFrameKind = keyof typeof REALTIME_FRAMES;
type PayloadOf<K extends RealtimeFrameKind> = Static<
  ReturnType<typeof Type.Object<(typeof REALTIME_FRAMES)[K]>>
>;

export type RealtimeFrame = {
  [K in RealtimeFrameKind]: { header: Header; payload: { kind: K } & PayloadOf<K> };
}[RealtimeFrameKind];

const validators = new Map<string, ValidateFunction>(
  Object.entries(REALTIME_FRAMES).map(([kind, fields]) => [
    kind,
    frameAjv.compile(
      Type.Object(
        { kind: Type.Literal(kind), ...fields },
        {
          additionalProperties: false,
          // `data: undefined` is not JSON: a publish must say what it publishes, even null.
          ...(kind === 'publish' ? { required: ['kind', 'topic', 'data'] } : {}),
        },
      ),
    ),
  ]),
);

/** Parses one client frame; throws a `FrameError` naming the first problem. */
export function parseRealtimeFrame(text: string): RealtimeFrame {
  const { header, payload, fail } = parseEnvelope(text);
  const kind = payload.kind;
  const validate = typeof kind === 'string' ? validators.get(kind) : undefined;
  if (validate === undefined) {
    throw fail(
      invalidField('payload.kind', `must be one of ${Object.keys(REALTIME_FRAMES).join(', ')}`),
    );
  }
  if (!validate(payload)) throw fail(describeSchemaError('payload', validate.errors));
  if (header.type !== 'REQUEST') throw fail(invalidField('header.type', 'must be REQUEST'));
  if (kind === 'history' && payload.after !== undefined && payload.last !== undefined) {
    throw fail(invalidField('payload.last', 'cannot be given with after'));
  }
  if (
    kind === 'subscribe' &&
    payload.info !== undefined &&
    Buffer.byteLength(JSON.stringify(payload.info)) > MAX_INFO_BYTES
  ) {
    throw fail(invalidField('payload.info', `must be at most ${MAX_INFO_BYTES} bytes of JSON`));
  }
  return { header, payload } as RealtimeFrame;
}
