import type { TaskState } from '@orchestra/protocol';

/** Tables owned by the tasks module. JSON columns hold text in both stores. */
export interface TasksTable {
  id: string;
  tenant_id: string;
  /** Null for a task routed by capabilities alone. */
  template_id: string | null;
  template_name: string | null;
  template_version: number | null;
  /** JSON array: what an agent must offer to run it. */
  capabilities: string;
  /** JSON. */
  input: string;
  state: TaskState;
  priority: number;
  timeout_ms: number;
  max_attempts: number;
  /** Attempts started so far. */
  attempt: number;
  strategy: string;
  concurrency_key: string | null;
  /** The session (thread) the task belongs to, if any. */
  session_id: string | null;
  /** The instance the task works in, if any. */
  instance_id: string | null;
  idempotency_key: string | null;
  /** JSON object. */
  labels: string;
  agent_id: string | null;
  /** JSON, once succeeded. */
  result: string | null;
  /** JSON `{code, message, retryable}`, once failed. */
  error: string | null;
  cancel_requested_at: string | null;
  /** A cancelled task's agent has until then to confirm; then it is cancelled anyway. */
  cancel_deadline_at: string | null;
  /** Not dispatched before then (retry backoff); null: at once. */
  not_before: string | null;
  assigned_at: string | null;
  started_at: string | null;
  /** The current attempt times out then. */
  deadline_at: string | null;
  /** The last `task.event` sequence number stored for the current attempt. */
  event_seq: number;
  /** How many tasks with this task's concurrency key may run at once; null: the setting. */
  concurrency_limit: number | null;
  created_by: string;
  created_at: string;
  /**
   * When it was last queued by a submit or by a retry asked for by hand (not the automatic
   * retries of failed attempts); null for tasks submitted before migration 0014, whose
   * `created_at` stands in. `GET /v1/stats` measures latency and queue wait from it.
   */
  queued_at: string | null;
  /** JSON: the approvals a task in `awaiting_approval` waits for (`Task.waiting`); else null. */
  waiting: string | null;
  updated_at: string;
  finished_at: string | null;
}

export interface TaskLabelsTable {
  task_id: string;
  key: string;
  value: string;
}

export interface TasksTables {
  tasks: TasksTable;
  task_labels: TaskLabelsTable;
}

declare module '../store/database.ts' {
  interface Database extends TasksTables {}
}
