import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the gateway module, in order. Names are global; never rename one. */
export const gatewayMigrations: Record<string, Migration> = {
  '0001_gateway_tenants_and_api_keys': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('tenants')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull().defaultTo('standard'))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('prefix', 'text', (c) => c.notNull())
        .addColumn('secret_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text')
        .addColumn('expires_at', 'text')
        .addColumn('revoked_at', 'text')
        .addColumn('last_used_at', 'text')
        .execute();
      await db.schema
        .createIndex('api_keys_tenant_id_idx')
        .on('api_keys')
        .columns(['tenant_id', 'id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('api_keys').execute();
      await db.schema.dropTable('tenants').execute();
    },
  },
  '0017_gateway_tenant_limits': {
    async up(db: Kysely<unknown>) {
      // JSON object of the limits set for the tenant (TenantLimitOverrides); {} for none.
      await db.schema
        .alterTable('tenants')
        .addColumn('limits', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('tenants').dropColumn('limits').execute();
    },
  },
};
