/** How a task submitted while another of the same session is unfinished is handled. */
export type MultitaskStrategy = 'reject' | 'enqueue' | 'interrupt';

/** Tables owned by the sessions module. */
export interface SessionsTable {
  id: string;
  tenant_id: string;
  name: string | null;
  /** JSON object. */
  labels: string;
  /** JSON object: free data for the application (a user id, a title). */
  metadata: string;
  multitask_strategy: MultitaskStrategy;
  created_by: string;
  created_at: string;
  updated_at: string;
}

export interface SessionLabelsTable {
  session_id: string;
  key: string;
  value: string;
}

export interface SessionsTables {
  sessions: SessionsTable;
  session_labels: SessionLabelsTable;
}

declare module '../store/database.ts' {
  interface Database extends SessionsTables {}
}
