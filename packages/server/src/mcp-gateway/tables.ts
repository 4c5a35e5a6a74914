/** Tables owned by the MCP gateway. */
export interface McpViewsTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant: served at `/mcp/{name}`. */
  name: string;
  /** The view's fields as JSON (`McpViewSpec`). */
  spec: string;
  created_at: string;
  updated_at: string;
}

export interface McpGatewayTables {
  mcp_views: McpViewsTable;
}

declare module '../store/database.ts' {
  interface Database extends McpGatewayTables {}
}
