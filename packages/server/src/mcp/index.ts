// The MCP hub's public surface: other modules and the server import it from here only
// (npm run lint checks it). The upstream connection layer, then the module on top of it.

export {
  detectSandbox,
  type SandboxAvailability,
  type SandboxRequest,
  sandboxCommand,
} from '../platform/sandbox.ts';
export { type BackoffPolicy, backoffDelayMs } from './backoff.ts';
export { UpstreamError, type UpstreamErrorKind } from './errors.ts';
export * from './hub.ts';
export * from './migrations.ts';
export * from './module.ts';
export { RingLog } from './ring-log.ts';
export * from './routes.ts';
export * from './server-records.ts';
export * from './settings.ts';
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
