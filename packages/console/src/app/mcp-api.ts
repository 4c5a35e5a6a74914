import type {
  CatalogEntry,
  CreateMcpServer,
  InstallCatalogEntry,
  McpServer,
  McpServerLog,
  McpServerState,
} from '@orchestra/protocol';
import type { Orchestra, Page } from '@orchestra/sdk';

// The MCP hub's REST API (`/v1/mcp/servers`, `/v1/mcp/catalog`) as the console calls it,
// through the SDK's public `request`, like tools-api.ts.

export type { CatalogEntry, CreateMcpServer, McpServer, McpServerLog, McpServerState };

/** A resource a server lists (the wire's `McpResource`). */
export interface McpResource {
  uri: string;
  name: string;
  title?: string;
  description?: string;
  mimeType?: string;
}

/** A prompt a server lists (the wire's `McpPrompt`). */
export interface McpPrompt {
  name: string;
  title?: string;
  description?: string;
  arguments?: { name: string; description?: string; required?: boolean }[];
}

/** How often the MCP pages read the servers' status again: the hub publishes no topic for it. */
export const MCP_POLL_MS = 3_000;

const server = (ref: string) => `/v1/mcp/servers/${encodeURIComponent(ref)}`;

export function mcpApi(client: Orchestra) {
  return {
    list: (query: { limit?: number; cursor?: string } = {}) =>
      client.request<Page<McpServer>>('GET', '/v1/mcp/servers', { query: { ...query } }),
    get: (ref: string) => client.request<McpServer>('GET', server(ref)),
    create: (input: CreateMcpServer) =>
      client.request<McpServer>('POST', '/v1/mcp/servers', { body: input }),
    delete: (ref: string) => client.request<void>('DELETE', server(ref)),
    /** Enables (`true`) or disables it; answers the server as it is now. */
    setEnabled: (ref: string, enabled: boolean) =>
      client.request<McpServer>('POST', `${server(ref)}/${enabled ? 'enable' : 'disable'}`),
    restart: (ref: string) => client.request<McpServer>('POST', `${server(ref)}/restart`),
    logs: (ref: string) => client.request<McpServerLog>('GET', `${server(ref)}/logs`),
    resources: (ref: string) =>
      client.request<{ items: McpResource[] }>('GET', `${server(ref)}/resources`),
    prompts: (ref: string) =>
      client.request<{ items: McpPrompt[] }>('GET', `${server(ref)}/prompts`),
    catalog: () => client.request<{ items: CatalogEntry[] }>('GET', '/v1/mcp/catalog'),
    install: (entry: string, input: InstallCatalogEntry) =>
      client.request<McpServer>('POST', `/v1/mcp/catalog/${encodeURIComponent(entry)}/install`, {
        body: input,
      }),
  };
}
