import type { Generated } from 'kysely';
import type { Role } from '../platform/auth.ts';

/** Tables owned by the gateway module. Timestamps are ISO-8601 UTC strings in both stores. */
export interface TenantsTable {
  id: string;
  name: string;
  /** `system`: the tenant created at first start, whose admins manage all tenants. */
  kind: 'system' | 'standard';
  created_at: string;
  /** JSON object of the limits set for this tenant (TenantLimitOverrides); `{}` for none. */
  limits: Generated<string>;
}

export interface ApiKeysTable {
  id: string;
  tenant_id: string;
  name: string;
  role: Role;
  /** First characters of the secret, safe to display, to tell keys apart. */
  prefix: string;
  /** SHA-256 of the whole secret, hex; the secret itself is never stored. */
  secret_hash: string;
  created_at: string;
  created_by: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface GatewayTables {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
}

declare module '../store/database.ts' {
  interface Database extends GatewayTables {}
}
