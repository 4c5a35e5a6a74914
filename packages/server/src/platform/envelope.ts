import { randomUUID } from 'node:crypto';
import { Header, type MessageType, PROTOCOL_VERSION } from '@orchestra/protocol';
import { Ajv, type ErrorObject } from 'ajv';
import { ApiError } from './errors.ts';
import { jsonValueProblem } from './validation.ts';

// The envelope shared by every WebSocket protocol (docs/protocol.md): its schema and
// constants are the wire contract's (@orchestra/protocol); parsing and building frames is here.
export { Header, MESSAGE_TYPES, type MessageType, PROTOCOL_VERSION } from '@orchestra/protocol';

/** The validator instance of the protocols: their schemas compile with the same formats. */
export const frameAjv = new Ajv({ allErrors: false, removeAdditional: false, useDefaults: false });
// RFC 3339: a date-time with its offset (`Z` or `±hh:mm`); without one, the time's meaning
// would depend on the reader's time zone.
const RFC3339 = /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/;
frameAjv.addFormat('date-time', {
  type: 'string',
  validate: (value: string) => RFC3339.test(value) && !Number.isNaN(Date.parse(value)),
});
const validateHeader = frameAjv.compile(Header);

/** A frame that could not be used, with the error frame's content and the request it answers. */
export class FrameError extends ApiError {
  readonly correlationId: string | undefined;

  constructor(error: ApiError, correlationId: string | undefined) {
    super(error.code, error.message, error.details ? { details: error.details } : {});
    this.correlationId = correlationId;
  }
}

export function invalidField(field: string, message: string): ApiError {
  return new ApiError('VALIDATION_FAILED', `${field}: ${message}`, {
    details: { fields: [{ field, message }] },
  });
}

/** Names the first problem ajv found, as `prefix.path: message`. */
export function describeSchemaError(
  prefix: string,
  errors: ErrorObject[] | null | undefined,
): ApiError {
  const first = errors?.[0];
  if (first === undefined) return invalidField(prefix, 'is not valid');
  const path = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
  const field = path === '' ? prefix : `${prefix}.${path}`;
  if (first.keyword === 'required') {
    const missing = (first.params as { missingProperty: string }).missingProperty;
    return invalidField(`${field}.${missing}`, 'is required');
  }
  if (first.keyword === 'additionalProperties') {
    const extra = (first.params as { additionalProperty: string }).additionalProperty;
    return invalidField(`${field}.${extra}`, 'is not a known field');
  }
  if (first.keyword === 'const' || first.keyword === 'enum') {
    const allowed = (first.params as { allowedValue?: unknown; allowedValues?: unknown[] })
      .allowedValues ?? [(first.params as { allowedValue?: unknown }).allowedValue];
    return invalidField(field, `must be ${allowed.map((v) => JSON.stringify(v)).join(' or ')}`);
  }
  return invalidField(field, first.message ?? 'is not valid');
}

/** A frame whose envelope is valid; its payload is an object not checked any further. */
export interface Envelope {
  header: Header;
  payload: Record<string, unknown>;
  /** Throws a `FrameError` answering this frame. */
  fail(error: ApiError): FrameError;
}

/**
 * Parses one text frame and checks the envelope: JSON object, nesting depth, top-level
 * members, header, and a payload object. Throws a `FrameError` naming the first problem;
 * its correlation id is the frame's header id when that could be read.
 */
export function parseEnvelope(text: string): Envelope {
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
    throw fail(invalidField('frame', 'must be an object with header and payload'));
  }
  const problem = jsonValueProblem(value, text, 'frame');
  if (problem !== undefined) throw fail(invalidField(problem.field, problem.message));
  const frame = value as { header?: unknown; payload?: unknown };
  for (const key of Object.keys(frame)) {
    if (key !== 'header' && key !== 'payload')
      throw fail(invalidField(key, 'is not a known field'));
  }
  if (!validateHeader(frame.header))
    throw fail(describeSchemaError('header', validateHeader.errors));
  const payload = frame.payload;
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw fail(invalidField('payload', 'must be an object'));
  }
  return { header: frame.header, payload: payload as Record<string, unknown>, fail };
}

/** The header of a server frame. `correlationId` ties a RESPONSE to the request it answers. */
export function serverHeader(source: string, type: MessageType, correlationId?: string): Header {
  const header: Header = {
    id: randomUUID(),
    type,
    timestamp: new Date().toISOString(),
    source,
    version: PROTOCOL_VERSION,
  };
  if (correlationId !== undefined) header.correlation_id = correlationId;
  return header;
}

/** Builds a server frame. `correlationId` ties a RESPONSE to the request it answers. */
export function serverFrame(
  source: string,
  type: MessageType,
  payload: { kind: string } & Record<string, unknown>,
  correlationId?: string,
): string {
  return JSON.stringify({ header: serverHeader(source, type, correlationId), payload });
}
