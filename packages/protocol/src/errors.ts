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
  SECRET_NOT_FOUND: { status: 404, message: 'The secret does not exist' },
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
  SECRET_UNREADABLE: {
    status: 500,
    message: 'The secret was sealed with a key this node does not have',
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
  // Tools: the registry, policies and calls (the last six are also how a call that ran
  // but did not complete is recorded: its `error.code`).
  TOOL_NOT_FOUND: { status: 404, message: 'The tool does not exist' },
  TOOL_VERSION_NOT_FOUND: { status: 404, message: 'The tool has no such version' },
  TOOL_CALL_NOT_FOUND: { status: 404, message: 'The tool call does not exist' },
  TOOL_POLICY_NOT_FOUND: { status: 404, message: 'The tool policy does not exist' },
  TOOL_APPROVAL_NOT_FOUND: { status: 404, message: 'The tool approval does not exist' },
  TOOL_APPROVAL_NOT_PENDING: { status: 409, message: 'The approval was decided or has expired' },
  TOOL_APPROVAL_ARGUMENTS_MISMATCH: {
    status: 409,
    message: 'The arguments reviewed are not the call’s',
  },
  TOOL_CALL_REJECTED: { status: 403, message: 'An operator rejected the call' },
  TOOL_APPROVAL_EXPIRED: { status: 410, message: 'Nobody approved the call before its deadline' },
  TOOL_ALREADY_EXISTS: { status: 409, message: 'A tool with this name already exists' },
  TOOL_POLICY_ALREADY_EXISTS: {
    status: 409,
    message: 'A tool policy with this name already exists',
  },
  TOOL_NOT_EDITABLE: { status: 409, message: 'The tool comes from an MCP server' },
  TOOL_NOT_HELD: { status: 409, message: 'The tool has no definition waiting for approval' },
  TOOL_DEFINITION_CHANGED: {
    status: 409,
    message: 'The definition waiting for approval is not the one reviewed',
  },
  TOOL_NOT_AVAILABLE: { status: 409, message: 'The tool is not served now' },
  TOOL_INVALID_ARGUMENTS: {
    status: 400,
    message: 'The arguments do not match the tool’s input schema',
  },
  TOOL_CALL_DENIED: { status: 403, message: 'A tool policy does not allow this call' },
  TOOL_RATE_LIMITED: { status: 429, message: 'A tool policy’s rate limit was reached' },
  TOOL_CONCURRENCY_LIMITED: {
    status: 429,
    message: 'A tool policy’s concurrency limit was reached',
  },
  TOOL_TIMEOUT: { status: 504, message: 'The tool did not answer in time' },
  TOOL_UPSTREAM_UNAVAILABLE: { status: 502, message: 'The tool’s upstream could not be reached' },
  TOOL_UPSTREAM_ERROR: { status: 502, message: 'The tool’s upstream answered garbage' },
  TOOL_RESULT_TOO_LARGE: { status: 502, message: 'The tool’s answer is too large' },
  TOOL_CIRCUIT_OPEN: { status: 503, message: 'The tool’s upstream is failing; calls fail fast' },
  TOOL_UPSTREAM_BUSY: { status: 503, message: 'The tool’s upstream has too many calls in flight' },
  MCP_SERVER_NOT_FOUND: { status: 404, message: 'The MCP server does not exist' },
  MCP_CATALOG_ENTRY_NOT_FOUND: { status: 404, message: 'The catalog entry does not exist' },
  MCP_SERVER_ALREADY_EXISTS: {
    status: 409,
    message: 'An MCP server with this name already exists',
  },
  MCP_CATALOG_ENTRY_ALREADY_EXISTS: {
    status: 409,
    message: 'A catalog entry with this id already exists',
  },
  MCP_VIEW_ALREADY_EXISTS: { status: 409, message: 'An MCP view with this name already exists' },
  MCP_SERVER_NOT_RUNNING: { status: 409, message: 'The MCP server is not running on this node' },
  AGENT_RUN_FAILED: { status: 502, message: 'The hosted agent’s run did not succeed' },
  MODEL_PROVIDER_NOT_FOUND: { status: 404, message: 'The model provider does not exist' },
  MODEL_PROVIDER_ALREADY_EXISTS: {
    status: 409,
    message: 'A model provider with this name already exists',
  },
  MODEL_PROVIDER_IN_USE: {
    status: 409,
    message: 'Other providers fall back to this model provider',
  },
  WORKSPACE_TEMPLATE_NOT_FOUND: { status: 404, message: 'The workspace template does not exist' },
  WORKSPACE_TEMPLATE_ALREADY_EXISTS: {
    status: 409,
    message: 'A workspace template with this name already exists',
  },
  WORKSPACE_TEMPLATE_IN_USE: {
    status: 409,
    message: 'Instances were created from this workspace template',
  },
  WORKSPACE_UPLOAD_NOT_FOUND: { status: 404, message: 'The workspace upload does not exist' },
  WORKSPACE_UPLOAD_IN_USE: {
    status: 409,
    message: 'A workspace template or an instance starts from this upload',
  },
  WORKSPACE_INSTANCE_NOT_FOUND: { status: 404, message: 'The instance does not exist' },
  WORKSPACE_INSTANCE_STATE: {
    status: 409,
    message: 'The instance is not in a state that allows this',
  },
  WORKSPACE_FILE_NOT_FOUND: {
    status: 404,
    message: 'No file or directory is at this path in the workspace',
  },
  WORKSPACE_FILE_EXISTS: {
    status: 409,
    message: 'A file or directory is at this path already',
  },
  WORKSPACE_DIRECTORY_NOT_EMPTY: {
    status: 409,
    message: 'The directory is not empty',
  },
  RANGE_NOT_SATISFIABLE: {
    status: 416,
    message: 'The requested byte range lies outside the file',
  },
  CHECKPOINT_NOT_FOUND: { status: 404, message: 'The checkpoint does not exist' },
  PORTS_EXHAUSTED: { status: 503, message: 'No port is free in the instances’ port range' },
  PORT_NOT_LISTENING: { status: 502, message: 'Nothing in the instance listens on the port' },
  PORT_SHARE_NOT_FOUND: { status: 404, message: 'The share link does not exist or has expired' },
  TERMINAL_NOT_FOUND: { status: 404, message: 'The terminal does not exist' },
  TERMINAL_EXITED: { status: 409, message: 'The terminal has exited' },
  NODE_UNREACHABLE: {
    status: 502,
    message: 'The node that runs the instance did not answer',
  },
  SEARCH_UNAVAILABLE: {
    status: 503,
    message: 'Search needs ripgrep (rg), which this node lacks',
  },
  SANDBOX_UNAVAILABLE: {
    status: 503,
    message: 'Sandboxed processes cannot run on this node',
  },
  AGENT_TOOL_CALLS_LIMITED: {
    status: 429,
    message: 'The agent connection has as many tool calls in flight as it may',
  },
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
  NOT_FOUND: {
    code: 4404,
    reason: 'What the connection is for does not exist (a terminal closed or never opened)',
  },
  LIMIT_REACHED: {
    code: 4429,
    reason: 'A limit was reached (the error frame before names it): too many viewers',
  },
  ENDED: { code: 1000, reason: 'Nothing more will come: the terminal exited or was closed' },
  SLOW_CONSUMER: {
    code: 4507,
    reason: 'The client read too slowly: its send queue passed the limit',
  },
} as const satisfies Record<string, { code: number; reason: string }>;

/** The name of a close code, such as `SLOW_CONSUMER`. */
export type CloseCodeName = keyof typeof CLOSE_CODES;
