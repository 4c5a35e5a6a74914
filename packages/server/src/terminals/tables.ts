/** Tables owned by the terminals module. */
export interface TerminalsTable {
  id: string;
  tenant_id: string;
  instance_id: string;
  /** The node whose process runs it (terminals die with their node). */
  node_id: string;
  /** JSON array: program and arguments. */
  command: string;
  cwd: string;
  cols: number;
  rows: number;
  title: string | null;
  state: string;
  state_reason: string | null;
  exit_code: number | null;
  signal: string | null;
  created_by: string;
  created_at: string;
  exited_at: string | null;
}

export interface TerminalsTables {
  terminals: TerminalsTable;
}

declare module '../store/database.ts' {
  interface Database extends TerminalsTables {}
}
