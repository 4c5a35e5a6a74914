/** Tables owned by the templates module. */
export interface TemplatesTable {
  id: string;
  tenant_id: string;
  /** Unique per tenant; immutable. */
  name: string;
  /** The version `latest` points to: the newest, unless rolled back. */
  latest_version: number;
  /** The highest version ever created; the next update creates this + 1. */
  highest_version: number;
  created_at: string;
  updated_at: string;
}

export interface TemplateVersionsTable {
  template_id: string;
  version: number;
  /** The template's definition at this version, as JSON (see `TemplateSpec`). */
  spec: string;
  created_at: string;
  created_by: string;
}

/** The labels of the version `latest` points to, one row each, for filtering lists. */
export interface TemplateLabelsTable {
  template_id: string;
  key: string;
  value: string;
}

export interface TemplatesTables {
  templates: TemplatesTable;
  template_versions: TemplateVersionsTable;
  template_labels: TemplateLabelsTable;
}

declare module '../store/database.ts' {
  interface Database extends TemplatesTables {}
}
