import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the MCP hub, in order. Names are global; never rename one. */
export const mcpMigrations: Record<string, Migration> = {
  '0020_mcp': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('mcp_servers')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('credentials', 'text', (c) => c.notNull())
        .addColumn('enabled', 'integer', (c) => c.notNull())
        .addColumn('catalog_entry', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('synced', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('mcp_servers_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
      await db.schema
        .createTable('mcp_catalog_entries')
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('mcp_catalog_entries_pk', ['tenant_id', 'id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('mcp_catalog_entries').execute();
      await db.schema.dropTable('mcp_servers').execute();
    },
  },
};
