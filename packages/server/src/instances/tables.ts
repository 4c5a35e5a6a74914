/** Tables owned by the instances module. */
export interface WorkspaceTemplatesTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant. */
  name: string;
  /** 1 on create; each replacement adds one. */
  version: number;
  /** JSON: the template's spec with its defaults filled in (`WorkspaceTemplateSpec`). */
  spec: string;
  created_at: string;
  updated_at: string;
}

export interface InstancesTable {
  id: string;
  tenant_id: string;
  name: string;
  template_id: string;
  template_name: string;
  template_version: number;
  driver: string;
  /** JSON: the template's spec as it was when the instance was created. */
  spec: string;
  state: string;
  state_reason: string;
  /** JSON object of labels; `instance_labels` indexes them. */
  labels: string;
  /** The node that runs it. */
  node_id: string;
  /**
   * Set when its node was lost and its template says `restart_elsewhere`: the lost node.
   * `node_id` is then the node that is to start it from its base (its sweep does).
   */
  moved_from?: string | null;
  exit_code: number | null;
  /** The process driver's sandbox process while one runs (reconciled at a restart). */
  pid: number | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  stopped_at: string | null;
  /** Stopped after this long without activity while running; null: never (bigint: a string from PostgreSQL). */
  idle_timeout_ms: number | string | null;
  /** The last activity recorded (written by the sweep, at most every few seconds). */
  last_active_at: string | null;
  /** Deleted at this time (created_at + TTL, or as changed); null: never. */
  expires_at: string | null;
  /** JSON array of `{name, port}`: the numbers its template's ports got (`instance_ports`). */
  ports: string | null;
}

/** A port number taken by an instance: the primary key keeps it unique in the cluster. */
export interface InstancePortsTable {
  port: number;
  instance_id: string;
  tenant_id: string;
  name: string;
}

/** A share link of an instance's port; only the token's SHA-256 is kept. */
export interface PortSharesTable {
  id: string;
  tenant_id: string;
  instance_id: string;
  port: number;
  token_hash: string;
  created_by: string;
  created_at: string;
  expires_at: string;
}

export interface InstanceLabelsTable {
  instance_id: string;
  tenant_id: string;
  key: string;
  value: string;
}

/** An uploaded base: its bytes are in `workspace_upload_chunks`, once `complete`. */
export interface WorkspaceUploadsTable {
  id: string;
  tenant_id: string;
  name: string;
  /** `tar` or `git_bundle`; empty until complete. */
  format: string;
  size: number | string;
  sha256: string;
  /** 0 while its bytes arrive; an upload left incomplete (its node died) is swept. */
  complete: number;
  created_by: string;
  created_at: string;
}

/** A piece of an upload, in order (base64: one text type on every store). */
export interface WorkspaceUploadChunksTable {
  upload_id: string;
  seq: number;
  data: string;
}

export interface InstancesTables {
  workspace_templates: WorkspaceTemplatesTable;
  workspace_uploads: WorkspaceUploadsTable;
  workspace_upload_chunks: WorkspaceUploadChunksTable;
  instances: InstancesTable;
  instance_labels: InstanceLabelsTable;
  instance_ports: InstancePortsTable;
  port_shares: PortSharesTable;
}

declare module '../store/database.ts' {
  interface Database extends InstancesTables {}
}
