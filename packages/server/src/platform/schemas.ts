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
