/** The `error` object of Orchestra's unified error response. */
export interface ErrorPayload {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  timestamp: string;
  request_id: string;
  service: string;
  instance_id?: string;
}

/**
 * An error answered by the server (status >= 400) with its catalogued `code` (see
 * docs/errors.md), or a failure on the client's side:
 * - `CONNECTION_FAILED` and `TIMEOUT`: no response; `status` is 0.
 * - `INVALID_RESPONSE`: a success status whose body is not JSON; `status` is that status.
 * - `HTTP_ERROR`: an error status without Orchestra's error body (a proxy in between).
 */
export class OrchestraError extends Error {
  /** Stable error code, such as `INVALID_API_KEY` or `RATE_LIMITED`. */
  readonly code: string;
  /** HTTP status; 0 when no response arrived. */
  readonly status: number;
  readonly requestId: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  readonly traceId: string | undefined;
  /** Seconds from the `Retry-After` header, when the server sent one. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: string,
    message: string,
    options: {
      status: number;
      requestId?: string | undefined;
      details?: Record<string, unknown> | undefined;
      traceId?: string | undefined;
      retryAfterSeconds?: number | undefined;
      cause?: unknown;
    },
  ) {
    super(message, { cause: options.cause });
    this.name = 'OrchestraError';
    this.code = code;
    this.status = options.status;
    this.requestId = options.requestId;
    this.details = options.details;
    this.traceId = options.traceId;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}
