/** Tables owned by the MCP hub. */
export interface McpServersTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant; immutable (its tools are named after it). */
  name: string;
  /** The server's settings as JSON (`McpServerSettings`), without env and header values. */
  spec: string;
  /** Env and header values, sealed under the node key: they may hold credentials. */
  credentials: string;
  enabled: number;
  catalog_entry: string | null;
  /** `McpServerStatus` as JSON, written by the node that runs or connects to it. */
  status: string;
  /** 1 once its first tool list was taken (after that, new tools are held for approval). */
  synced: number;
  created_at: string;
  updated_at: string;
}

/** Catalog entries a tenant added (the built-in ones come from the catalog file). */
export interface McpCatalogEntriesTable {
  tenant_id: string;
  id: string;
  /** `CreateCatalogEntry` without the id, as JSON. */
  spec: string;
  created_at: string;
}

export interface McpTables {
  mcp_servers: McpServersTable;
  mcp_catalog_entries: McpCatalogEntriesTable;
}

declare module '../store/database.ts' {
  interface Database extends McpTables {}
}
