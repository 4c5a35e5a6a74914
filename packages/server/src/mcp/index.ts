// The MCP upstream connection layer (issue 20): no module declaration yet; the mcp module
// builds its routes and tables on this library.
export { type BackoffPolicy, backoffDelayMs } from './backoff.ts';
export { UpstreamError, type UpstreamErrorKind } from './errors.ts';
export { RingLog } from './ring-log.ts';
export {
  detectSandbox,
  type SandboxAvailability,
  type SandboxRequest,
  sandboxCommand,
} from './sandbox.ts';
export {
  type ProcessExit,
  type StdioProcessOptions,
  type StdioProcessSpec,
  StdioProcessTransport,
} from './stdio-supervisor.ts';
export {
  type McpTransportConfig,
  McpUpstream,
  type McpUpstreamEvents,
  type McpUpstreamOptions,
  type UpstreamListKind,
  type UpstreamState,
  type UpstreamStatus,
} from './upstream.ts';
