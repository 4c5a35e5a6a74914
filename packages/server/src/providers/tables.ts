/** Tables owned by the providers module. */
export interface ModelProvidersTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant; immutable (templates name it). */
  name: string;
  /** `openai` or `anthropic`; also in `spec`, here to filter on. */
  kind: string;
  /** The provider's settings as JSON (`ModelProviderSettings`), without header values. */
  spec: string;
  /** Extra header values, sealed under the node key: they may hold credentials. */
  headers: string;
  enabled: number;
  /** 1 on create; each update adds one. */
  version: number;
  created_at: string;
  updated_at: string;
}

export interface ProvidersTables {
  model_providers: ModelProvidersTable;
}

declare module '../store/database.ts' {
  interface Database extends ProvidersTables {}
}
