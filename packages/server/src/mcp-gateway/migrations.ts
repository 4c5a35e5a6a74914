import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the MCP gateway, in order. Names are global; never rename one. */
export const mcpGatewayMigrations: Record<string, Migration> = {
  '0021_mcp_views': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('mcp_views')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('mcp_views_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('mcp_views').execute();
    },
  },
};
