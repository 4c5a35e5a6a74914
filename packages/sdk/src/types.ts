export type Role = 'admin' | 'operator' | 'agent' | 'viewer';

/** A page of a list; pass `next_cursor` as `cursor` to get the next one (null: last page). */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface PageOptions {
  /** 1 to 200; the server's default is 50. */
  limit?: number;
  cursor?: string;
}

export interface Tenant {
  id: string;
  name: string;
  kind: 'system' | 'standard';
  created_at: string;
}

export interface ApiKey {
  id: string;
  tenant_id: string;
  name: string;
  role: Role;
  prefix: string;
  status: 'active' | 'revoked' | 'expired';
  created_at: string;
  created_by: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

/** A newly created key; `secret` is shown only once. */
export interface ApiKeyWithSecret extends ApiKey {
  secret: string;
}

export interface CreateApiKeyInput {
  name: string;
  role: Role;
  /** ISO-8601 date-time in the future, or a Date. Omit for a key that never expires. */
  expires_at?: string | Date;
}

export interface ListApiKeysOptions extends PageOptions {
  role?: Role;
  /** Include revoked keys (default false). */
  include_revoked?: boolean;
}

export interface CreateTenantInput {
  /** Lowercase letters, digits and dashes; 2 to 63 characters. */
  id: string;
  name?: string;
}

export interface CreatedTenant {
  tenant: Tenant;
  admin_key: ApiKeyWithSecret;
}

export interface WhoAmI {
  tenant: { id: string; name: string; kind: string };
  role: Role;
  credential:
    | { type: 'api_key'; id: string; name: string; prefix: string; expires_at: string | null }
    | { type: 'jwt'; subject: string; issuer: string | null; expires_at: string | null };
}

export interface Readiness {
  status: 'ready';
  version: string;
  instance_id: string;
  store: string;
  checks: { store: { status: 'ok'; latency_ms: number } };
}

/** How tasks of a template choose an agent. */
export type TemplateStrategy =
  | 'round_robin'
  | 'weighted'
  | 'least_connections'
  | 'latency'
  | 'resource'
  | 'consistent_hash';

/**
 * What a version of a template defines. An update replaces all of it: a field left out
 * goes back to its default, it does not keep its previous value.
 */
export interface TemplateDefinition {
  /** Up to 2000 characters; default empty. */
  description?: string;
  /** Up to 50 `key: value` pairs to find templates by; keys are lowercase `[a-z0-9._/-]`. */
  labels?: Record<string, string>;
  /** Capabilities an agent must have to run tasks of this template; no duplicates. */
  capabilities?: string[];
  /** JSON Schema (draft-07, or 2020-12 by `$schema`) that task input must match. */
  input_schema?: Record<string, unknown>;
  /** JSON Schema that task results should match. */
  output_schema?: Record<string, unknown>;
  /** JSON Schema that `config` must match. */
  config_schema?: Record<string, unknown>;
  /** Free configuration handed to agents. */
  config?: Record<string, unknown>;
  /** 1000 ms to 7 days; default 300000 (5 minutes). */
  default_timeout_ms?: number;
  /** 1 to 100; default 3. */
  default_max_attempts?: number;
  /** -1000 to 1000; default 0. */
  default_priority?: number;
  /** Default `least_connections`. */
  strategy?: TemplateStrategy;
}

export interface CreateTemplateInput extends TemplateDefinition {
  /**
   * Lowercase letters, digits, ".", "_" and "-"; 1 to 100 characters; unique in the tenant;
   * cannot start with "tpl_". It never changes.
   */
  name: string;
}

/** A template at one version, with every default filled in. */
export interface Template {
  /** `tpl_…`; usable wherever a name is. */
  id: string;
  tenant_id: string;
  name: string;
  /** The version the definition fields come from. */
  version: number;
  /** The version `latest` points to: the newest, unless rolled back. */
  latest_version: number;
  /** The newest version ever created; the next update creates this + 1. */
  highest_version: number;
  description: string;
  labels: Record<string, string>;
  capabilities: string[];
  input_schema: Record<string, unknown> | null;
  output_schema: Record<string, unknown> | null;
  config_schema: Record<string, unknown> | null;
  config: Record<string, unknown>;
  default_timeout_ms: number;
  default_max_attempts: number;
  default_priority: number;
  strategy: TemplateStrategy;
  created_at: string;
  updated_at: string;
  /** When `version` was created. */
  version_created_at: string;
  /** The credential that created `version`. */
  version_created_by: string;
}

export interface TemplateVersionSummary {
  version: number;
  created_at: string;
  /** The credential that created the version. */
  created_by: string;
  /** Whether `latest` points to this version. */
  latest: boolean;
}

export interface ListTemplatesOptions extends PageOptions {
  /** Only templates whose name starts with this. */
  name_prefix?: string;
  /** Only templates whose latest version carries every one of these labels (up to 20). */
  labels?: Record<string, string>;
}
