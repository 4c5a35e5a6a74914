import Type, { type Static, type TSchema } from 'typebox';
import { MESSAGE_TYPES, PROTOCOL_VERSION } from './constants.ts';

// What every surface shares: the error body, times, labels, pages, event-stream items and
// the envelope of the WebSocket protocols.

/** The unified error body (see docs/errors.md), declared for OpenAPI and serialization. */
export const ErrorResponse = Type.Object(
  {
    success: Type.Literal(false),
    error: Type.Object({
      code: Type.String({ description: 'Stable error code from docs/errors.md.' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      timestamp: Type.String({ format: 'date-time' }),
      request_id: Type.String(),
      service: Type.String(),
      instance_id: Type.Optional(Type.String()),
    }),
    trace_id: Type.Optional(Type.String()),
  },
  { $id: 'ErrorResponse', description: 'Every error response has this shape.' },
);
export type ErrorResponse = Static<typeof ErrorResponse>;

/** Error responses every route can give; spread into a route's `response` schema. */
export const errorResponses = {
  '4xx': Type.Ref('ErrorResponse'),
  '5xx': Type.Ref('ErrorResponse'),
};

export const Timestamp = Type.String({ format: 'date-time' });
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);

/** Free key/value labels to find resources by (templates, tasks). */
export const Labels = Type.Record(
  Type.String({ pattern: '^[a-z0-9][a-z0-9._/-]{0,62}$' }),
  // Printable: a value with a newline could be stored but never matched by a filter.
  Type.String({ maxLength: 256, pattern: '^[^\\u0000-\\u001f\\u007f]*$' }),
  {
    maxProperties: 50,
    // Without this, keys that miss the pattern are simply not checked.
    additionalProperties: false,
    description: 'Free key/value pairs to find the resource by.',
  },
);
export type Labels = Static<typeof Labels>;

/** A `key=value` label filter of a list route; repeat the parameter for several. */
export const LabelSelectors = Type.Array(
  Type.String({
    pattern: '^[a-z0-9][a-z0-9._/-]{0,62}=.{0,256}$',
    description: 'A `key=value` label the items must carry.',
  }),
  { maxItems: 20, description: 'Repeat for several labels; items must carry all of them.' },
);

/** Parses `key=value` selectors (already validated by `LabelSelectors`). */
export function parseLabelSelectors(
  selectors: readonly string[] | undefined,
): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const selector of selectors ?? []) {
    const at = selector.indexOf('=');
    labels[selector.slice(0, at)] = selector.slice(at + 1);
  }
  return labels;
}

/** Said in an event stream instead of items that are no longer retained. */
export const StreamGap = Type.Object(
  {
    type: Type.Literal('stream.gap'),
    /** The offset the reader asked to continue after. */
    after: Type.Integer({ description: 'The offset the reader asked to continue after.' }),
    /** The oldest offset still retained. */
    first_offset: Type.Integer({
      description: 'The oldest offset still retained; reading continues from there.',
    }),
  },
  { $id: 'StreamGap', description: 'Items after the resume point are no longer retained.' },
);
/**
 * Said instead of events that retention removed: the stream continues at `first_offset`.
 * It has no `offset`, which tells it apart from a `TaskEvent`.
 */
export type StreamGap = Static<typeof StreamGap>;

/** The last item of an event stream that ends early. */
export const StreamError = Type.Object(
  {
    type: Type.Literal('stream.error'),
    code: Type.Optional(Type.String({ description: 'A code of docs/errors.md.' })),
    message: Type.String(),
  },
  {
    $id: 'StreamError',
    description:
      'The stream ends early: its credential was revoked or expired (with `code`), or it was interrupted (SSE only, without `code`: resume with `Last-Event-ID`).',
  },
);
export type StreamError = Static<typeof StreamError>;

/**
 * The 200 of a route that streams (`sendStream`), for OpenAPI: Server-Sent Events when
 * `Accept` asks for `text/event-stream`, NDJSON otherwise. Both are sequences, written as
 * OpenAPI 3.2 maps sequential media types (3.1 has no way of its own): an array of the
 * items, NDJSON lines or SSE events whose `data` holds the item as JSON (decision 0013).
 */
export function eventStreamResponse(item: TSchema, description: string) {
  const itemSchema = Type.Union([item, Type.Ref('StreamError')]);
  return {
    description,
    content: {
      'text/event-stream': {
        schema: Type.Array(
          Type.Object({
            id: Type.Optional(
              Type.String({ description: 'The item’s offset or revision, where it has one.' }),
            ),
            event: Type.String({ description: 'The item’s `type`.' }),
            data: Type.String({ contentMediaType: 'application/json', contentSchema: itemSchema }),
          }),
          {
            description:
              'Server-Sent Events, one per item. Comment lines are keep-alives; a stream that ends by itself sends `stream.end` last.',
          },
        ),
      },
      'application/x-ndjson': {
        schema: Type.Array(itemSchema, {
          description: 'One item as JSON a line; empty lines are keep-alives.',
        }),
      },
    },
  };
}

const Id = Type.String({ minLength: 1, maxLength: 128 });

/**
 * The envelope's header, shared by every WebSocket protocol (docs/protocol.md): a JSON text
 * frame `{header, payload}` where `payload.kind` names the frame.
 */
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

/** Items a list route answers when no `limit` is given. */
export const DEFAULT_PAGE_LIMIT = 50;

/** Query parameters of every list route. */
export const PageQuery = {
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 200,
      default: DEFAULT_PAGE_LIMIT,
      description:
        'Items per page, 1 to 200. A page also stops at about ORCHESTRA_RESPONSE_MAX_BYTES of JSON (4 MiB by default), with at least one item.',
    }),
  ),
  cursor: Type.Optional(
    Type.String({
      maxLength: 512,
      description: 'The `next_cursor` of the previous page; omit for the first page.',
    }),
  ),
};

/** A page of items in id order; `next_cursor` is null on the last page. */
export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    next_cursor: Type.Union([Type.String(), Type.Null()], {
      description:
        'Pass as `cursor` for the next page (the page may have stopped at `limit` or at the byte budget); null on the last page.',
    }),
  });
}

/** What an agent offers and a task or template needs, such as `gpu` or `code:python`. */
export const Capability = Type.String({ pattern: '^[a-z0-9][a-z0-9._:/-]{0,99}$' });
