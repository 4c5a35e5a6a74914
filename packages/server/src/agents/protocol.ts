import { AGENT_FRAMES, type AgentFrameKind, type AgentFramePayload } from '@orchestra/protocol';
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
 * The agent protocol (docs/protocol.md): JSON text frames in the Orchestra envelope over
 * the `/v1/agents/connect` WebSocket. Its machine-readable definition, `AGENT_FRAMES`, is
 * the wire contract's (@orchestra/protocol); this file validates frames against it.
 */
export { AGENT_FRAMES, type AgentFrameKind, type AgentFramePayload } from '@orchestra/protocol';
export {
  FrameError,
  type Header,
  MESSAGE_TYPES,
  type MessageType,
  PROTOCOL_VERSION,
  serverFrame,
} from '../platform/envelope.ts';

/** A frame from an agent that passed validation. */
export type AgentFrame = {
  [K in AgentFrameKind]: { header: Header; payload: AgentFramePayload<K> };
}[AgentFrameKind];

export type FrameOf<K extends AgentFrameKind> = Extract<AgentFrame, { payload: { kind: K } }>;

const payloadValidators = new Map<string, ValidateFunction>(
  Object.entries(AGENT_FRAMES).map(([kind, spec]) => [
    kind,
    frameAjv.compile(
      Type.Object(
        { kind: Type.Literal(kind), ...spec.payload },
        {
          additionalProperties: false,
          // `output: undefined` is not JSON; these must be present even when null.
          ...(kind === 'task.result' ? { required: ['kind', 'task_id', 'attempt', 'output'] } : {}),
        },
      ),
    ),
  ]),
);

/** Each event type's schema alone, for precise messages about an invalid event. */
const eventValidators = new Map<string, ValidateFunction>(
  AGENT_FRAMES['task.event'].payload.event.anyOf.map((branch) => [
    branch.properties.type.const,
    frameAjv.compile(branch),
  ]),
);

/**
 * Parses and validates one text frame from an agent. Throws a `FrameError` naming the
 * first problem; its correlation id is the frame's header id when that could be read.
 */
export function parseAgentFrame(text: string): AgentFrame {
  const { header, payload, fail } = parseEnvelope(text);
  const kind = payload.kind;
  const validate = typeof kind === 'string' ? payloadValidators.get(kind) : undefined;
  if (validate === undefined) {
    throw fail(
      invalidField('payload.kind', `must be one of ${Object.keys(AGENT_FRAMES).join(', ')}`),
    );
  }
  if (!validate(payload)) {
    // For an event, name the problem within its own type rather than the union's first.
    const event = (payload as { event?: { type?: unknown } }).event;
    const eventCheck =
      kind === 'task.event' && typeof event?.type === 'string'
        ? eventValidators.get(event.type)
        : undefined;
    if (eventCheck !== undefined && !eventCheck(event)) {
      throw fail(describeSchemaError('payload.event', eventCheck.errors));
    }
    throw fail(describeSchemaError('payload', validate.errors));
  }
  const expected = AGENT_FRAMES[kind as AgentFrameKind].type;
  if (header.type !== expected) {
    throw fail(invalidField('header.type', `must be ${expected} for ${kind as string}`));
  }
  return { header, payload } as AgentFrame;
}
