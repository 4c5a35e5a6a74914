/**
 * The MCP gateway (issue 20): Orchestra's MCP server endpoint, `/mcp` and `/mcp/{view}`,
 * as a Fastify plugin driven by a backend (the tools module implements it). See docs/mcp.md.
 */
export {
  type GatewayResourceTemplate,
  type GatewayTool,
  type GatewayView,
  type McpGatewayBackend,
  type ToolCallOptions,
  type ToolExposure,
  UnknownToolError,
} from './backend.ts';
export {
  MCP_GATEWAY_DEFAULTS,
  type McpGatewayOptions,
  mcpGatewayRoutes,
} from './gateway-routes.ts';
export { CALL_TOOL, SEARCH_TOOL } from './mcp-server.ts';
export { type SearchableTool, searchTools, tokenize } from './search.ts';

/** The error codes the gateway raises; the module that serves it declares them. */
export const MCP_GATEWAY_ERRORS = ['MCP_VIEW_NOT_FOUND'] as const;
export * from './migrations.ts';
export * from './module.ts';
export * from './settings.ts';
export * from './tool-backend.ts';
export * from './view-routes.ts';
export * from './view-service.ts';
