import { randomUUID } from 'node:crypto';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import Type, { type Static, type TSchema } from 'typebox';
import { ApiError } from '../platform/errors.ts';
import { Labels } from '../platform/schemas.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../platform/validation.ts';

/**
 * The agent protocol (docs/protocol.md): JSON text frames in the Orchestra envelope over
 * the `/v1/agents/connect` WebSocket. This file is its machine-readable definition; the
 * document and the conformance suite follow it.
 */
export const PROTOCOL_VERSION = 1;

export const MESSAGE_TYPES = ['REQUEST', 'RESPONSE', 'EVENT', 'STREAM'] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];

const Id = Type.String({ minLength: 1, maxLength: 128 });

export const Header = Type.Object(
  {
    id: Id,
    correlation_id: Type.Optional(Id),
    type: Type.Enum([...MESSAGE_TYPES]),
    timestamp: Type.String({ format: 'date-time' }),
    source: Type.String({ minLength: 1, maxLength: 256 }),
    destination: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    metadata: Type.Optional(
      Type.Record(Type.String(), Type.String({ maxLength: 1024 }), { maxProperties: 50 }),
    ),
    version: Type.Literal(PROTOCOL_VERSION),
  },
  { additionalProperties: false },
);
export type Header = Static<typeof Header>;

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
      name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
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

const ajv = new Ajv({ allErrors: false, removeAdditional: false, useDefaults: false });
ajv.addFormat('date-time', {
  type: 'string',
  validate: (value: string) => /^\d{4}-\d\d-\d\dT/.test(value) && !Number.isNaN(Date.parse(value)),
});
const validateHeader = ajv.compile(Header);
const payloadValidators = new Map<string, ValidateFunction>(
  Object.entries(AGENT_FRAMES).map(([kind, spec]) => [
    kind,
    ajv.compile(
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
    ajv.compile(branch),
  ]),
);

/** A frame that could not be used, with the error frame's content and the request it answers. */
export class FrameError extends ApiError {
  readonly correlationId: string | undefined;

  constructor(error: ApiError, correlationId: string | undefined) {
    super(error.code, error.message, error.details ? { details: error.details } : {});
    this.correlationId = correlationId;
  }
}

function invalid(field: string, message: string): ApiError {
  return new ApiError('VALIDATION_FAILED', `${field}: ${message}`, {
    details: { fields: [{ field, message }] },
  });
}

function describe(prefix: string, errors: ErrorObject[] | null | undefined): ApiError {
  const first = errors?.[0];
  if (first === undefined) return invalid(prefix, 'is not valid');
  const path = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
  const field = path === '' ? prefix : `${prefix}.${path}`;
  if (first.keyword === 'required') {
    const missing = (first.params as { missingProperty: string }).missingProperty;
    return invalid(`${field}.${missing}`, 'is required');
  }
  if (first.keyword === 'additionalProperties') {
    const extra = (first.params as { additionalProperty: string }).additionalProperty;
    return invalid(`${field}.${extra}`, 'is not a known field');
  }
  if (first.keyword === 'const' || first.keyword === 'enum') {
    const allowed = (first.params as { allowedValue?: unknown; allowedValues?: unknown[] })
      .allowedValues ?? [(first.params as { allowedValue?: unknown }).allowedValue];
    return invalid(field, `must be ${allowed.map((v) => JSON.stringify(v)).join(' or ')}`);
  }
  return invalid(field, first.message ?? 'is not valid');
}

/**
 * Parses and validates one text frame from an agent. Throws a `FrameError` naming the
 * first problem; its correlation id is the frame's header id when that could be read.
 */
export function parseAgentFrame(text: string): AgentFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError(new ApiError('INVALID_JSON', 'The frame is not valid JSON'), undefined);
  }
  const headerId =
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { header?: { id?: unknown } }).header?.id === 'string'
      ? ((value as { header: { id: string } }).header.id.slice(0, 128) as string)
      : undefined;
  const fail = (error: ApiError) => new FrameError(error, headerId);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw fail(invalid('frame', 'must be an object with header and payload'));
  }
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) {
    throw fail(invalid('frame', `nests deeper than ${MAX_JSON_DEPTH} levels`));
  }
  const frame = value as { header?: unknown; payload?: unknown };
  for (const key of Object.keys(frame)) {
    if (key !== 'header' && key !== 'payload') throw fail(invalid(key, 'is not a known field'));
  }
  if (!validateHeader(frame.header)) throw fail(describe('header', validateHeader.errors));
  const payload = frame.payload;
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw fail(invalid('payload', 'must be an object'));
  }
  const kind = (payload as { kind?: unknown }).kind;
  const validate = typeof kind === 'string' ? payloadValidators.get(kind) : undefined;
  if (validate === undefined) {
    throw fail(invalid('payload.kind', `must be one of ${Object.keys(AGENT_FRAMES).join(', ')}`));
  }
  if (!validate(payload)) {
    // For an event, name the problem within its own type rather than the union's first.
    const event = (payload as { event?: { type?: unknown } }).event;
    const eventCheck =
      kind === 'task.event' && typeof event?.type === 'string'
        ? eventValidators.get(event.type)
        : undefined;
    if (eventCheck !== undefined && !eventCheck(event)) {
      throw fail(describe('payload.event', eventCheck.errors));
    }
    throw fail(describe('payload', validate.errors));
  }
  const expected = AGENT_FRAMES[kind as AgentFrameKind].type;
  if (frame.header.type !== expected) {
    throw fail(invalid('header.type', `must be ${expected} for ${kind as string}`));
  }
  return frame as AgentFrame;
}

/** Builds a server frame. `correlationId` ties a RESPONSE to the request it answers. */
export function serverFrame(
  source: string,
  type: MessageType,
  payload: { kind: string } & Record<string, unknown>,
  correlationId?: string,
): string {
  const header: Header = {
    id: randomUUID(),
    type,
    timestamp: new Date().toISOString(),
    source,
    version: PROTOCOL_VERSION,
  };
  if (correlationId !== undefined) header.correlation_id = correlationId;
  return JSON.stringify({ header, payload });
}
