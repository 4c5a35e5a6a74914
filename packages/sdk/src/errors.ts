import type { ErrorCode } from '@orchestra/protocol/constants';

/**
 * Codes the SDK gives errors of its own, where no catalogued code from the server applies:
 * - `CONNECTION_FAILED` and `TIMEOUT`: no response; `status` is 0.
 * - `INVALID_RESPONSE`: a success status whose body is not JSON, or a stream line that is not.
 * - `HTTP_ERROR`: an error status without Orchestra's error body (a proxy in between).
 * - `AGENT_DISCONNECTED`: an `AgentWorker`'s connection went away while a call waited on it.
 */
export const CLIENT_ERROR_CODES = [
  'CONNECTION_FAILED',
  'TIMEOUT',
  'INVALID_RESPONSE',
  'HTTP_ERROR',
  'AGENT_DISCONNECTED',
] as const;
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

/**
 * The code of an `OrchestraError`: one of the server's catalogue (docs/errors.md, the
 * `ErrorCode`s of @orchestra/protocol) or one of the SDK's own. Typed as that closed union,
 * so that a misspelt code in `err.code === 'RATE_LIMTED'` does not compile. At run time
 * the SDK passes on whatever code the server sent, unchecked: a server newer than this SDK
 * may send a code it does not list yet, so a `switch` on it should keep a `default` branch
 * (decision 0014).
 */
export type OrchestraErrorCode = ErrorCode | ClientErrorCode;

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
  /**
   * Stable error code, such as `INVALID_API_KEY` or `RATE_LIMITED`; may be a code newer
   * than this SDK (see `OrchestraErrorCode`).
   */
  readonly code: OrchestraErrorCode;
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
    // Not checked against the catalogue: a newer server's code must reach the caller as is.
    this.code = code as OrchestraErrorCode;
    this.status = options.status;
    this.requestId = options.requestId;
    this.details = options.details;
    this.traceId = options.traceId;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}
