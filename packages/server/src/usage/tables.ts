/** Tables owned by the usage module. */
export interface ModelUsageTable {
  /** `<task id>:<turn>`: one row per completed model call of a hosted run, whatever the retries. */
  id: string;
  tenant_id: string;
  task_id: string;
  session_id: string | null;
  template: string | null;
  /** The credential that submitted the task. */
  api_key: string;
  provider: string;
  model: string;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  /** Billionths of a US dollar (exact sums of prices per million tokens). */
  cost_nano_usd: number;
  tool_calls: number;
  duration_ms: number;
  created_at: string;
}

export interface UsageTables {
  model_usage: ModelUsageTable;
}

declare module '../store/database.ts' {
  interface Database extends UsageTables {}
}
