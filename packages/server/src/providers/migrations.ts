import type { Kysely } from 'kysely';
import type { Migration } from 'kysely/migration';

/** Migrations of the providers module, in order. Names are global; never rename one. */
export const providersMigrations: Record<string, Migration> = {
  '0022_model_providers': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('model_providers')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) =>
          c.notNull().references('tenants.id').onDelete('cascade'),
        )
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('spec', 'text', (c) => c.notNull())
        .addColumn('headers', 'text', (c) => c.notNull())
        .addColumn('enabled', 'integer', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('model_providers_tenant_name_unique', ['tenant_id', 'name'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('model_providers').execute();
    },
  },
};
