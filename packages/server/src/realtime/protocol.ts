import {
  MAX_INFO_BYTES,
  REALTIME_FRAMES,
  type RealtimeFrameKind,
  type RealtimeFramePayload,
} from '@orchestra/protocol';
import type { ValidateFunction } from 'ajv';
import Type from 'typebox';
import {
  describeSchemaError,
  frameAjv,
  type Header,
  invalidField,
  parseEnvelope,
} from '../platform/envelope.ts';

/**
 * The realtime protocol (docs/protocol.md, "Realtime protocol"): its frames,
 * `REALTIME_FRAMES`, are the wire contract's (@orchestra/protocol); this file validates them.
 */
export {
  EVENT_NAME_PATTERN,
  MAX_INFO_BYTES,
  PresenceInfo,
  REALTIME_FRAMES,
  type RealtimeFrameKind,
  type RealtimeFramePayload,
} from '@orchestra/protocol';

export type RealtimeFrame = {
  [K in RealtimeFrameKind]: { header: Header; payload: RealtimeFramePayload<K> };
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
