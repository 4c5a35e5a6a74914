// The error codes and WebSocket close codes of every Orchestra surface (docs/errors.md).
// No TypeBox here: the SDK loads this at run time through `@orchestra/protocol/constants`.

/**
 * The error catalogue: every error a client can receive, with its HTTP status.
 * Codes are stable API: never rename or reuse one; retire it in docs/errors.md instead.
 * A test checks that this list and docs/errors.md agree.
 */
export const ERROR_CATALOGUE = {
  BAD_REQUEST: { status: 400, message: 'The request is malformed' },
  VALIDATION_FAILED: { status: 400, message: 'The request does not match the schema' },
  INVALID_JSON: { status: 400, message: 'The request body is not valid JSON' },
  INVALID_CURSOR: { status: 400, message: 'The pagination cursor is not valid' },
  UNAUTHENTICATED: { status: 401, message: 'Credentials are required' },
  INVALID_API_KEY: { status: 401, message: 'The API key is not valid' },
  API_KEY_REVOKED: { status: 401, message: 'The API key has been revoked' },
  API_KEY_EXPIRED: { status: 401, message: 'The API key has expired' },
  INVALID_TOKEN: { status: 401, message: 'The bearer token is not valid' },
  TOKEN_EXPIRED: { status: 401, message: 'The bearer token has expired' },
  PERMISSION_DENIED: { status: 403, message: 'The credential does not allow this operation' },
  ROUTE_NOT_FOUND: { status: 404, message: 'No route matches this method and path' },
  TENANT_NOT_FOUND: { status: 404, message: 'The tenant does not exist' },
  API_KEY_NOT_FOUND: { status: 404, message: 'The API key does not exist' },
  TEMPLATE_NOT_FOUND: { status: 404, message: 'The template does not exist' },
  TEMPLATE_VERSION_NOT_FOUND: { status: 404, message: 'The template has no such version' },
  TASK_NOT_FOUND: { status: 404, message: 'The task does not exist' },
  AGENT_NOT_FOUND: { status: 404, message: 'The agent does not exist' },
  SESSION_NOT_FOUND: { status: 404, message: 'The session does not exist' },
  TOPIC_NOT_FOUND: { status: 404, message: 'The topic does not exist' },
  CONFIG_KEY_NOT_FOUND: { status: 404, message: 'The config key does not exist' },
  CONFIG_VERSION_NOT_FOUND: { status: 404, message: 'The config key has no such version' },
  CONFIG_SCHEMA_NOT_FOUND: { status: 404, message: 'No schema is attached to this prefix' },
  LEASE_NOT_FOUND: { status: 404, message: 'The lease does not exist or has expired' },
  SERVICE_NOT_FOUND: { status: 404, message: 'No instance of the service is registered' },
  INSTANCE_NOT_FOUND: { status: 404, message: 'The service instance does not exist' },
  MCP_VIEW_NOT_FOUND: { status: 404, message: 'The MCP view does not exist' },
  TENANT_ALREADY_EXISTS: { status: 409, message: 'A tenant with this id already exists' },
  TEMPLATE_ALREADY_EXISTS: { status: 409, message: 'A template with this name already exists' },
  TASK_ALREADY_FINISHED: { status: 409, message: 'The task has already ended' },
  TASK_NOT_RETRYABLE: { status: 409, message: 'The task cannot be retried in its state' },
  TASK_STATE_CHANGED: { status: 409, message: 'The task changed state meanwhile' },
  TASK_NOT_ASSIGNED: {
    status: 409,
    message: 'The task is not assigned to this agent (any more)',
  },
  TASK_ALREADY_ACCEPTED: {
    status: 409,
    message: 'The agent accepted the task; it can fail it but not reject it',
  },
  AGENT_CONNECTED: { status: 409, message: 'The agent is connected or holds tasks' },
  SESSION_BUSY: { status: 409, message: 'Another task of the session is unfinished' },
  AGENT_NOT_CONNECTED: { status: 409, message: 'The agent is not connected' },
  AGENT_NOT_REGISTERED: {
    status: 409,
    message: 'The connection must register before anything else',
  },
  AGENT_ALREADY_REGISTERED: { status: 409, message: 'The connection has already registered' },
  ALREADY_SUBSCRIBED: {
    status: 409,
    message: 'The connection is already subscribed to this topic or pattern',
  },
  NOT_SUBSCRIBED: { status: 409, message: 'The connection is not subscribed to this topic' },
  TENANT_LIMIT_REACHED: {
    status: 409,
    message: 'The tenant holds as many of these as a setting allows',
  },
  SUBSCRIPTION_LIMIT_REACHED: {
    status: 409,
    message: 'The connection has as many subscriptions as it may',
  },
  WRITE_CONFLICT: {
    status: 409,
    message: 'The resource kept changing while the write was retried',
  },
  LAST_ADMIN_KEY: {
    status: 409,
    message: 'The last active admin key of a tenant cannot be revoked',
  },
  REQUEST_TIMEOUT: { status: 408, message: 'The request was not received in time' },
  PRECONDITION_FAILED: {
    status: 412,
    message: 'The resource changed since the version in If-Match',
  },
  REVISION_COMPACTED: { status: 410, message: 'The revision is no longer retained' },
  UPGRADE_REQUIRED: { status: 426, message: 'This route only speaks WebSocket' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  VALUE_TOO_LARGE: {
    status: 413,
    message: 'A value is larger than the server stores (a task input, result or event, a message)',
  },
  URI_TOO_LONG: { status: 414, message: 'A path parameter is too long' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The request content type is not supported' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  TOO_MANY_CONNECTIONS: {
    status: 429,
    message: 'Too many unauthenticated connections from this address',
  },
  HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large' },
  INTERNAL_ERROR: { status: 500, message: 'An internal error occurred' },
  STORAGE_UNAVAILABLE: { status: 503, message: 'The storage backend is unavailable' },
  NO_HEALTHY_INSTANCE: {
    status: 503,
    message: 'No instance of the service passes its health check',
  },
  SERVICE_OVERLOADED: { status: 503, message: 'The server is overloaded' },
  SHUTTING_DOWN: { status: 503, message: 'The server is shutting down' },
  AUTH_PROVIDER_UNAVAILABLE: {
    status: 503,
    message: 'The token signing keys cannot be fetched',
  },
} as const satisfies Record<string, { status: number; message: string }>;

/** A catalogued error code. */
export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** True when `code` is in the catalogue this package was built with. */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CATALOGUE, code);
}

/**
 * Close codes the server sends on its WebSocket protocols, beyond the standard 1000, 1001
 * and 1009. The 4xxx ones mirror HTTP statuses. Stable API, listed in docs/errors.md.
 */
export const CLOSE_CODES = {
  GOING_AWAY: { code: 1001, reason: 'The server is shutting down; reconnect' },
  MESSAGE_TOO_BIG: { code: 1009, reason: 'A frame was larger than the server accepts' },
  PROTOCOL_VIOLATION: {
    code: 4400,
    reason: 'Too many invalid frames, or a frame that leaves no way to go on',
  },
  UNAUTHENTICATED: { code: 4401, reason: 'The credential is no longer valid' },
  TIMEOUT: {
    code: 4408,
    reason: 'An expected frame (register, heartbeat, auth) did not arrive in time',
  },
  REPLACED: { code: 4409, reason: 'Another connection registered with the same agent id' },
  SLOW_CONSUMER: {
    code: 4507,
    reason: 'The client read too slowly: its send queue passed the limit',
  },
} as const satisfies Record<string, { code: number; reason: string }>;

/** The name of a close code, such as `SLOW_CONSUMER`. */
export type CloseCodeName = keyof typeof CLOSE_CODES;
