/** Tables of the embedded KV adapter (kv/embedded.ts). Its change feed is the event log's `kv:<tenant>` stream. */
export interface KvEntriesTable {
  tenant_id: string;
  /** Compared byte by byte on both stores (collation "C" on PostgreSQL), as etcd does. */
  key: string;
  value: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease_id: string | null;
}

export interface KvLeasesTable {
  tenant_id: string;
  id: string;
  ttl_ms: number;
  /** ISO time; past it the lease and its keys are deleted by whichever node sweeps first. */
  expires_at: string;
  granted_at: string;
}

/** How far the topic relay (kv/topic-relay.ts) has copied a tenant's KV changes into topics. */
export interface KvRelayCursorsTable {
  tenant_id: string;
  /** The revision of the last change relayed; stored as a number by both stores. */
  revision: number | string;
  updated_at: string;
}

export interface KvTables {
  kv_entries: KvEntriesTable;
  kv_leases: KvLeasesTable;
  kv_relay_cursors: KvRelayCursorsTable;
}

declare module '../store/database.ts' {
  interface Database extends KvTables {}
}
