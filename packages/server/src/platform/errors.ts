import { ERROR_CATALOGUE, type ErrorCode } from '@orchestra/protocol/constants';

// The catalogue is part of the wire contract (decision 0014); re-exported here so that the
// server's code names it where it names `ApiError`.
export { CLOSE_CODES, ERROR_CATALOGUE, type ErrorCode } from '@orchestra/protocol/constants';

export type ErrorDetails = Record<string, unknown>;

/**
 * A failure the client can act on. Thrown anywhere in a request; the HTTP layer turns it
 * into the unified error response. Anything that is not an `ApiError` becomes a 500.
 */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetails | undefined;
  /** Extra response headers, such as `Retry-After`. */
  readonly headers: Record<string, string> | undefined;

  constructor(
    code: ErrorCode,
    message?: string,
    options?: { details?: ErrorDetails; headers?: Record<string, string>; cause?: unknown },
  ) {
    super(message ?? ERROR_CATALOGUE[code].message, { cause: options?.cause });
    this.name = 'ApiError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.details = options?.details;
    this.headers = options?.headers;
  }
}

/** The unified error body, shared by every HTTP surface. */
export interface ErrorBody {
  success: false;
  error: {
    code: string;
    message: string;
    details?: ErrorDetails;
    timestamp: string;
    request_id: string;
    service: string;
    instance_id?: string;
  };
  trace_id?: string;
}

export function errorBody(
  err: { code: string; message: string; details?: ErrorDetails | undefined },
  context: { requestId: string; service: string; instanceId: string; traceId?: string | undefined },
): ErrorBody {
  const body: ErrorBody = {
    success: false,
    error: {
      code: err.code,
      message: err.message,
      timestamp: new Date().toISOString(),
      request_id: context.requestId,
      service: context.service,
      instance_id: context.instanceId,
    },
  };
  if (err.details !== undefined) body.error.details = err.details;
  if (context.traceId !== undefined) body.trace_id = context.traceId;
  return body;
}

/** A 400 VALIDATION_FAILED about one field (`body.x`, `querystring.y`), in the schema's form. */
export function fieldError(field: string, message: string): ApiError {
  return new ApiError('VALIDATION_FAILED', `${field}: ${message}`, {
    details: { fields: [{ field, message }] },
  });
}
