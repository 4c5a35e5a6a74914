import type { ValidateFunction } from 'ajv';
import Type, { type Static, type TSchema } from 'typebox';
import {
  describeSchemaError,
  frameAjv,
  type Header,
  invalidField,
  type MessageType,
  parseEnvelope,
} from '../platform/envelope.ts';
import { Labels } from '../platform/schemas.ts';

/**
 * The agent protocol (docs/protocol.md): JSON text frames in the Orchestra envelope over
 * the `/v1/agents/connect` WebSocket. This file is its machine-readable definition; the
 * document and the conformance suite follow it.
 */
export {
  FrameError,
  type Header,
  MESSAGE_TYPES,
  type MessageType,
  PROTOCOL_VERSION,
  serverFrame,
} from '../platform/envelope.ts';

export const AGENT_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';
const Capability = Type.String({ pattern: '^[a-z0-9][a-z0-9._:/-]{0,99}$' });
const TaskId = Type.String({ minLength: 1, maxLength: 100 });
const Attempt = Type.Integer({ minimum: 1, maximum: 1000 });

/** What an agent may send, by `payload.kind`, with the envelope type each must carry. */
export const AGENT_FRAMES = {
  register: {
    type: 'REQUEST',
    payload: {
      agent_id: Type.String({ pattern: AGENT_ID_PATTERN }),
      // Stored as text: no control characters (PostgreSQL cannot store U+0000 at all).
      name: Type.Optional(
        Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]*$' }),
      ),
      capabilities: Type.Array(Capability, { maxItems: 100, uniqueItems: true }),
      max_concurrency: Type.Integer({ minimum: 1, maximum: 10_000 }),
      weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
      labels: Type.Optional(Labels),
      sdk: Type.Optional(
        Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 100 }),
            version: Type.String({ minLength: 1, maxLength: 50 }),
          },
          { additionalProperties: false },
        ),
      ),
      in_flight: Type.Optional(
        Type.Array(
          Type.Object({ task_id: TaskId, attempt: Attempt }, { additionalProperties: false }),
          { maxItems: 10_000 },
        ),
      ),
    },
  },
  heartbeat: {
    type: 'EVENT',
    payload: {
      in_flight: Type.Integer({ minimum: 0, maximum: 10_000 }),
      cpu: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
      memory: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    },
  },
  'task.accept': { type: 'RESPONSE', payload: { task_id: TaskId, attempt: Attempt } },
  'task.reject': {
    type: 'RESPONSE',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      reason: Type.String({ minLength: 1, maxLength: 1000 }),
    },
  },
  'task.event': {
    type: 'STREAM',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      seq: Type.Integer({ minimum: 1 }),
      event: Type.Union([
        Type.Object(
          {
            type: Type.Literal('progress'),
            current: Type.Number({ minimum: 0 }),
            total: Type.Optional(Type.Number({ minimum: 0 })),
            message: Type.Optional(Type.String({ maxLength: 1000 })),
          },
          { additionalProperties: false },
        ),
        Type.Object(
          { type: Type.Literal('output'), data: Type.Unknown() },
          { additionalProperties: false, required: ['type', 'data'] },
        ),
        Type.Object(
          {
            type: Type.Literal('log'),
            level: Type.Enum(['debug', 'info', 'warn', 'error']),
            message: Type.String({ maxLength: 10_000 }),
          },
          { additionalProperties: false },
        ),
        Type.Object(
          {
            type: Type.Literal('custom'),
            name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,99}$' }),
            data: Type.Optional(Type.Unknown()),
          },
          { additionalProperties: false },
        ),
      ]),
    },
  },
  'task.result': {
    type: 'REQUEST',
    payload: { task_id: TaskId, attempt: Attempt, output: Type.Unknown() },
  },
  'task.fail': {
    type: 'REQUEST',
    payload: {
      task_id: TaskId,
      attempt: Attempt,
      error: Type.Object(
        {
          code: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,100}$' })),
          message: Type.String({ maxLength: 10_000 }),
          retryable: Type.Optional(Type.Boolean()),
          details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        },
        { additionalProperties: false },
      ),
    },
  },
  'task.cancelled': { type: 'RESPONSE', payload: { task_id: TaskId, attempt: Attempt } },
  drain: { type: 'REQUEST', payload: {} },
} as const satisfies Record<string, { type: MessageType; payload: Record<string, TSchema> }>;

export type AgentFrameKind = keyof typeof AGENT_FRAMES;
type PayloadOf<K extends AgentFrameKind> = Static<
  ReturnType<typeof Type.Object<(typeof AGENT_FRAMES)[K]['payload']>>
>;

/** A frame from an agent that passed validation. */
export type AgentFrame = {
  [K in AgentFrameKind]: { header: Header; payload: { kind: K } & PayloadOf<K> };
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
