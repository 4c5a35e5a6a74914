import { type Kysely, PostgresAdapter, sql } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the embedded KV adapter. Names are global; never rename one. */
export const kvMigrations: Record<string, Migration> = {
  '0010_kv': {
    async up(db: Kysely<unknown>) {
      // Keys sort byte by byte, as in etcd, whatever the database's default collation.
      const postgres = db.getExecutor().adapter instanceof PostgresAdapter;
      await db.schema
        .createTable('kv_entries')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('key', 'text', (c) =>
          postgres ? c.notNull().modifyEnd(sql`collate "C"`) : c.notNull(),
        )
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('create_revision', 'integer', (c) => c.notNull())
        .addColumn('mod_revision', 'integer', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('lease_id', 'text')
        .addPrimaryKeyConstraint('kv_entries_pk', ['tenant_id', 'key'])
        .execute();
      await db.schema
        .createIndex('kv_entries_lease_idx')
        .on('kv_entries')
        .columns(['tenant_id', 'lease_id'])
        .where(sql.ref('lease_id'), 'is not', null)
        .execute();
      await db.schema
        .createTable('kv_leases')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('ttl_ms', 'integer', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('granted_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('kv_leases_pk', ['tenant_id', 'id'])
        .execute();
      await db.schema
        .createIndex('kv_leases_expires_idx')
        .on('kv_leases')
        .column('expires_at')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('kv_leases').execute();
      await db.schema.dropTable('kv_entries').execute();
    },
  },
  '0011_kv_relay': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('kv_relay_cursors')
        .addColumn('tenant_id', 'text', (c) =>
          c.primaryKey().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('revision', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('kv_relay_cursors').execute();
    },
  },
};
