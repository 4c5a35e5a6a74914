import Type from 'typebox';

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
