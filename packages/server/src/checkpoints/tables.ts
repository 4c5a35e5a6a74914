/** Tables owned by the checkpoints module. */
export interface CheckpointsTable {
  id: string;
  tenant_id: string;
  instance_id: string;
  task_id: string | null;
  message: string;
  /** The shadow repository's commit and its tree. */
  commit_sha: string;
  tree_sha: string;
  files: number;
  /** JSON array of paths the size rule left out (at most 100). */
  skipped: string;
  created_by: string;
  created_at: string;
  restored_at: string | null;
}

export interface CheckpointsTables {
  checkpoints: CheckpointsTable;
}

declare module '../store/database.ts' {
  interface Database extends CheckpointsTables {}
}
