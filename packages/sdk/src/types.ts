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
